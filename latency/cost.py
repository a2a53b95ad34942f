"""FLOPs and parameters of a subnet, counted per op by torch's own FLOP counter and cached.

FLOPs are true floating-point operations (a multiply-add counts as two), as
`torch.utils.flop_counter.FlopCounterMode` counts them over the detector's inference forward at
batch 1 and the arch's resolution: convolutions and matrix products. Element-wise work (batch
norm, activations, upsampling), post-processing (top-k, NMS) and RoIAlign are not counted, as in
published detector FLOPs. An arch's count is the sum over its ops (`ops.py`), each counted once
and cached, so the search pays for the counting once per op, not once per candidate; a test checks
the sum against the count on the whole extracted detector. They are a budget proxy; latency comes
from the table.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from supernet.space import Arch

from .measure import Settings
from .ops import Op, OpContext, arch_ops, op_runner

_SETTINGS = Settings(warmup=0, repeats=1)  # fp32, batch 1, CPU
_OPS: dict[tuple[str, int], tuple[int, int]] = {}
_ARCHS: dict[tuple[str, int], tuple[int, int]] = {}


def count_flops(module: nn.Module, *inputs) -> int:
    """FLOPs of one `module(*inputs)` in eval mode."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module.eval()(*inputs)
    return int(counter.get_total_flops())


def op_cost(op: Op, num_classes: int) -> tuple[int, int]:
    """(FLOPs, parameters) of one op; an op whose runner is not `counted` has neither."""
    key = (op.key, num_classes)
    if key not in _OPS:
        runner = op_runner(op, OpContext(num_classes=num_classes), _SETTINGS)  # seeded: a fixed two-stage proposal count
        _OPS[key] = (count_flops(runner), sum(p.numel() for p in runner.parameters())) if runner.counted else (0, 0)
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
