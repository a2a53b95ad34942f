"""Keeping an optimizer step on the sampled path.

Single-path training must leave the weights off the path untouched. Candidates off the path are
never called, so their `.grad` is None and torch's optimizers skip them. Elastic layers are the
catch: a narrow path uses a leading slice of a wider weight, autograd gives the rest a zero (not
None) gradient, and weight decay or momentum would still move it. `preserve_off_path` restores
that part, and the matching optimizer state, after the step.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from .layers import leading_slice
from .space import Arch


@contextmanager
def preserve_off_path(model: torch.nn.Module, arch: Arch, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Around `optimizer.step()` (or `scaler.step(optimizer)`): every parameter element off `arch`'s
    path, and its optimizer state, is bit-identical afterwards.

    `model` is the `Supernet` (unwrap DDP first). Parameters with a gradient are protected where
    they are not fully on the path; state tensors created by this step (e.g. the first momentum
    buffer) are zeroed off the path, which is what they would hold had the step not seen them.
    Use `optimizer.zero_grad(set_to_none=True)` so fully unused parameters have no gradient.
    """
    shapes = model.path_shapes(arch)
    saved = []
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        shape = shapes.get(name)
        if shape == tuple(p.shape):
            continue
        region = leading_slice(shape) if shape is not None else None
        state = optimizer.state.get(p, {})
        before = {k: v.detach().clone() for k, v in state.items() if torch.is_tensor(v) and v.shape == p.shape}
        saved.append((p, region, p.detach().clone(), before))
    with torch.no_grad():
        yield
        for p, region, old, before in saved:
            _restore(p, old, region)
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape:
                    _restore(value, before.get(key, torch.zeros_like(value)), region)


def _restore(current: torch.Tensor, old: torch.Tensor, region) -> None:
    """Set `current` to `old` everywhere but `region` (None: everywhere)."""
    if region is not None:
        old[region] = current[region]
    current.copy_(old)
