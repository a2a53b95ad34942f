"""Keeping an optimizer step on the sampled path.

Single-path training must leave the weights off the path untouched. Candidates off the path are
never called, so their `.grad` is None and torch's optimizers skip them. Elastic layers are the
catch: a narrow path uses a leading slice of a wider weight, autograd gives the rest a zero (not
None) gradient, and weight decay or momentum would still move it. `preserve_off_path` restores
that part, and the matching optimizer state, after the step.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence, Union

import torch

from .layers import leading_slice
from .space import Arch


@contextmanager
def preserve_off_path(model: torch.nn.Module, archs: Union[Arch, Sequence[Arch]], optimizer: torch.optim.Optimizer,
                      named_params: Optional[Sequence[tuple[str, torch.nn.Parameter]]] = None) -> Iterator[None]:
    """Around `optimizer.step()` (or `scaler.step(optimizer)`): every parameter element off the
    path(s) of `archs` (one arch, or the several whose gradients were accumulated), and its
    optimizer state, is bit-identical afterwards.

    `model` is the `Supernet` (unwrap DDP first). Parameters with a gradient are protected where
    they are not fully on a path; state tensors created by this step (e.g. the first momentum
    buffer) are zeroed off the paths, which is what they would hold had the step not seen them.
    Use `optimizer.zero_grad(set_to_none=True)` so fully unused parameters have no gradient.
    `named_params`: `model.named_parameters()` listed once by a caller that steps many times.
    """
    archs = [archs] if isinstance(archs, Arch) else list(archs)
    shapes = [model.path_shapes(a) for a in archs]
    saved = []
    for name, p in named_params if named_params is not None else model.named_parameters():
        used = [s[name] for s in shapes if name in s]
        if p.grad is None or tuple(p.shape) in used:
            continue
        mask = torch.zeros(p.shape, dtype=torch.bool, device=p.device)
        for shape in used:
            mask[leading_slice(shape)] = True
        state = optimizer.state.get(p, {})
        before = {k: v.detach().clone() for k, v in state.items() if torch.is_tensor(v) and v.shape == p.shape}
        saved.append((p, mask, p.detach().clone(), before))
    with torch.no_grad():
        yield
        for p, mask, old, before in saved:
            p.copy_(torch.where(mask, p, old))
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.copy_(torch.where(mask, value, before.get(key, torch.zeros_like(value))))
