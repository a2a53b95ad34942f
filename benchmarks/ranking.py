"""Can the supernet's ranking be trusted? Inherited-weight mAP against standalone-trained mAP.

    python benchmarks/ranking.py                       # the demo's supernet and table (runs/demo)
    python benchmarks/ranking.py --supernet users=runs/a/last.pt paths=runs/b/last.pt --lut luts/cpu_tiny.json -k 30

Picks K archs spread evenly over the table's latency range (one per latency bin, preferring the
neck and head types picked least so far, so every type is covered), scores each with inherited
weights after BN recalibration (what the search sees) and after training it from scratch with
one short schedule (the "truth": what a user gets), on the whole validation set. The first
--ceiling-archs archs (spread over the range) are trained again with a second seed: the truth's
own seed-to-seed Kendall tau is the noise ceiling no supernet can beat. Several --supernet
NAME=PATH rank the same archs against the same truth: one row each of the ablation table.
Prints one JSON line (Kendall tau and Spearman with bootstrap 95 % intervals, the median
inherited / standalone ratio, top-5 overlap, per supernet) and a scatter plot per supernet.
Resumable: retrained archs are kept under --work and skipped when run again. --truth POINTS.json
takes the archs, the truth, its noise ceiling and the rows of an earlier run's points file instead
of training anything: a new supernet then costs one row of inherited evaluations, and the rows
already measured stay in the table; with --ceiling-archs N above the stored count it trains the
second seed of the archs that lack one (the first --supernet's data and space). Every row is
also set against each seed's truth and their mean on the archs that have both, and over the
pairs of archs that share a resolution. --smooth NAME adds NAME's scores smoothed over the K
archs (the search's --smooth) as a row of its own; --flops-prior NAME@ALPHA adds NAME's scores
times GFLOPs^ALPHA (the search's --flops-prior) and a row `gflops`, GFLOPs alone; --ensemble
NAME=ROW+ROW adds the rows' scores averaged per arch (do independent supernets' errors cancel?),
which --smooth and --flops-prior may then name. --refine-steps N scores each arch after N steps
of fine-tuning alone from the supernet's weights instead: a second, dearer score a search could
rank its finalists by.
"""
from __future__ import annotations

import argparse
import logging
import json
import random
import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from scipy.stats import kendalltau, rankdata, spearmanr

from latency.cost import flops
from latency.table import LatencyTable
from search.nas import SubnetEvaluator
from search.records import map_flops
from search.retrain import retrain
from search.surrogate import smooth_scores
from supernet.checkpoint import load_supernet, trained_space
from supernet.data import build_datasets
from supernet.distributed import init_distributed
from supernet.cli import log_to_stderr
from supernet.io import atomic_json, atomic_save_figure, emit_result, figure
from supernet.space import Arch, SearchSpace
from supernet.train_config import RESTRICTIONS, TrainConfig, recorded_config
from supernet.trainer import Trainer

POOL = 3000  # random archs whose predicted latencies the K picks are drawn from
TOP = 5  # the top-N overlap reported
CALIB_BATCHES = 8  # BN recalibration batches per arch, as the demo's search
CEILING_ARCHS = 15  # archs trained with a second seed unless --ceiling-archs says otherwise

logger = logging.getLogger(__name__)


def spread_archs(space: SearchSpace, table: LatencyTable, k: int, seed: int, region: Optional[Region] = None) -> list[Arch]:
    """K distinct archs, one from each of K equal bins of predicted latency (empty bins are
    filled from the nearest non-empty ones); within a bin, an arch whose neck and head types
    were picked least so far, so that K >= the number of types covers every one of them.
    With `region`, only archs inside it are drawn."""
    rng = random.Random(seed)
    pool = {a.hash(): a for a in (space.sample(rng) for _ in range(POOL)) if region is None or region.holds(a, table)}
    if len(pool) < k:
        raise ValueError(f"only {len(pool)} distinct archs of {POOL} random draws lie in {(region or Region()).describe()}; expected at least -k {k}")
    timed = sorted((table.predict(a), h) for h, a in pool.items())
    lo, hi = timed[0][0], timed[-1][0]
    bins: list[list[str]] = [[] for _ in range(k)]
    for ms, h in timed:
        bins[min(k - 1, int((ms - lo) / (hi - lo) * k))].append(h)
    picks: list[str] = []
    seen: Counter = Counter()
    for i in range(k):
        for j in sorted(range(k), key=lambda j: abs(j - i)):  # this bin, else the nearest with archs left
            left = [h for h in bins[j] if h not in picks]
            if left:
                rarity = {h: seen[("neck", pool[h].neck.type)] + seen[("head", pool[h].head.type)] for h in left}
                h = rng.choice([h for h in left if rarity[h] == min(rarity.values())])
                seen.update([("neck", pool[h].neck.type), ("head", pool[h].head.type)])
                picks.append(h)
                break
    return [pool[h] for h in picks]


