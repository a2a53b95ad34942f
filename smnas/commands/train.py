"""Train the single-path supernet once, from scratch, one sampled path per step.

    smnas train                                  # shapes data, tiny space, CPU, ~10 min
    smnas train --data /coco --space coco --epochs 24 --batch-size 32 --amp
    torchrun --nproc_per_node 8 -m smnas train --data /coco --space coco ...
    smnas train --config runs/supernet/config.yaml --out runs/again      # re-run a run from its settings

Writes OUT/last.pt (checkpoint), metrics.jsonl and config.yaml (the resolved settings).
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from supernet.cli import CommandParser, log_to_stderr, add_config_arguments, add_config_file_argument, parse_with_config, write_config
from supernet.data import build_datasets
from supernet.distributed import init_distributed
from supernet.errors import TrainError
from supernet.space import SearchSpace
from supernet.train_config import TrainConfig, train_config
from supernet.trainer import Trainer

from . import run_reporting


def parse(argv: Optional[list[str]], prog: Optional[str] = None) -> tuple[TrainConfig, bool, bool]:
    """(config, --resume, --overwrite); TrainError for a value the config refuses."""
    p = CommandParser(prog=prog, description=__doc__)
    add_config_file_argument(p)
    add_config_arguments(p, TrainConfig)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an --out that already holds a run (its files are replaced)")
    args = vars(parse_with_config(p, argv))
    resume, overwrite = args.pop("resume"), args.pop("overwrite")
    args.pop("config")
    if resume and overwrite:
        p.error("--resume and --overwrite: pick one (continue the run in --out, or start afresh over it)")
    return train_config(args), resume, overwrite


def train(config: TrainConfig, resume: bool, overwrite: bool) -> tuple[Trainer, dict]:
    last = Path(config.out) / "last.pt"
    if last.is_file() and not (resume or overwrite):
        raise TrainError(f"--out {config.out}: holds a run ({last}); pass --resume to continue it or --overwrite to start afresh")
    space = SearchSpace.resolve(config.space)
    init_distributed(config.device)  # before the data: rank 0 alone generates the default data
    trainer = Trainer(config, build_datasets(config, max(space.resolutions)), resume=resume)
    if trainer.dist.main:
        write_config(asdict(config), Path(config.out) / "config.yaml")
    return trainer, trainer.run()


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    log_to_stderr()
    status, done = run_reporting(lambda: train(*parse(argv, prog)))
    if status:
        return status
    trainer, result = done
    if trainer.dist.main:
        print(f"checkpoint: {result['checkpoint']}", file=sys.stderr)  # people read stderr; stdout is the JSON line alone
        for name in ("largest", "smallest"):
            print(f"mAP {name}: {result['eval'][name]['map']:.4f}", file=sys.stderr)
        print(json.dumps(result))
    return 0
