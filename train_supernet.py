"""Train the single-path detection supernet once, from scratch, one sampled path per step.

    python train_supernet.py                              # shapes data, tiny space, CPU, ~10 min
    python train_supernet.py --data /coco --space coco --epochs 24 --batch-size 32 --amp
    torchrun --nproc_per_node 8 train_supernet.py --data /coco --space coco ...
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from supernet.space import SearchSpace
from supernet.trainer import TrainConfig, Trainer, TrainError, build_datasets, init_distributed

DEFAULTS = TrainConfig()


def parse(argv: list[str] | None) -> tuple[TrainConfig, bool]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=DEFAULTS.space, help="tiny, coco, or a .yaml/.json space file")
    p.add_argument("--data", help="COCO 2017 layout root (annotations/, train2017/, val2017/); default: built-in shapes data")
    for name in ("train-ann", "train-images", "val-ann", "val-images"):
        p.add_argument(f"--{name}", help="override one path of --data")
    p.add_argument("--out", default=DEFAULTS.out, help="run directory (checkpoints, metrics.jsonl)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int)
    length.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="per process")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=DEFAULTS.optimizer)
    p.add_argument("--momentum", type=float, default=DEFAULTS.momentum)
    p.add_argument("--warmup", type=int, default=DEFAULTS.warmup, help="linear warm-up steps before cosine decay")
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay, help="not applied to BN and biases")
    p.add_argument("--amp", action="store_true", help="fp16 mixed precision (CUDA)")
    p.add_argument("--clip-grad", type=float, default=DEFAULTS.clip_grad, help="max gradient norm; 0 disables")
    p.add_argument("--ema", type=float, help="keep an EMA of the weights with this decay (e.g. 0.9998)")
    p.add_argument("--sampler", choices=["uniform", "sandwich", "fair"], default=DEFAULTS.sampler)
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--workers", type=int, default=DEFAULTS.workers)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--eval-every", type=int, default=DEFAULTS.eval_every, help="steps; 0: only at the end")
    p.add_argument("--ckpt-every", type=int, default=DEFAULTS.ckpt_every)
    p.add_argument("--log-every", type=int, default=DEFAULTS.log_every)
    p.add_argument("--eval-images", type=int, default=DEFAULTS.eval_images)
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:N")
    args = vars(p.parse_args(argv))
    resume = args.pop("resume")
    args = {k: v for k, v in args.items() if k in {f.name for f in fields(TrainConfig)}}
    args["clip_grad"] = args["clip_grad"] or None
    return TrainConfig(**args), resume


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
