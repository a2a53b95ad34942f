"""Train the single-path detection supernet once, from scratch, one sampled path per step.

    python train_supernet.py                              # shapes data, tiny space, CPU, ~10 min
    python train_supernet.py --data /coco --space coco --epochs 24 --batch-size 32 --amp
    torchrun --nproc_per_node 8 train_supernet.py --data /coco --space coco ...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from supernet.cli import CommandParser, add_train_arguments
from supernet.data import build_datasets
from supernet.distributed import init_distributed
from supernet.errors import Interrupted, TrainError
from supernet.io import error_line
from supernet.sampler import SAMPLERS
from supernet.space import DEPTH_SAMPLING, SearchSpace, WIDTH_SAMPLING
from supernet.train_config import TrainConfig, train_config
from supernet.trainer import Trainer


def parse(argv: list[str] | None) -> tuple[TrainConfig, bool, bool]:
    """(config, --resume, --overwrite); TrainError for a value the config refuses."""
    p = CommandParser(description=__doc__)
    add_train_arguments(p)
    p.add_argument("--sampler", choices=list(SAMPLERS), default=TrainConfig.sampler,
                   help="paths a step: uniform (random), sandwich (the largest, the smallest and random ones), smallest (the smallest and "
                        "random ones), narrow_twin (each random path and itself at its least widths), fair (every choice equally often)")
    p.add_argument("--random-paths", type=int, default=TrainConfig.random_paths,
                   help="random paths a step, gradients accumulated (sandwich: besides the largest and the smallest)")
    p.add_argument("--width-sampling", choices=list(WIDTH_SAMPLING), default=TrainConfig.width_sampling,
                   help="how random paths draw widths: uniform, or wide (weight 1..n, narrowest first: the trailing channels only wide paths use get more updates)")
    p.add_argument("--depth-sampling", choices=list(DEPTH_SAMPLING), default=TrainConfig.depth_sampling,
                   help="how random paths draw stage depths: uniform, or deep (weight 1..n, shallowest first: the last block positions get more updates)")
    p.add_argument("--distill", type=float, default=TrainConfig.distill,
                   help="in-place distillation weight (sandwich): the other paths match the largest path's features; 0: off")
    p.add_argument("--distill-features", choices=["backbone", "neck"], default=TrainConfig.distill_features,
                   help="with --distill: match the backbone's outputs (the neck's input) or the neck's outputs")
    p.add_argument("--eval-images", type=int, default=TrainConfig.eval_images)
    p.add_argument("--train-blocks", nargs="+", metavar="BLOCK",
                   help="sample only these block types (stage-matched training: the structural stage's block, e.g. ir_k3_e6)")
    p.add_argument("--structure", help="Arch JSON: sample only paths with its resolution, neck and head types and depths (fine-tuning for the modular stage)")
    p.add_argument("--start-from", help="supernet checkpoint whose weights training starts from (fine-tuning)")
    p.add_argument("--grad-average", choices=["users", "paths"], default=TrainConfig.grad_average,
                   help="with several paths a step (sandwich): average each weight's gradient over the paths that ran it (users) or over all paths")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an --out that already holds a run (its files are replaced)")
    args = vars(p.parse_args(argv))
    resume, overwrite = args.pop("resume"), args.pop("overwrite")
    if resume and overwrite:
        p.error("--resume and --overwrite: pick one (continue the run in --out, or start afresh over it)")
    if args["train_blocks"]:
        args["train_blocks"] = tuple(args["train_blocks"])
    return train_config(args), resume, overwrite


def main(argv: list[str] | None = None) -> int:
    try:
        config, resume, overwrite = parse(argv)
        last = Path(config.out) / "last.pt"
        if last.is_file() and not (resume or overwrite):
            raise TrainError(f"--out {config.out}: holds a run ({last}); pass --resume to continue it or --overwrite to start afresh")
        space = SearchSpace.resolve(config.space)
        init_distributed(config.device)  # before the data: rank 0 alone generates the default data
        trainer = Trainer(config, build_datasets(config, max(space.resolutions)), resume=resume)
        result = trainer.run()
    except Interrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 130
    except (TrainError, ValueError, OSError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    if trainer.dist.main:
        print(f"checkpoint: {result['checkpoint']}", file=sys.stderr)  # people read stderr; stdout is the JSON line alone
        for name in ("largest", "smallest"):
            print(f"mAP {name}: {result['eval'][name]['map']:.4f}", file=sys.stderr)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