@dataclass(frozen=True)
class Region:
    """Where a search's finalists compete: one input resolution and head type under a latency
    budget. Across resolutions the ranking is dominated by resolution; inside such a region
    is what is left to the search once the screening has picked the resolution."""
    resolution: Optional[int] = None
    head: Optional[str] = None
    max_ms: Optional[float] = None

    def holds(self, arch: Arch, table: LatencyTable) -> bool:
        return ((self.resolution is None or arch.resolution == self.resolution) and (self.head is None or arch.head.type == self.head)
                and (self.max_ms is None or table.predict(arch) <= self.max_ms))

    def describe(self) -> str:
        parts = [f"--resolution {self.resolution}"] * (self.resolution is not None) + [f"--head {self.head}"] * (self.head is not None)
        return " ".join(parts + [f"--max-ms {self.max_ms}"] * (self.max_ms is not None)) or "the space"

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def check_region(region: Region, space: SearchSpace) -> None:
    """A region the space can hold, or exit with the flag that cannot."""
    if region.resolution is not None and region.resolution not in space.resolutions:
        sys.exit(f"error: --resolution: expected one of the space's {list(space.resolutions)}, got {region.resolution}")
    if region.head is not None and region.head not in space.head.types:
        sys.exit(f"error: --head: expected one of the space's {list(space.head.types)}, got {region.head!r}")
    if region.max_ms is not None and not region.max_ms > 0:
        sys.exit(f"error: --max-ms: expected a positive latency in ms, got {region.max_ms}")


def rank_agreement(inherited: list[float], standalone: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """Kendall tau and Spearman rho of the two mAP lists, each with a 95 % bootstrap interval
    (archs resampled with replacement): at K of 10-30 the interval is the honest answer to
    whether the supernet's order can be trusted."""
    if len(inherited) != len(standalone) or len(inherited) < 3:
        raise ValueError(f"rank_agreement: expected two equally long lists of at least 3 mAPs, got {len(inherited)} and {len(standalone)}")
    x, y = np.asarray(inherited, float), np.asarray(standalone, float)
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    for _ in range(resamples):
        i = rng.integers(0, len(x), len(x))
        if len(set(i)) > 2:
            t, r = kendalltau(x[i], y[i]).statistic, spearmanr(x[i], y[i]).statistic
            if np.isfinite(t) and np.isfinite(r):
                taus.append(t)
                rhos.append(r)
    interval = lambda v: [round(float(q), 3) for q in np.percentile(v, [2.5, 97.5])]
    return {"kendall_tau": round(float(kendalltau(x, y).statistic), 4), "kendall_tau_ci95": interval(taus),
            "spearman": round(float(spearmanr(x, y).statistic), 4), "spearman_ci95": interval(rhos)}


def within_resolution_tau(x: list[float], y: list[float], archs: list[Arch]) -> dict:
    """Kendall tau (tau-a: a tie in either counts zero) over the pairs of archs that share an
    input resolution only: how well the order holds where resolution, the strongest single
    signal, says nothing."""
    pairs = [(i, j) for i in range(len(archs)) for j in range(i + 1, len(archs)) if archs[i].resolution == archs[j].resolution]
    agree = sum(float(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])) for i, j in pairs)
    return {"kendall_tau": round(agree / len(pairs), 4) if pairs else None, "pairs": len(pairs)}


def ranking_row(inherited: list[float], standalone: list[float], seed: int = 0, archs: list[Arch] | None = None) -> dict:
    """One supernet's row: rank agreement, the median inherited / standalone mAP ratio (how far
    the shared weights are from a standalone training), how many of the truth's top-5 the
    inherited order also puts in its top 5, and with `archs` what its errors follow (`rank_errors`)."""
    top = lambda v: set(np.argsort(v)[::-1][:TOP].tolist())
    ratios = [i / s for i, s in zip(inherited, standalone) if s > 0]
    return {**rank_agreement(inherited, standalone, seed=seed), "median_ratio": round(float(np.median(ratios)), 3) if ratios else None,
            f"top{TOP}_overlap": len(top(inherited) & top(standalone)),
            **({"within_resolution": within_resolution_tau(inherited, standalone, archs), **rank_errors(inherited, standalone, archs)} if archs else {})}


