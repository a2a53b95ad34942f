"""What one training run is: its settings, checked once, and how they compare across a resume."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Optional

from .batches import AUGMENTS
from .cli import check_choices, check_number, field_error, option
from .distill import FEATURES
from .errors import TrainError
from .sampler import SAMPLERS
from .space import DEPTH_SAMPLING, NORMS, WIDTH_SAMPLING, SearchSpace

# fields a resumed run may change: they decide where and how fast it runs, or what is evaluated
# on the way, never the weights it ends with
RUNTIME_FIELDS = frozenset({"out", "device", "workers", "eval_every", "ckpt_every", "log_every", "eval_images", "eval_random_archs",
                            "calib_batches", "space"})  # the space is compared by content, not by how it was named
# what a checkpoint that predates a field was trained with, where that is not the field's default today
PREDATED = {"width_sampling": "uniform"}
AMP = ("fp16", "bf16")
# the settings that sample one part of the space, each the `SearchSpace.restrict` argument it passes
RESTRICTIONS = {"train_blocks": "blocks", "train_resolutions": "resolutions", "train_heads": "heads"}


@dataclass
class TrainConfig:
    space: str = option("tiny", "search space: tiny, tiny_one_stage, coco, or a .yaml/.json space file")
    data: Optional[str] = option(None, "COCO 2017 layout root (annotations/, train2017/, val2017/); none: the built-in shapes data")
    train_ann: Optional[str] = option(None, "training annotations JSON (overrides the one under --data)")
    train_images: Optional[str] = option(None, "training images folder (overrides the one under --data)")
    val_ann: Optional[str] = option(None, "validation annotations JSON (overrides the one under --data)")
    val_images: Optional[str] = option(None, "validation images folder (overrides the one under --data)")
    out: str = option("runs/supernet", "run folder: checkpoints, metrics.jsonl, config.yaml")
    steps: Optional[int] = option(None, "training steps; takes precedence over --epochs")
    epochs: int = option(10, "training epochs (when --steps is none)")
    batch_size: int = option(16, "images a step, per process")
    lr: float = option(0.04, "peak learning rate (after the warm-up, then cosine decay)")
    optimizer: str = option("sgd", "sgd (with momentum) or adamw", choices=("sgd", "adamw"))
    momentum: float = option(0.9, "SGD momentum")
    warmup: int = option(100, "linear warm-up steps before the cosine decay")
    weight_decay: float = option(4e-5, "weight decay; not applied to norms and biases")
    amp: Optional[str] = option(None, "mixed precision: fp16 (CUDA, with a gradient scaler; --amp alone), or bf16 (no scaler: "
                                      "A100/H100-class GPUs, or CPUs with bf16 autocast); none: fp32", choices=AMP, const="fp16")
    clip_grad: Optional[float] = option(10.0, "max gradient norm; 0 or none: no clipping")
    ema: Optional[float] = option(None, "keep an EMA of the weights with this decay (e.g. 0.9998); none: off")
    drop_path: float = option(0.0, "stochastic depth rate of the backbone's residual blocks (timm DropPath), 0: off")
    sampler: str = option("uniform", "paths a step: uniform (random), sandwich (the largest, the smallest and random ones), smallest "
                                     "(the smallest and random ones), narrow_twin (each random path and itself at its least widths), "
                                     "fair (every choice equally often)", choices=sorted(SAMPLERS))
    random_paths: int = option(1, "random paths a step, gradients accumulated (sandwich: besides the largest and the smallest)")
    width_sampling: str = option("wide", "how random paths draw widths: uniform, or wide (weight 1..n, narrowest first: the "
                                         "trailing channels only wide paths use get more updates)", choices=WIDTH_SAMPLING)
    depth_sampling: str = option("uniform", "how random paths draw stage depths: uniform, or deep (weight 1..n, shallowest first)",
                                 choices=DEPTH_SAMPLING)
    seed: int = option(0, "seeds weights, sampling and data order")
    workers: int = option(2, "data loader processes")
    eval_every: int = option(0, "evaluate every this many steps; 0: only at the end")
    ckpt_every: int = option(200, "write last.pt every this many steps")
    log_every: int = option(10, "log a metrics.jsonl line every this many steps")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    eval_images: int = option(200, "validation images an evaluation scores (a fixed subset); 0: all")
    eval_random_archs: int = option(2, "random paths evaluated besides the smallest and the largest")
    calib_batches: int = option(8, "BN recalibration batches before each evaluation")
    train_blocks: Optional[tuple[str, ...]] = option(None, "sample only these block types (the structural stage's block, e.g. "
                                                           "ir_k3_e6); none: all", metavar="BLOCK")
    train_resolutions: Optional[tuple[int, ...]] = option(None, "sample only these input resolutions (a region of the space, "
                                                                "e.g. a fine-tune where the search's picks lie); none: all", metavar="PX")
    train_heads: Optional[tuple[str, ...]] = option(None, "sample only these head types (a region, with --train-resolutions); "
                                                          "none: all", metavar="HEAD")
    structure: Optional[str] = option(None, "Arch JSON: sample only paths with its resolution, neck and head types and depths "
                                            "(the modular stage's fine-tune)")
    start_from: Optional[str] = option(None, "supernet checkpoint whose weights training starts from (fine-tuning)")
    distill: float = option(0.0, "in-place distillation weight (--sampler sandwich): the other paths match the largest path's "
                                 "features; 0: off")
    distill_features: str = option("backbone", "with --distill: match the backbone's outputs (the neck's input) or the neck's",
                                    choices=FEATURES)
    grad_average: str = option("users", "with several paths a step: average each weight's gradient over the paths that ran it "
                                        "(users) or over all paths", choices=("users", "paths"))
    augment: str = option("flip", "training augmentation: none, flip (horizontal), scale_crop (flip, then transforms.v2 zoom-out "
                                  "and IoU crop)", choices=AUGMENTS)
    norm: Optional[str] = option(None, "every layer's normalisation: bn (BatchNorm) or gn (GroupNorm over groups of 8 channels: "
                                       "no batch statistics, for small per-GPU batches from scratch); none: the space's (bn in the "
                                       "presets)", choices=NORMS)
    sync_bn: bool = option(False, "under torchrun: BN statistics of the active channels over every rank's batch (small per-GPU "
                                  "batches), not each rank's own")
    skip_unreadable: bool = option(False, "decode every image once at start and leave out those that fail (counted in a "
                                          "warning), instead of stopping at the first")

    def __post_init__(self) -> None:
        """Every field checked once, here, naming its flag: a bad value would otherwise train
        something else silently (a negative clip flips gradients) or fail deep inside timm."""
        def bad(name: str, expected: str) -> TrainError:
            return field_error(TrainError, name, getattr(self, name), expected)

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
        number("drop_path", 0, 1, high_open=True)
        if self.distill and self.sampler != "sandwich":
            raise bad("distill", f"0 with `sampler` {self.sampler} (in-place distillation needs `sampler` sandwich: its largest path is the teacher)")
        check_choices(TrainError, self)


def with_norm(space: SearchSpace, norm: Optional[str]) -> SearchSpace:
    """`space` under `--norm` (none: as it is); TrainError naming the flag and the widths it refuses."""
    if norm is None or norm == space.norm:
        return space
    try:
        return replace(space, norm=norm)
    except ValueError as e:
        raise TrainError(f"`norm` {norm}: {str(e).removeprefix('norm: ')}") from None


def _current(recorded: dict) -> dict:
    """A checkpoint's recorded config under today's field types (amp was a bool: fp16 or off)."""
    if isinstance(recorded.get("amp"), bool):
        recorded = {**recorded, "amp": "fp16" if recorded["amp"] else None}
    return recorded


def changed_settings(recorded: dict, config: TrainConfig) -> list[str]:
    """"`field` old -> new" for each result-changing field where `config` differs from the
    `recorded` config of a checkpoint (a field the checkpoint predates counts as what it was
    trained with: `PREDATED`, else the default)."""
    def plain(v):
        return list(v) if isinstance(v, (tuple, list)) else v

    out, recorded = [], _current(recorded)
    for f in fields(TrainConfig):
        if f.name in RUNTIME_FIELDS:
            continue
        old, new = plain(recorded.get(f.name, PREDATED.get(f.name, f.default))), plain(getattr(config, f.name))
        if old != new:
            out.append(f"`{f.name}` {old!r} -> {new!r}")
    return out


def train_config(args: dict) -> TrainConfig:
    """The TrainConfig of parsed flags (keys that are not TrainConfig fields are ignored)."""
    names = {f.name for f in fields(TrainConfig)}
    config = {k: v for k, v in _current(args).items() if k in names}
    config["clip_grad"] = config.get("clip_grad") or None
    for name in RESTRICTIONS:  # flags and config files give lists
        if config.get(name) is not None:
            config[name] = tuple(config[name])
    return TrainConfig(**config)


def recorded_config(recorded: dict) -> TrainConfig:
    """The TrainConfig a checkpoint's saved `config` describes: fields it predates as it was
    trained (`PREDATED`), else their defaults; keys that are not fields ignored."""
    return train_config({**PREDATED, **recorded})
