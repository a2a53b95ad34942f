"""Search a trained supernet for the detector with the best COCO mAP under a latency budget.

    smnas search --latency-budget 12                     # the default supernet run, a table in luts/
    smnas search --supernet runs/supernet/last.pt --latency-budget 8 --lut luts/h100_fp16_bs1.json \\
        --objective pareto --stage both --population 50 --generations 20 --out runs/search
    torchrun --nproc_per_node 8 -m smnas search ...      # evaluations split across GPUs

Writes history.jsonl, pareto.json, finalists.json, pareto.png and config.yaml to --out; --resume
continues; --config OUT/config.yaml re-runs a search.
"""
from __future__ import annotations

import json
import sys
from typing import Optional

from search.evolution import SearchError
from search.nas import Search, SearchConfig
from supernet.cli import CommandParser, log_to_stderr, add_config_arguments, add_config_file_argument, parse_with_config
from supernet.errors import TrainError

from . import run_reporting


def parse(argv: Optional[list[str]], prog: Optional[str] = None) -> tuple[SearchConfig, bool]:
    p = CommandParser(prog=prog, description=__doc__)
    add_config_file_argument(p)
    add_config_arguments(p, SearchConfig)
    p.add_argument("--resume", action="store_true", help="continue the search in --out")
    args = vars(parse_with_config(p, argv))
    resume = args.pop("resume")
    args.pop("config")
    if args["latency_budget"] is None:
        p.error("--latency-budget: required (milliseconds, as the latency table predicts them)")
    try:
        return SearchConfig(**args), resume
    except SearchError as e:
        p.error(str(e))


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    log_to_stderr()
    config, resume = parse(argv, prog)

    def work() -> tuple[Search, dict]:
        search = Search(config, resume=resume)
        return search, search.run()

    status, done = run_reporting(work, errors=(SearchError, TrainError, ValueError, OSError))
    if status:
        return status
    search, summary = done
    if search.dist.main:
        best = summary["best"]
        print(f"best: mAP {best['map']:.4f} at {best['latency_ms']:.3f} ms (budget {config.latency_budget:g} ms), arch {best['hash']}; "
              f"{summary['evaluated']} subnets evaluated; results in {config.out}", file=sys.stderr)
        print(json.dumps(summary))
    return 0