def two_seed_truth(truth: dict[str, float], again: dict[str, float], archs: list[Arch]) -> tuple[list[int], list[float], list[float]]:
    """The positions in `archs` of those trained with both seeds, and their two truths."""
    both = [i for i, a in enumerate(archs) if a.hash() in again]
    return both, [truth[archs[i].hash()] for i in both], [again[archs[i].hash()] for i in both]


def noise_ceiling(truth: dict[str, float], again: dict[str, float], seeds: list[int], archs: list[Arch]) -> Optional[dict]:
    """The truth's own seed-to-seed agreement on the archs trained with both seeds (None: fewer than 3)."""
    both, first, second = two_seed_truth(truth, again, archs)
    if len(both) < 3:
        return None
    return {"archs": len(both), "seeds": seeds, **rank_agreement(first, second, seed=seeds[0]),
            "within_resolution": within_resolution_tau(first, second, [archs[i] for i in both])}


def second_seed_agreement(inherited: list[float], truth: dict[str, float], again: dict[str, float], archs: list[Arch], seed: int = 0) -> dict:
    """On the archs trained with both seeds: the inherited order against each seed's truth and
    against their mean. Each seed's figure is what the noise ceiling (one seed against the other)
    bounds; the mean is a truth with half the training noise."""
    both, first, second = two_seed_truth(truth, again, archs)
    if len(both) < 3:
        return {}
    inh = [inherited[i] for i in both]
    return {"two_seed_archs": len(both), "vs_first_seed": rank_agreement(inh, first, seed=seed), "vs_second_seed": rank_agreement(inh, second, seed=seed),
            "vs_seed_mean": rank_agreement(inh, [(a + b) / 2 for a, b in zip(first, second)], seed=seed)}


def arch_features(arch: Arch) -> dict[str, float]:
    """The ordered properties of an arch that a supernet's scores may be biased along."""
    stages = arch.backbone.stages
    return {"resolution": arch.resolution, "stem_width": arch.backbone.stem_width, "backbone_width": sum(s.width for s in stages),
            "backbone_depth": sum(s.depth for s in stages), "neck_width": arch.neck.width, "neck_repeats": arch.neck.repeats,
            "head_width": arch.head.width, "head_convs": arch.head.num_convs}


def rank_errors(inherited: list[float], standalone: list[float], archs: list[Arch]) -> dict:
    """What the supernet's errors follow. The error of an arch is its standalone rank minus its
    inherited rank (both z-scored): > 0 where the supernet under-rates it. `error_vs`: Spearman
    of the error against each `arch_features` value (> 0: archs with more of it are under-rated);
    `type_error`: the mean error of each neck and head type. A bias that holds across seeds is
    a fault of the training, not noise."""
    z = lambda v: (v - v.mean()) / v.std() if v.std() > 0 else v * 0.0
    error = z(rankdata(standalone)) - z(rankdata(inherited))
    features = [arch_features(a) for a in archs]
    error_vs = {}
    for name in features[0]:  # undefined (None) where the property or the error does not vary
        values = [f[name] for f in features]
        error_vs[name] = round(float(spearmanr(values, error).statistic), 3) if len(set(values)) > 1 and np.ptp(error) > 1e-12 else None
    kinds = {f"neck.{a.neck.type}": [] for a in archs} | {f"head.{a.head.type}": [] for a in archs}
    for a, e in zip(archs, error):
        kinds[f"neck.{a.neck.type}"].append(e)
        kinds[f"head.{a.head.type}"].append(e)
    return {"error_vs": error_vs, "type_error": {k: round(float(np.mean(v)), 3) for k, v in sorted(kinds.items())}}


def ceiling_picks(archs: list[Arch], latency: Callable[[Arch], float], n: int) -> list[Arch]:
    """`n` of the archs, evenly spread over their predicted `latency` (the noise ceiling's)."""
    timed = sorted(archs, key=latency)
    if n >= len(timed):
        return timed
    return [timed[round(i * (len(timed) - 1) / (n - 1))] for i in range(n)] if n > 1 else timed[:1]


