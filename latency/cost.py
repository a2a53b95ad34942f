"""FLOPs and parameters of a subnet, counted by fvcore per op and cached.

FLOPs follow fvcore's convention (one fused multiply-add counts as one) over the detector's
inference forward at the table's batch size 1 and the arch's resolution: convolutions, linear
layers, batch norm and upsampling. Post-processing (top-k, NMS) and RoIAlign have no fvcore
counter and are left out, as in published detector FLOPs. An arch's count is the sum over its ops
(`ops.py`), each counted once and cached, so the search pays for fvcore's tracing once per op,
not once per candidate; a test checks the sum against fvcore on the whole extracted detector.
They are a budget proxy; latency comes from the table.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis

from supernet.space import Arch

from .measure import Settings
from .ops import Op, OpContext, arch_ops, op_runner

_SETTINGS = Settings(warmup=0, repeats=1)  # fp32, batch 1, CPU
_OPS: dict[tuple[str, int], tuple[int, int]] = {}
_ARCHS: dict[tuple[str, int], tuple[int, int]] = {}


def count_flops(module: nn.Module, *inputs) -> int:
    """fvcore FLOPs of `module(*inputs)` in eval mode, warnings about uncounted ops silenced."""
    module = module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent control flow
        analysis = FlopCountAnalysis(module, inputs).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())


class _Flat(nn.Module):
    """A runner (or detector) with a flat tuple of tensors out, as fvcore's tracer needs."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args) -> tuple[torch.Tensor, ...]:
        return tuple(_tensors(self.module(*args)))


def _tensors(out):
    if isinstance(out, torch.Tensor):
        yield out
    else:
        for x in out.values() if isinstance(out, dict) else out:
            yield from _tensors(x)


def op_cost(op: Op, num_classes: int) -> tuple[int, int]:
    """(FLOPs, parameters) of one op; an op whose runner is not `counted` has neither."""
    key = (op.key, num_classes)
    if key not in _OPS:
        runner = op_runner(op, OpContext(num_classes=num_classes), _SETTINGS)  # seeded: a fixed two-stage proposal count
        _OPS[key] = (count_flops(_Flat(runner), torch.zeros(1)), sum(p.numel() for p in runner.parameters())) if runner.counted else (0, 0)
    return _OPS[key]


def clear_cache() -> None:
    """Forget every counted op and arch (a benchmark timing the counting from cold wants this)."""
    _OPS.clear()
    _ARCHS.clear()


def _count(arch: Arch, num_classes: int) -> tuple[int, int]:
    key = (arch.hash(), num_classes)
    if key not in _ARCHS:
        costs = [op_cost(op, num_classes) for op in arch_ops(arch)]
        _ARCHS[key] = (sum(c[0] for c in costs), sum(c[1] for c in costs))
    return _ARCHS[key]


def flops(arch: Arch, num_classes: int = 80) -> int:
    """Inference FLOPs of `arch`'s standalone detector at batch 1 and its own resolution."""
    return _count(arch, num_classes)[0]


def params(arch: Arch, num_classes: int = 80) -> int:
    """Parameters of `arch`'s standalone detector."""
    return _count(arch, num_classes)[1]
