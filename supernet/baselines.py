"""Hand-designed detectors expressed as Archs of a search space.

A searched detector is only worth something next to the hand-designed ones it should beat, trained
and measured the same way. Each baseline here is the recipe of a known detector (its block, stage
depths and widths, neck and head) mapped onto a space: every number takes the space's nearest
choice (on a log scale, ties to the smaller), and the resolution is the space's middle one for all
baselines alike. So `baseline("resnet18_fpn_retinanet", SearchSpace.preset("coco"))` is a
ResNet-18-class RetinaNet at coco widths, and the same name in `tiny` its CPU-sized miniature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .space import Arch, BackboneArch, HeadArch, NeckArch, SearchSpace, StageArch

PREFIX = "baseline:"


@dataclass(frozen=True)
class Recipe:
    description: str
    block: str
    stem: int
    depths: tuple[int, int, int, int]  # blocks at strides 4, 8, 16, 32
    widths: tuple[int, int, int, int]
    neck: tuple[str, int, int]  # type, width, repeats
    head: tuple[str, int, int]  # type, width, convs


RECIPES: dict[str, Recipe] = {
    "resnet18_fpn_retinanet": Recipe(
        "ResNet-18 (basic blocks) + FPN + RetinaNet head (Lin et al., 2017)",
        "basic", 64, (2, 2, 2, 2), (64, 128, 256, 512), ("fpn", 256, 1), ("retinanet", 256, 4)),
    "resnet18_fpn_faster_rcnn": Recipe(
        "ResNet-18 (basic blocks) + FPN + two-stage RPN and RoI head (Faster R-CNN, Ren et al., 2015)",
        "basic", 64, (2, 2, 2, 2), (64, 128, 256, 512), ("fpn", 256, 1), ("two_stage", 256, 2)),
    "mobilenetv2_fpn_fcos": Recipe(
        "MobileNetV2 (inverted residuals k3 e6) + FPN + FCOS head (Tian et al., 2019), a mobile one-stage detector",
        "ir_k3_e6", 32, (2, 3, 7, 4), (24, 32, 96, 320), ("fpn", 96, 1), ("fcos", 96, 2)),
    "efficientdet_d0_like": Recipe(
        "EfficientNet-B0-like (inverted residuals k3 e6 + squeeze-excite) + BiFPN x3 + RetinaNet-style head (EfficientDet-D0)",
        "ir_k3_e6_se", 32, (3, 2, 6, 5), (24, 40, 112, 320), ("bifpn", 64, 3), ("retinanet", 64, 3)),
}


def nearest(choices: Sequence[int], target: int) -> int:
    """The choice closest to `target` in ratio (log scale); ties go to the smaller."""
    return min(sorted(choices), key=lambda c: abs(math.log(c / target)))


def baseline(name: str, space: SearchSpace) -> Arch:
    """The arch of baseline `name` in `space`; ValueError when the space lacks its block, neck or
    head type (a baseline is never silently turned into another detector)."""
    name = name.removeprefix(PREFIX)
    if name not in RECIPES:
        raise ValueError(f"baseline {name!r}: unknown; expected one of {sorted(RECIPES)}")
    r = RECIPES[name]
    stages = []
    for i, (ss, depth, width) in enumerate(zip(space.backbone.stages, r.depths, r.widths)):
        if r.block not in ss.blocks:
            raise ValueError(f"baseline {name}: block {r.block!r} is not a choice of stage {i} in this space ({list(ss.blocks)})")
        stages.append(StageArch(nearest(ss.widths, width), (r.block,) * nearest(ss.depths, depth)))
    for part, kind, allowed in (("neck", r.neck[0], space.neck.types), ("head", r.head[0], space.head.types)):
        if kind not in allowed:
            raise ValueError(f"baseline {name}: {part} type {kind!r} is not a choice of this space ({list(allowed)})")
    resolutions = sorted(space.resolutions)
    return space.validate(Arch(
        resolution=resolutions[len(resolutions) // 2],
        backbone=BackboneArch(nearest(space.backbone.stem_widths, r.stem), tuple(stages)),
        neck=NeckArch(r.neck[0], nearest(space.neck.widths, r.neck[1]), nearest(space.choices(("neck", "repeats"), {"neck.type": r.neck[0]}), r.neck[2])),
        head=HeadArch(r.head[0], nearest(space.head.widths, r.head[1]), nearest(space.choices(("head", "num_convs"), {"head.type": r.head[0]}), r.head[2])),
    ))


def baselines(space: SearchSpace) -> dict[str, Arch]:
    """Every baseline that `space` can express, by name."""
    out = {}
    for name in RECIPES:
        try:
            out[name] = baseline(name, space)
        except ValueError:
            continue
    return out
