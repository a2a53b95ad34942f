"""BatchNorm recalibration: re-estimate the running statistics of one path before evaluating it.

A supernet's BN statistics are running averages over all the paths trained, with their varied
widths and inputs, so they do not match any single path; evaluating a subnet with them badly
underestimates it (SPOS, OFA). Re-estimating the path's statistics on a few training batches with
a cumulative average fixes that at the cost of a few forward passes.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .data import to_model_input
from .space import Arch


@torch.no_grad()
def recalibrate_bn(model: nn.Module, arch: Optional[Arch], loader: Iterable, batches: int, device: torch.device | str) -> None:
    """Reset and re-estimate the running statistics of the BN layers on `arch`'s path from the
    first `batches` batches of `loader` (cumulative average, no gradients).

    `model` is a `Supernet` (unwrap DDP first) or a standalone `Detector` (`arch` None or its
    own). A BN is on the path when it runs, and its used part is the leading `x.shape[1]`
    channels it runs at: a forward pre-hook resets exactly that slice on the first call, so BN
    layers off the path, and the channels a narrow path does not use, stay bit-identical. During
    the passes the model is in eval mode with only its BN layers in train mode: the statistics
    are those of inference (no DropPath, no training-only branches) and no targets are needed.
    Every module's mode and every BN's momentum are restored afterwards; `num_batches_tracked`
    counts the recalibration passes on top of its previous value, as training passes would.
    """
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise ValueError(f"batches: expected a positive integer, got {batches!r}")
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:  # GroupNorm (`SearchSpace.norm`): no statistics depend on the path
        return
    modes = [(m, m.training) for m in model.modules()]
    saved = {bn: (bn.momentum, int(bn.num_batches_tracked)) for bn in norms}
    seen: set[nn.Module] = set()

    def reset_on_first_call(bn: _BatchNorm, inputs: tuple[torch.Tensor, ...]) -> None:
        if bn in seen:
            return
        seen.add(bn)
        used = inputs[0].shape[1]
        bn.running_mean[:used].zero_()
        bn.running_var[:used].fill_(1.0)
        bn.num_batches_tracked.zero_()
        bn.momentum = None  # cumulative moving average

    hooks = [bn.register_forward_pre_hook(reset_on_first_call) for bn in norms]
    model.eval()
    for bn in norms:
        bn.train()
    ran = 0
    try:
        for images, _ in loader:
            model(to_model_input(images, device), arch=arch)
            ran += 1
            if ran == batches:
                break
    finally:
        for hook in hooks:
            hook.remove()
        for bn, (momentum, count) in saved.items():
            bn.momentum = momentum
            if bn in seen:
                bn.num_batches_tracked.fill_(count + int(bn.num_batches_tracked))
        for m, training in modes:
            m.training = training
    if ran == 0:
        raise ValueError("loader: yielded no batches to recalibrate BatchNorm with")
