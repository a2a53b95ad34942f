"""The commands' flags: their argument parser, and the check the config dataclasses run on each
numeric field. A bad flag is one line naming it, like every other bad input."""
from __future__ import annotations

import argparse
import math
from typing import NoReturn


class CommandParser(argparse.ArgumentParser):
    """argparse, but an unparsable flag (`--steps abc`, an unknown choice) prints one line naming
    it and exits 2, instead of the usage block followed by the message; `--help` is unchanged."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def flag_error(error: type[Exception], name: str, value, expected: str) -> Exception:
    """`error("--NAME: expected EXPECTED, got VALUE")` for the config field `name`."""
    return error(f"--{name.replace('_', '-')}: expected {expected}, got {value!r}")


def check_number(error: type[Exception], name: str, value, low: float, high: float = math.inf, low_open: bool = False,
                 high_open: bool = False, integer: bool = False, optional: bool = False) -> None:
    """Raise `error` naming the flag unless `value` is a finite number (an integer if asked) in
    the range; bools are not numbers here, None passes where `optional`."""
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (not integer or float(value).is_integer())
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        kind = "an integer" if integer else "a number"
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        raise flag_error(error, name, value, f"{kind} in {lo}, {hi}" + (" or none" if optional else ""))


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The data, schedule, optimisation and run flags that supernet training and retraining share."""
    from .batches import AUGMENTS
    from .train_config import TrainConfig

    d = TrainConfig
    p.add_argument("--space", default=d.space, help="tiny, coco, or a .yaml/.json space file")
    p.add_argument("--data", help="COCO 2017 layout root (annotations/, train2017/, val2017/); default: built-in shapes data")
    for name in ("train-ann", "train-images", "val-ann", "val-images"):
        p.add_argument(f"--{name}", help="override one path of --data")
    p.add_argument("--out", default=d.out, help="run directory (checkpoints, metrics.jsonl)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int)
    length.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=d.optimizer)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up steps before cosine decay")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="not applied to BN and biases")
    p.add_argument("--amp", action="store_true", help="fp16 mixed precision (CUDA)")
    p.add_argument("--clip-grad", type=float, default=d.clip_grad, help="max gradient norm; 0 disables")
    p.add_argument("--augment", choices=AUGMENTS, default=d.augment,
                   help="training augmentation: none, flip (horizontal), scale_crop (flip, then transforms.v2 zoom-out and IoU crop)")
    p.add_argument("--ema", type=float, help="keep an EMA of the weights with this decay (e.g. 0.9998)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="steps; 0: only at the end")
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="decode every image once at start and leave out those that fail (counted in a warning), instead of stopping at the first")