def second_seed_truth(archs: list[Arch], latency: Callable[[Arch], float], again: dict[str, float], n: int, space: SearchSpace,
                      config: TrainConfig, work: str, seed: int, lut: Optional[str] = None) -> dict[str, float]:
    """`again` (hash -> the second seed's standalone mAP) and, trained with `seed` in `work`, the
    second seed of enough more archs, spread over their `latency`, that at least `n` have one."""
    again = dict(again)
    rest = [a for a in archs if a.hash() not in again]
    for arch in ceiling_picks(rest, latency, n - len(again)) if n > len(again) else []:
        logger.info(f"[noise ceiling] {arch.hash()}, seed {seed}")
        cfg = replace(config, seed=seed, out=str(Path(work) / f"{arch.hash()}_seed{seed}"))
        again[arch.hash()] = retrain(arch, space, cfg, lut=lut, resume=True)["map"]
    return again


def parse_supernets(specs: list[str]) -> dict[str, str]:
    """`NAME=PATH` or `PATH` (named after its run folder) -> {name: path}; names must differ."""
    out: dict[str, str] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        name = name or Path(path).parent.name or "supernet"
        if name in out:
            raise ValueError(f"--supernet: the name {name!r} is given twice; name each as NAME=PATH")
        out[name] = path
    return out


FLOPS_ROW = re.compile(r"gflops|.+_flops[0-9.e+-]+")  # the rows add_flops_rows writes


def parse_flops_priors(specs: list[str]) -> list[tuple[str, float]]:
    """--flops-prior NAME@ALPHA values as (row name, alpha)."""
    out = []
    for spec in specs:
        name, _, alpha = spec.rpartition("@")
        try:
            value = float(alpha)
        except ValueError:
            value = -1.0
        if not name or not value >= 0:
            raise ValueError(f"--flops-prior {spec}: expected NAME@ALPHA, a row name and a number >= 0")
        out.append((name, value))
    return out


def add_flops_rows(priors: list[tuple[str, float]], archs: list[Arch], inherited: dict, supernets: dict, num_classes: Optional[int]) -> None:
    """The search's --flops-prior on these archs: rows NAME_flopsALPHA (NAME's scores x GFLOPs^ALPHA)
    and `gflops` (GFLOPs alone, what the product tends to as ALPHA grows)."""
    if not priors:
        return
    if num_classes is None:
        sys.exit("error: --flops-prior: FLOPs depend on the class count; give a --supernet (the --truth file does not record it)")
    counts = [flops(a, num_classes) for a in archs]
    for name, alpha in priors:
        if name not in inherited:
            sys.exit(f"error: --flops-prior {name}@{alpha:g}: no such row; rows: {sorted(inherited)}")
        inherited[f"{name}_flops{alpha:g}"] = [map_flops(v, n, alpha) for v, n in zip(inherited[name], counts)]
        supernets[f"{name}_flops{alpha:g}"] = f"{supernets[name]} (scores x GFLOPs^{alpha:g}, evolve.py --flops-prior)"
    inherited["gflops"] = [round(n / 1e9, 6) for n in counts]
    supernets["gflops"] = f"GFLOPs of each arch alone ({num_classes} classes): no supernet"


def parse_ensembles(specs: list[str]) -> list[tuple[str, list[str]]]:
    """--ensemble NAME=ROW+ROW... values as (row name, its member rows)."""
    out = []
    for spec in specs:
        name, _, members = spec.partition("=")
        rows = members.split("+")
        if not name or len(rows) < 2 or "" in rows or len(set(rows)) < len(rows) or name in rows:
            raise ValueError(f"--ensemble {spec}: expected NAME=ROW+ROW[+ROW...], two or more different rows and a new name")
        out.append((name, rows))
    return out


def add_ensemble_rows(ensembles: list[tuple[str, list[str]]], inherited: dict, supernets: dict) -> None:
    """Each NAME scores an arch by the mean of its member rows' scores; a stored row NAME is replaced."""
    for name, members in ensembles:
        missing = [m for m in members if m not in inherited]
        if missing:
            sys.exit(f"error: --ensemble {name}={'+'.join(members)}: no such row {missing[0]!r}; rows: {sorted(inherited)}")
        inherited[name] = [round(float(np.mean(scores)), 6) for scores in zip(*(inherited[m] for m in members))]
        supernets[name] = f"the mean score of {len(members)} rows: {', '.join(members)}"


