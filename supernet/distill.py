"""In-place feature distillation (BigNAS, OFA): the sandwich's largest path teaches the others.

Every path of a sandwich step sees the same images, so the largest path's multi-scale features
are a soft target the smaller paths can match without a separate teacher. Features are matched
where every head and neck type can use them: the backbone's outputs (strides 8-32, the neck's
input) or the neck's outputs. A smaller path's channels are the leading channels of the widest
weights, so it matches the teacher's leading channels; its resolution may be lower, so the
teacher's map is resized (area) to the student's.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FEATURES = ("backbone", "neck")


def feature_distillation(student: list[Tensor], teacher: list[Tensor]) -> Tensor:
    """Mean over levels of the squared error between each student level and the teacher's
    leading channels resized to it, relative to the teacher's mean square: scale-free, so one
    weight fits any width or activation. The teacher is not differentiated."""
    if len(student) != len(teacher):
        raise ValueError(f"feature_distillation: {len(student)} student levels, {len(teacher)} teacher levels")
    losses = []
    for s, t in zip(student, teacher):
        t = t.detach()[:, : s.shape[1]].float()
        if t.shape[-2:] != s.shape[-2:]:
            t = F.adaptive_avg_pool2d(t, s.shape[-2:]) if t.shape[-1] >= s.shape[-1] else F.interpolate(t, size=s.shape[-2:], mode="bilinear")
        losses.append(F.mse_loss(s.float(), t) / t.pow(2).mean().clamp_min(1e-6))
    return torch.stack(losses).mean()


@contextmanager
def capture_features(modules: list[nn.Module]) -> Iterator[dict[str, list[Tensor]]]:
    """While open, `out["features"]` holds the list output of the last of `modules` that ran."""
    out: dict[str, list[Tensor]] = {}

    def keep(module, inputs, output):
        out["features"] = list(output)

    handles = [m.register_forward_hook(keep) for m in modules]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def feature_modules(model: nn.Module, where: str) -> list[nn.Module]:
    """The modules whose outputs are distilled: the backbone, or every neck type."""
    if where == "backbone":
        return [model.backbone]
    if where == "neck":
        return list(model.neck.values())
    raise ValueError(f"`distill_features`: expected one of {list(FEATURES)}, got {where!r}")
