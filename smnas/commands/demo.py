"""The whole pipeline on this machine, end to end, on the built-in shapes data (no download).

    smnas demo              # ~13 min on 2 CPU cores: supernet, latency table, search, retraining, report
    smnas demo --quick      # ~3 min, the same steps on short schedules (what CI runs)

Writes everything under --out (default runs/demo): supernet/, latency_<device>.json, search/,
retrain/<model>/, and report.md / report.json comparing the searched detector with the baselines.
Run it again to continue an interrupted run; finished steps are skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from search.evolution import SearchError
from search.pipeline import render_table, run_pipeline
from supernet.cli import CommandParser, log_to_stderr
from supernet.errors import TrainError


def parse(argv: Optional[list[str]], prog: Optional[str] = None) -> argparse.Namespace:
    p = CommandParser(prog=prog, description=__doc__)
    p.add_argument("--quick", action="store_true", help="short schedules: checks that every step works, numbers mean little")
    p.add_argument("--out", help="run folder (default: runs/demo, or runs/demo_quick with --quick)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="data loader processes")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    log_to_stderr()
    args = parse(argv, prog)
    out = args.out or ("runs/demo_quick" if args.quick else "runs/demo")
    try:
        report = run_pipeline(out, args.quick, args.device, args.seed, args.workers)
    except (SearchError, TrainError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render_table(report), file=sys.stderr)
    print(f"report: {out}/report.md", file=sys.stderr)
    print(json.dumps({k: report[k] for k in ("device", "latency_budget_ms", "searched", "seconds")}))
    return 0
