"""Screening of a search's finalists by a short standalone training.

Inherited-weight scores order subnets of one input resolution reasonably, but pairs across
resolutions often the wrong way round (a 96 px subnet above a 128 px one that trains far better).
So, like SM-NAS's fast evaluation of structures, the best subnet of each resolution is trained
briefly from scratch, and the best of those short trainings is the one retrained in full. The
short trainings cost a few percent of the search; the random-search control gets the same, so
the two stay compared like for like.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from supernet.space import Arch, SearchSpace
from supernet.train_config import TrainConfig

from .records import SubnetRecord
from .retrain import retrain

SEED_OFFSET = 7919  # the short trainings' seeds differ from the full retraining's: its mAP is not the one that picked it

logger = logging.getLogger(__name__)


def by_score(records: list[SubnetRecord], key: str = "map") -> list[SubnetRecord]:
    """The distinct records, best (by `key`) first; ties go to the faster."""
    return sorted({r.hash: r for r in records}.values(), key=lambda r: (-r.score(key), r.latency_ms, r.hash))


def resolution_finalists(records: list[SubnetRecord], count: int, key: str = "map") -> list[SubnetRecord]:
    """Up to `count` distinct records of a search: the best (by `key`) of each input resolution,
    best first, then the next best overall."""
    distinct = by_score(records, key)
    picked: dict[str, SubnetRecord] = {}
    for r in distinct:
        if all(p.arch.resolution != r.arch.resolution for p in picked.values()):
            picked[r.hash] = r
    for r in distinct:
        if len(picked) >= count:
            break
        picked.setdefault(r.hash, r)
    return by_score(list(picked.values()), key)[:count]


def screen(archs: list[Arch], space: SearchSpace, config: TrainConfig, out: Path) -> list[dict]:
    """Train each arch with `config` (a short schedule; seed offset by SEED_OFFSET) in OUT/<hash>
    and return their metrics, best mAP first; not timed (the search's prediction stands for their
    latency). Resumable: finished trainings are read back."""
    if not archs:
        raise ValueError("screen: no archs to screen")
    results = []
    for arch in archs:
        cfg = replace(config, seed=config.seed + SEED_OFFSET, out=str(Path(out) / arch.hash()))
        logger.info(f"== screening {arch.hash()} ({arch.resolution} px)")
        results.append({**retrain(arch, space, cfg, resume=True, timed=False), "arch": arch.to_dict()})
    return sorted(results, key=lambda r: (-r["map"], r["hash"]))