def load_truth(path: str) -> dict:
    """An earlier run's points file: its archs, truth, ceiling and rows, checked to be whole."""
    try:
        data = json.loads(Path(path).read_text())
        archs = [Arch.from_dict(q["arch"], source=f"{path}: points[{i}].arch") for i, q in enumerate(data["points"])]
        truth = {a.hash(): float(q["standalone_map"]) for a, q in zip(archs, data["points"])}
        again = {a.hash(): q["standalone_map_seed2"] for a, q in zip(archs, data["points"]) if q.get("standalone_map_seed2") is not None}
        inherited = {row["name"]: [q["inherited_map"][row["name"]] for q in data["points"]] for row in data["rows"]}
        supernets = {row["name"]: row["supernet"] for row in data["rows"]}
        latency = [q["latency_pred_ms"] for q in data["points"]]
        keep = {k: data[k] for k in ("device", "schedule", "val_images", "noise_ceiling")} | {"num_classes": data.get("num_classes")}
        region = Region(**data.get("region", {}))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--truth {path}: not a ranking points file written by this benchmark ({type(e).__name__}: {e})") from None
    return {"archs": archs, "truth": truth, "again": again, "inherited": inherited, "supernets": supernets, "latency": latency,
            "region": region, **keep}


def main() -> None:
    log_to_stderr()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", nargs="+",
                   help="checkpoint(s), each PATH or NAME=PATH: one ablation row each, on the first one's archs "
                        "(default: runs/demo/supernet/last.pt; with --truth, none: the stored rows are summarised again)")
    p.add_argument("--lut", default="runs/demo/latency_cpu.json")
    p.add_argument("--truth", help="an earlier run's .points.json: reuse its archs, truth and rows (no --lut, nothing trained)")
    p.add_argument("-k", type=int, default=30, help="archs to compare (>= 30 for a meaningful tau)")
    p.add_argument("--ceiling-archs", type=int,
                   help=f"archs trained with a second seed for the noise ceiling (0: none; default {CEILING_ARCHS}); with --truth, "
                        "those beyond the stored ones are trained (with the first --supernet's data and space)")
    p.add_argument("--epochs", type=int, default=6, help="standalone training schedule (the demo's retraining)")
    p.add_argument("--steps", type=int, help="instead of --epochs")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--calib-batches", type=int, default=CALIB_BATCHES)
    p.add_argument("--refine-steps", type=int, default=0,
                   help="score each arch after this many steps of fine-tuning alone from the supernet's weights instead of "
                        "with inherited weights (a second score a search could rank its finalists by); 0: inherited")
    p.add_argument("--refine-lr", type=float, help="the fine-tune's peak learning rate (default: the supernet's)")
    p.add_argument("--smooth", nargs="+", default=[], metavar="NAME",
                   help="also rank these rows' scores smoothed over the K archs (search.surrogate, evolve.py --smooth), as rows NAME_smoothed")
    p.add_argument("--flops-prior", nargs="+", default=[], metavar="NAME@ALPHA",
                   help="also rank these rows' scores times GFLOPs^ALPHA (evolve.py --flops-prior), as rows NAME_flopsALPHA, "
                        "and GFLOPs alone as row gflops")
    p.add_argument("--ensemble", nargs="+", default=[], metavar="NAME=ROW+ROW",
                   help="also rank the rows' scores averaged per arch (supernets trained apart, e.g. with other seeds), as row NAME")
    p.add_argument("--resolution", type=int, help="draw the archs at this input resolution only (a region, with --head and --max-ms)")
    p.add_argument("--head", help="draw the archs with this head type only")
    p.add_argument("--max-ms", type=float, help="draw the archs predicted no slower than this (a search's --latency-budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--work", default="runs/ranking", help="retrained archs (kept: a rerun skips them)")
    p.add_argument("--out", default="benchmarks/results/ranking_cpu_tiny.json", help="JSON result; the plot goes next to it")
    args = p.parse_args()
    if args.k < 3:
        sys.exit("error: -k: expected at least 3")
    if args.refine_steps < 0:
        sys.exit(f"error: --refine-steps: expected 0 (inherited weights) or a positive number of steps, got {args.refine_steps}")
    if args.ceiling_archs is not None and (not 0 <= args.ceiling_archs <= args.k or args.ceiling_archs in (1, 2)):
        sys.exit(f"error: --ceiling-archs: expected 0 or 3..{args.k} (-k), got {args.ceiling_archs}")
    try:
        supernets = parse_supernets(args.supernet or ([] if args.truth else ["runs/demo/supernet/last.pt"]))
    except ValueError as e:
        sys.exit(f"error: {e}")
    try:
        args.flops_prior = parse_flops_priors(args.flops_prior)
        args.ensemble = parse_ensembles(args.ensemble)
    except ValueError as e:
        sys.exit(f"error: {e}")
    try:
        stored = load_truth(args.truth) if args.truth else None
    except ValueError as e:
        sys.exit(f"error: {e}")
    rows = set(stored["inherited"] if stored else ()) | set(supernets)  # the rows the options name, checked before any work
    for name, members in args.ensemble:
        missing = [m for m in members if m not in rows]
        if missing or name in supernets:
            why = f"no such row {missing[0]!r}; rows: {sorted(rows)}" if missing else "a --supernet of this call has that name"
            sys.exit(f"error: --ensemble {name}={'+'.join(members)}: {why}")
    rows |= {name for name, _ in args.ensemble}
    for name in args.smooth:
        if name not in rows:
            sys.exit(f"error: --smooth {name}: no such row; rows: {sorted(rows)}")
    for name, alpha in args.flops_prior:
        if name not in rows | {f"{n}_smoothed" for n in args.smooth}:
            sys.exit(f"error: --flops-prior {name}@{alpha:g}: no such row; rows: {sorted(rows)}")
    if args.flops_prior and not supernets and not stored["num_classes"]:
        sys.exit("error: --flops-prior: FLOPs depend on the class count; give a --supernet (the --truth file does not record it)")
    region = Region(args.resolution, args.head, args.max_ms)
    if stored and region != Region():
        sys.exit("error: --resolution, --head and --max-ms draw new archs; with --truth the stored archs are ranked")
    _, device = init_distributed(args.device)
    if stored:
        rank_stored(stored, supernets, args, device)
        return
    table = LatencyTable.load(args.lut)
    archs, config, inherited = None, None, {}
    for name, path in supernets.items():
        model, blob = load_supernet(path, device)
        if archs is None:  # a supernet trained on a sub-space (stage-matched, --train-blocks) is ranked on the archs it trained
            space = model.space
            check_region(region, trained_space(model, blob))
            try:
                archs = spread_archs(trained_space(model, blob), table, args.k, args.seed, region)
            except ValueError as e:
                sys.exit(f"error: {e}")
            config = data_config(blob, args, device, epochs=args.epochs, steps=args.steps)
            train_set, val_set = build_datasets(config, max(space.resolutions))
        elif model.space != space:
            sys.exit(f"error: --supernet {path}: its space differs from {next(iter(supernets.values()))}'s; rows must rank the same archs")
        inherited[name] = inherited_maps(model, blob, archs, train_set, val_set, device, args, name, f"{name} ({path})")
    truth = {}
    for i, arch in enumerate(archs):
        logger.info(f"[{i + 1}/{len(archs)}] {arch.hash()} predicted {table.predict(arch):.2f} ms")
        truth[arch.hash()] = retrain(arch, space, replace(config, out=str(Path(args.work) / arch.hash())), lut=args.lut, resume=True)["map"]
    seeds = [args.seed, args.seed + 1]
    again = second_seed_truth(archs, table.predict, {}, CEILING_ARCHS if args.ceiling_archs is None else args.ceiling_archs,
                              space, config, args.work, seeds[1], args.lut)
    write_result(archs, [round(table.predict(a), 4) for a in archs], truth, again, inherited, supernets, noise_ceiling(truth, again, seeds, archs),
                 table.meta.device_name, {"epochs": args.epochs, "steps": args.steps, "batch_size": args.batch_size},
                 len(val_set), args, region, model.num_classes)


