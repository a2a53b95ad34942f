"""Train the single-path detection supernet once, from scratch, one sampled path per step.

    python train_supernet.py                              # shapes data, tiny space, CPU, ~10 min
    python train_supernet.py --data /coco --space coco --epochs 24 --batch-size 32 --amp
    torchrun --nproc_per_node 8 train_supernet.py --data /coco --space coco ...
"""
from __future__ import annotations

import argparse
import json
import sys

from supernet.space import SearchSpace
from supernet.trainer import TrainConfig, Trainer, TrainError, add_train_arguments, build_datasets, init_distributed, train_config


def parse(argv: list[str] | None) -> tuple[TrainConfig, bool]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(p)
    p.add_argument("--sampler", choices=["uniform", "sandwich", "fair"], default=TrainConfig.sampler)
    p.add_argument("--eval-images", type=int, default=TrainConfig.eval_images)
    p.add_argument("--train-blocks", nargs="+", metavar="BLOCK",
                   help="sample only these block types (stage-matched training: the structural stage's block, e.g. ir_k3_e6)")
    p.add_argument("--structure", help="Arch JSON: sample only paths with its resolution, neck and head types and depths (fine-tuning for the modular stage)")
    p.add_argument("--start-from", help="supernet checkpoint whose weights training starts from (fine-tuning)")
    p.add_argument("--grad-average", choices=["users", "paths"], default=TrainConfig.grad_average,
                   help="with several paths a step (sandwich): average each weight's gradient over the paths that ran it (users) or over all paths")
    args = vars(p.parse_args(argv))
    resume = args.pop("resume")
    if args["train_blocks"]:
        args["train_blocks"] = tuple(args["train_blocks"])
    return train_config(args), resume


def main(argv: list[str] | None = None) -> int:
    config, resume = parse(argv)
    try:
        space = SearchSpace.resolve(config.space)
        init_distributed(config.device)  # before the data: rank 0 alone generates the default data
        trainer = Trainer(config, build_datasets(config, max(space.resolutions)), resume=resume)
        result = trainer.run()
    except (TrainError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if trainer.dist.main:
        print(f"checkpoint: {result['checkpoint']}")
        for name in ("largest", "smallest"):
            print(f"mAP {name}: {result['eval'][name]['map']:.4f}")
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
