"""What one training run is: its settings, checked once, and how they compare across a resume."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

from .batches import AUGMENTS
from .cli import check_number, flag_error
from .distill import FEATURES
from .errors import TrainError
from .sampler import SAMPLERS
from .space import DEPTH_SAMPLING, WIDTH_SAMPLING

# fields a resumed run may change: they decide where and how fast it runs, or what is evaluated
# on the way, never the weights it ends with
RUNTIME_FIELDS = frozenset({"out", "device", "workers", "eval_every", "ckpt_every", "log_every", "eval_images", "eval_random_archs",
                            "calib_batches", "space"})  # the space is compared by content, not by how it was named
# what a checkpoint that predates a field was trained with, where that is not the field's default today
PREDATED = {"width_sampling": "uniform"}


@dataclass
class TrainConfig:
    space: str = "tiny"
    data: Optional[str] = None  # COCO 2017 layout root; None: built-in shapes data
    train_ann: Optional[str] = None
    train_images: Optional[str] = None
    val_ann: Optional[str] = None
    val_images: Optional[str] = None
    out: str = "runs/supernet"
    steps: Optional[int] = None  # takes precedence over epochs
    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.04
    optimizer: str = "sgd"
    momentum: float = 0.9
    warmup: int = 100
    weight_decay: float = 4e-5
    amp: bool = False
    clip_grad: Optional[float] = 10.0
    ema: Optional[float] = None  # EMA decay, e.g. 0.9998
    sampler: str = "uniform"  # SPOS; the sandwich trains its extremes every step, which ranks paths near them too high
    random_paths: int = 1  # random paths a step, gradients accumulated (the sandwich adds the largest and the smallest)
    width_sampling: str = "wide"  # uniform | wide: random paths draw each width with weight 1..n, narrowest first (ranks better)
    depth_sampling: str = "uniform"  # uniform | deep: each stage depth with weight 1..n, shallowest first
    seed: int = 0
    workers: int = 2
    eval_every: int = 0  # 0: only at the end
    ckpt_every: int = 200
    log_every: int = 10
    device: str = "auto"
    eval_images: int = 200  # validation images per evaluation (a fixed subset; retraining: 0 = all)
    eval_random_archs: int = 2  # evaluated besides the smallest and the largest
    calib_batches: int = 8  # BN recalibration batches before each evaluation
    train_blocks: Optional[tuple[str, ...]] = None  # sample only these block types (structural stage); None: all
    structure: Optional[str] = None  # Arch JSON: sample only paths of its structure (the modular stage's fine-tune)
    start_from: Optional[str] = None  # supernet checkpoint whose weights training starts from (fine-tuning)
    distill: float = 0.0  # in-place distillation weight: the sandwich's largest path's features teach the other paths; 0: off
    distill_features: str = "backbone"  # backbone | neck: whose outputs the other paths match
    grad_average: str = "users"  # several paths a step: each weight's gradient averaged over the paths that ran it, or over all ("paths")
    augment: str = "flip"  # none | flip | scale_crop (flip, then transforms.v2 zoom-out and IoU crop)
    skip_unreadable: bool = False  # leave out images that do not decode (checked once at start) instead of stopping

    def __post_init__(self) -> None:
        """Every field checked once, here, naming its flag: a bad value would otherwise train
        something else silently (a negative clip flips gradients) or fail deep inside timm."""
        def bad(name: str, expected: str) -> TrainError:
            return flag_error(TrainError, name, getattr(self, name), expected)

        def number(name: str, low: float, high: float = math.inf, **kw) -> None:
            check_number(TrainError, name, getattr(self, name), low, high, **kw)

        number("steps", 1, integer=True, optional=True)
        for name in ("epochs", "batch_size", "ckpt_every", "log_every", "random_paths"):
            number(name, 1, integer=True)
        for name in ("warmup", "eval_every", "eval_images", "eval_random_archs", "calib_batches", "workers"):
            number(name, 0, integer=True)
        number("lr", 0, low_open=True)
        number("momentum", 0, 1, high_open=True)
        number("weight_decay", 0)
        number("clip_grad", 0, optional=True)  # 0 or none: no clipping
        number("ema", 0, 1, low_open=True, high_open=True, optional=True)
        number("distill", 0)
        if self.distill and self.sampler != "sandwich":
            raise bad("distill", f"0 with --sampler {self.sampler} (in-place distillation needs --sampler sandwich: its largest path is the teacher)")
        for name, choices in (("sampler", sorted(SAMPLERS)), ("grad_average", ["users", "paths"]), ("optimizer", ["sgd", "adamw"]),
                              ("augment", list(AUGMENTS)), ("distill_features", list(FEATURES)),
                              ("width_sampling", list(WIDTH_SAMPLING)), ("depth_sampling", list(DEPTH_SAMPLING))):
            if getattr(self, name) not in choices:
                raise bad(name, f"one of {choices}")


def changed_settings(recorded: dict, config: TrainConfig) -> list[str]:
    """"--flag old -> new" for each result-changing field where `config` differs from the
    `recorded` config of a checkpoint (a field the checkpoint predates counts as what it was
    trained with: `PREDATED`, else the default)."""
    def plain(v):
        return list(v) if isinstance(v, (tuple, list)) else v

    out = []
    for f in fields(TrainConfig):
        if f.name in RUNTIME_FIELDS:
            continue
        old, new = plain(recorded.get(f.name, PREDATED.get(f.name, f.default))), plain(getattr(config, f.name))
        if old != new:
            out.append(f"--{f.name.replace('_', '-')} {old!r} -> {new!r}")
    return out


def train_config(args: dict) -> TrainConfig:
    """The TrainConfig of parsed flags (keys that are not TrainConfig fields are ignored)."""
    names = {f.name for f in fields(TrainConfig)}
    config = {k: v for k, v in args.items() if k in names}
    config["clip_grad"] = config.get("clip_grad") or None
    return TrainConfig(**config)


def recorded_config(recorded: dict) -> TrainConfig:
    """The TrainConfig a checkpoint's saved `config` describes: fields it predates as it was
    trained (`PREDATED`), else their defaults; keys that are not fields ignored."""
    return train_config({**PREDATED, **recorded})
