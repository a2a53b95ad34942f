"""The whole pipeline on this machine, end to end, on the built-in shapes data (no download) or yours.

    smnas demo              # ~13 min on 2 CPU cores: supernet, latency table, search, retraining, report
    smnas demo --quick      # ~3 min, the same steps on short schedules (what CI runs)
    smnas demo --train-ann ../shared/data/coco128/instances.json --train-images ../shared/data/coco128/images \
               --val-ann ../shared/data/coco128/instances.json --val-images ../shared/data/coco128/images
    smnas demo --data /datasets/coco --space coco --device cuda

Writes everything under --out (default runs/demo): supernet/, latency_<device>.json, search/,
retrain/<model>/, and report.md / report.json comparing the searched detector with the baselines.
Run it again to continue an interrupted run; finished steps are skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from typing import Optional

from search.evolution import SearchError
from search.pipeline import DATA_FIELDS, FULL, QUICK, SPACE, render_table, run_pipeline
from supernet.cli import CommandParser, add_config_arguments, check_number, error_message, log_to_stderr
from supernet.errors import TrainError
from supernet.train_config import TrainConfig


def parse(argv: Optional[list[str]], prog: Optional[str] = None) -> argparse.Namespace:
    p = CommandParser(prog=prog, description=__doc__)
    p.add_argument("--quick", action="store_true", help="short schedules: checks that every step works, numbers mean little")
    p.add_argument("--out", help="run folder (default: runs/demo, or runs/demo_quick with --quick)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="data loader processes")
    p.add_argument("--retrain-epochs", type=int, help=f"epochs of each full retraining (default: {FULL.retrain_epochs}; "
                                                      "a small real dataset such as coco128 needs far more than the shapes data)")
    p.add_argument("--screen-epochs", type=int, help=f"epochs of each screening training (default: {FULL.screen_epochs})")
    add_config_arguments(p, TrainConfig, skip=[f.name for f in fields(TrainConfig) if f.name not in (*DATA_FIELDS, "space")],
                         defaults={"space": SPACE})
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    log_to_stderr()
    args = parse(argv, prog)
    out = args.out or ("runs/demo_quick" if args.quick else "runs/demo")
    try:
        data = {k: getattr(args, k) for k in DATA_FIELDS if getattr(args, k)}
        schedule = QUICK if args.quick else FULL
        for name in ("retrain_epochs", "screen_epochs"):
            if (epochs := getattr(args, name)) is not None:
                check_number(ValueError, name, epochs, 1, integer=True)
                schedule = replace(schedule, **{name: epochs, name.replace("epochs", "steps"): None})
        report = run_pipeline(out, args.quick, args.device, args.seed, args.workers, space=args.space, data=data, schedule=schedule)
    except (SearchError, TrainError, ValueError) as e:
        print(error_message(e), file=sys.stderr)
        return 2
    print(render_table(report), file=sys.stderr)
    print(f"report: {out}/report.md", file=sys.stderr)
    print(json.dumps({k: report[k] for k in ("device", "latency_budget_ms", "searched", "seconds")}))
    return 0
