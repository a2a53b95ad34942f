"""FLOPs and parameters of a subnet, counted by fvcore and cached by arch hash.

FLOPs follow fvcore's convention (one fused multiply-add counts as one) over the detector's
inference forward at batch 1 and the arch's resolution: convolutions, linear layers, batch norm
and upsampling. Post-processing (top-k, NMS) and RoIAlign have no fvcore counter and are left
out, as in published detector FLOPs. They are a budget proxy; latency comes from the table.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis

from supernet.space import Arch

from .ops import OpContext, detector


class _Flat(nn.Module):
    """The detector with a tuple of tensors out, as fvcore's tracer needs."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        return tuple(t for det in self.module(*args) for t in det.values())


def count_flops(module: nn.Module, *inputs) -> int:
    """fvcore FLOPs of `module(*inputs)` in eval mode, warnings about uncounted ops silenced."""
    module = module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent control flow
        analysis = FlopCountAnalysis(module, inputs).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())


_CACHE: dict[tuple[str, int], tuple[int, int]] = {}


def _count(arch: Arch, num_classes: int) -> tuple[int, int]:
    key = (arch.hash(), num_classes)
    if key not in _CACHE:
        with torch.random.fork_rng():  # fixed weights (so the two-stage proposal count and FLOPs are fixed), caller's RNG untouched
            torch.manual_seed(0)
            det = detector(arch, OpContext(num_classes=num_classes))
            x = torch.rand(1, 3, arch.resolution, arch.resolution)
            _CACHE[key] = (count_flops(_Flat(det), x), sum(p.numel() for p in det.parameters()))
    return _CACHE[key]


def flops(arch: Arch, num_classes: int = 80) -> int:
    """Inference FLOPs of `arch`'s standalone detector at batch 1 and its own resolution."""
    return _count(arch, num_classes)[0]


def params(arch: Arch, num_classes: int = 80) -> int:
    """Parameters of `arch`'s standalone detector."""
    return _count(arch, num_classes)[1]