def data_config(blob: dict, args, device, **schedule) -> TrainConfig:
    """A TrainConfig on a supernet checkpoint's space and data, with this run's batch, seed and device."""
    return TrainConfig(**{k: blob["config"].get(k) for k in ("space", "data", "train_ann", "train_images", "val_ann", "val_images")},
                       batch_size=args.batch_size, seed=args.seed, device=str(device), eval_images=0, workers=2, **schedule)


def inherited_maps(model, blob: dict, archs: list[Arch], train_set, val_set, device, args, name: str, label: str) -> list[float]:
    """Each arch's mAP with the supernet's weights after BN recalibration, as the search scores
    it; with --refine-steps, after that many steps of fine-tuning alone from them (each kept in
    --work/refine/NAME/HASH): whether a short fine-tune would rank the search's finalists better."""
    if args.refine_steps:
        logger.info(f"== refined ({args.refine_steps} steps): {label}")
        maps = []
        for a in archs:
            config = refine_config(blob["config"], args.refine_steps, out=str(Path(args.work) / "refine" / name / a.hash()), seed=args.seed,
                                   device=str(device), workers=2, eval_images=len(val_set), batch_size=args.batch_size,
                                   **({"lr": args.refine_lr} if args.refine_lr else {}))
            maps.append(round(refined_map(model, a, config, (train_set, val_set)), 5))
        return maps
    evaluator = SubnetEvaluator(model, train_set, val_set, device, args.calib_batches, len(val_set), args.batch_size, 2, args.seed)
    logger.info(f"== inherited: {label}")
    return [round(evaluator(a)["map"], 5) for a in archs]


