"""Search a trained supernet for the detector with the best COCO mAP under a latency budget.

    python evolve.py --latency-budget 12 --lut luts/cpu.json        # the default supernet run
    python evolve.py --supernet runs/supernet/last.pt --latency-budget 8 --lut luts/h100_fp16_bs1.json \\
        --objective pareto --stage both --population 50 --generations 20 --out runs/search
    torchrun --nproc_per_node 8 evolve.py ...                       # evaluations split across GPUs

Writes history.jsonl, pareto.json, finalists.json and pareto.png to --out; --resume continues.
"""
from __future__ import annotations

import json
import sys

from search.evolution import SearchError
from search.nas import Search, SearchConfig
from supernet.cli import CommandParser
from supernet.errors import TrainError
from supernet.io import error_line

D = SearchConfig()


def parse(argv: list[str] | None) -> tuple[SearchConfig, bool]:
    p = CommandParser(description=__doc__)
    p.add_argument("--supernet", default=D.supernet, help="checkpoint written by train_supernet.py")
    p.add_argument("--latency-budget", type=float, required=True, help="milliseconds, as predicted by the latency table")
    p.add_argument("--lut", help="latency table JSON (default: one in luts/ built on this device for this space)")
    p.add_argument("--flops-budget", type=float, help="GFLOPs (true FLOPs: a multiply-add counts 2)")
    p.add_argument("--params-budget", type=float, help="millions of parameters")
    p.add_argument("--objective", choices=["map", "pareto"], default=D.objective,
                   help="map: best mAP under the budget; pareto: NSGA-II on (mAP, latency) under the budget")
    p.add_argument("--stage", choices=["structural", "modular", "both", "random"], default=D.stage,
                   help="random: the control, population x generations subnets drawn uniformly under the budget, no evolution")
    p.add_argument("--structural-block", default=D.structural_block, help="the block every position gets in the structural stage")
    p.add_argument("--finetune-steps", type=int, default=D.finetune_steps,
                   help="--stage both: fine-tune the supernet this many steps on the structure found before the modular stage (SM-NAS); 0: none")
    p.add_argument("--base-arch", help="Arch JSON whose structure --stage modular keeps (required there)")
    for name in ("population", "generations", "topk", "calib_batches", "val_images", "batch_size", "finalists", "seed", "workers"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(D, name))
    p.add_argument("--mutation-prob", type=float, default=D.mutation_prob, help="per-gene probability")
    p.add_argument("--crossover-prob", type=float, default=D.crossover_prob, help="share of children made by crossover")
    p.add_argument("--aging", type=int, default=SearchConfig.aging, metavar="N",
                   help="regularized evolution: parents only from the last N evaluated (0: from all, SPOS)")
    p.add_argument("--smooth", action="store_true",
                   help="rank subnets by their inherited mAP smoothed over all the stage evaluated (a ridge fit on their choices)")
    p.add_argument("--out", default=D.out)
    p.add_argument("--resume", action="store_true", help="continue the search in --out")
    p.add_argument("--device", default=D.device, help="auto, cpu, cuda, cuda:N (where subnets are evaluated)")
    p.add_argument("--force", action="store_true", help="use a latency table built on another device or for another class count")
    p.add_argument("--data", help="COCO 2017 layout root (default: the data the supernet was trained on)")
    for name in ("train-ann", "train-images", "val-ann", "val-images-dir"):
        p.add_argument(f"--{name}", help="override one path of --data")
    args = vars(p.parse_args(argv))
    resume = args.pop("resume")
    try:
        return SearchConfig(**args), resume
    except SearchError as e:
        p.error(str(e))


def main(argv: list[str] | None = None) -> int:
    config, resume = parse(argv)
    try:
        search = Search(config, resume=resume, log=lambda m: print(m, file=sys.stderr))
        summary = search.run()
    except (SearchError, TrainError, ValueError, OSError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    if search.dist.main:
        best = summary["best"]
        print(f"best: mAP {best['map']:.4f} at {best['latency_ms']:.3f} ms (budget {config.latency_budget:g} ms), arch {best['hash']}; "
              f"{summary['evaluated']} subnets evaluated; results in {config.out}", file=sys.stderr)
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