def refine_config(trained: dict, steps: int, **settings) -> TrainConfig:
    """The supernet's recorded optimizer, lr, augmentation and data for a `steps`-step run of one
    path (warm-up a tenth of it, nothing of path sampling); `settings` override the rest."""
    config = recorded_config(trained)
    return replace(config, steps=steps, epochs=1, warmup=min(config.warmup, steps // 10), start_from=None, structure=None,
                   **dict.fromkeys(RESTRICTIONS), distill=0.0, random_paths=1, sampler="uniform",
                   ema=None, eval_every=0, **settings)


def refined_map(model, arch: Arch, config: TrainConfig, datasets: tuple) -> float:
    """mAP of `arch` fine-tuned alone from `model`'s weights in `config.out` (BN statistics its
    own) on the first `config.eval_images` validation images; a finished folder is read back."""
    done = Path(config.out) / "result.json"
    if not done.is_file():
        trainer = Trainer(config, datasets, resume=(Path(config.out) / "last.pt").is_file(), detector=model.extract(arch).train())
        atomic_json({"hash": arch.hash(), **trainer.run()["eval"]["arch"]}, done)
    return json.loads(done.read_text())["map"]


def rank_stored(stored: dict, supernets: dict[str, str], args, device) -> None:
    """--truth: the stored archs and truth, the stored rows, and one new row per --supernet."""
    archs = stored["archs"]
    inherited, names = dict(stored["inherited"]), dict(stored["supernets"])
    first = None  # the first --supernet's model and checkpoint: the data and space of any new second-seed training
    for name, path in supernets.items():
        model, blob = load_supernet(path, device)
        first = first or (model, blob)
        space = trained_space(model, blob)
        for a in archs:
            try:
                space.validate(a)
            except ValueError as e:
                sys.exit(f"error: --supernet {path}: it did not train the --truth arch {a.hash()} ({e})")
        config = data_config(blob, args, device)
        train_set, val_set = build_datasets(config, max(model.space.resolutions))
        if len(val_set) != stored["val_images"]:
            sys.exit(f"error: --supernet {path}: its validation set has {len(val_set)} images, the --truth was scored on {stored['val_images']}")
        inherited[name] = inherited_maps(model, blob, archs, train_set, val_set, device, args, name, f"{name} ({path})")
        how = [f"each arch fine-tuned alone {args.refine_steps} steps, lr {args.refine_lr or blob['config'].get('lr')}"] if args.refine_steps else []
        how += [f"BN recalibrated on {args.calib_batches} batches"] if args.calib_batches != CALIB_BATCHES and not args.refine_steps else []
        names[name] = path + (f" ({'; '.join(how)})" if how else "")
    again, ceiling = stored["again"], stored["noise_ceiling"]
    if args.ceiling_archs is not None and args.ceiling_archs > len(again):
        if first is None:
            sys.exit(f"error: --ceiling-archs {args.ceiling_archs}: the --truth has a second seed for {len(again)} archs; "
                     "training more needs a --supernet (its data and space)")
        model, blob = first
        seeds = ceiling["seeds"] if ceiling else [args.seed, args.seed + 1]
        schedule = stored["schedule"]
        config = replace(data_config(blob, args, device, epochs=schedule["epochs"], steps=schedule["steps"]), batch_size=schedule["batch_size"])
        latency = {a.hash(): ms for a, ms in zip(archs, stored["latency"])}
        again = second_seed_truth(archs, lambda a: latency[a.hash()], again, args.ceiling_archs, model.space, config, args.work, seeds[1])
        ceiling = noise_ceiling(stored["truth"], again, seeds, archs)
    write_result(archs, stored["latency"], stored["truth"], again, inherited, names, ceiling,
                 stored["device"], stored["schedule"], stored["val_images"], args, stored["region"],
                 first[0].num_classes if first else stored["num_classes"])


def write_result(archs: list[Arch], latency: list[float], truth: dict, again: dict, inherited: dict, supernets: dict, ceiling,
                 device_name: str, schedule: dict, val_images: int, args, region: Optional[Region] = None,
                 num_classes: Optional[int] = None) -> None:
    """The JSON line (one row per supernet), the points file beside it and the plot."""
    add_ensemble_rows(getattr(args, "ensemble", []), inherited, supernets)
    for name in args.smooth:  # the search's --smooth: the same inherited scores, smoothed over these archs
        if name not in inherited:
            sys.exit(f"error: --smooth {name}: no such row; rows: {sorted(inherited)}")
        inherited[f"{name}_smoothed"] = [round(v, 5) for v in smooth_scores(archs, inherited[name])]
        supernets[f"{name}_smoothed"] = f"{supernets[name]} (scores smoothed over the {len(archs)} archs, search.surrogate)"
    add_flops_rows(getattr(args, "flops_prior", []), archs, inherited, supernets, num_classes)
    standalone = [truth[a.hash()] for a in archs]
    rows = [{"name": name, "supernet": supernets[name], **ranking_row(inh, standalone, args.seed, archs),
             **second_seed_agreement(inh, truth, again, archs, args.seed)} for name, inh in inherited.items()]
    for row in rows:  # a score that is not an mAP has no ratio to the truth
        if FLOPS_ROW.fullmatch(row["name"]):
            row["median_ratio"] = None
    members = dict(getattr(args, "ensemble", []))
    for row in rows:  # how far the members agree with each other: their errors cancel only where they differ
        if row["name"] in members:
            pairs = [kendalltau(inherited[a], inherited[b]).statistic for a, b in combinations(members[row["name"]], 2)]
            row["members_kendall_tau"] = round(float(np.mean(pairs)), 4)
    result = {
        "benchmark": "ranking", "device": device_name, "k": len(archs),
        "head_types": sorted({a.head.type for a in archs}), "neck_types": sorted({a.neck.type for a in archs}),
        "schedule": schedule, "val_images": val_images, "num_classes": num_classes, "noise_ceiling": ceiling, "rows": rows,
        **({"region": region.to_dict()} if region is not None and region != Region() else {}),
    }
    points = [{"hash": a.hash(), "latency_pred_ms": ms, "standalone_map": round(truth[a.hash()], 5),
               "standalone_map_seed2": again.get(a.hash()), "inherited_map": {n: v[i] for n, v in inherited.items()}, "arch": a.to_dict()}
              for i, (a, ms) in enumerate(zip(archs, latency))]
    out = Path(args.out)
    atomic_json({**result, "points": points}, out.with_suffix(".points.json"))
    _plot(points, rows, out.with_suffix(".png"))
    emit_result(result, out)


def _plot(points: list[dict], rows: list[dict], path: Path) -> None:
    fig = figure(figsize=(5.5 * len(rows), 4.5), dpi=120)
    axes = fig.subplots(1, len(rows), squeeze=False)
    for ax, row in zip(axes[0], rows):
        lo, hi = row["kendall_tau_ci95"]
        sc = ax.scatter([q["inherited_map"][row["name"]] for q in points], [q["standalone_map"] for q in points],
                        c=[q["latency_pred_ms"] for q in points], cmap="viridis")
        ax.set(xlabel=f"mAP, inherited weights ({row['name']}, BN recalibrated)", ylabel="mAP, trained standalone",
               title=f"K={len(points)}: Kendall tau {row['kendall_tau']:.2f} (95 % CI {lo:.2f} to {hi:.2f}), Spearman {row['spearman']:.2f}")
        ax.title.set_fontsize(9)
    fig.colorbar(sc, ax=axes[0].tolist(), label="predicted latency (ms)")
    atomic_save_figure(fig, path)


if __name__ == "__main__":
    main()
