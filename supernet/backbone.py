"""The backbone: a stride-2 stem and four stages of elastic depth, width and block types."""
from __future__ import annotations

from typing import Iterator, Optional

import torch.nn as nn
from torch import Tensor

from .layers import ConvBnAct, init_convs
from .registry import component
from .space import BackboneArch, BackboneSpace, NUM_NECK_LEVELS, NUM_STAGES


def block_positions(stem_width: int, stages: list[tuple[int, int]]) -> Iterator[tuple[int, int, int, int, int]]:
    """(stage, position, in channels, out channels, stride) of every block, for a stem width and
    (width, depth) per stage: the one place that says how widths chain and where strides are."""
    in_ch = stem_width
    for s, (width, depth) in enumerate(stages):
        for i in range(depth):
            yield s, i, in_ch, width, block_stride(i)
            in_ch = width


def block_stride(position: int) -> int:
    """A stage's first block halves the resolution; the others keep it."""
    return 2 if position == 0 else 1


def stage_sides(resolution: int) -> tuple[int, ...]:
    """Sides of the stem's output and of each stage's output at an input resolution (every
    stride-2 layer is a conv or pool with padding k // 2, odd k): `stage_sides(r)[s]` is the
    input side of stage s, `[-NUM_NECK_LEVELS:]` the neck's levels."""
    sides = [(resolution - 1) // 2 + 1]
    for _ in range(NUM_STAGES):
        sides.append((sides[-1] - 1) // 2 + 1)
    return tuple(sides)


def block_input_side(resolution: int, stage: int, position: int) -> int:
    """The input side of block `position` of `stage`: the stage's input, or its output after the first block."""
    return stage_sides(resolution)[stage + (block_stride(position) == 1)]


class Backbone(nn.Module):
    """Built from a `BackboneSpace` at its widest widths and deepest depths.

    Each block position holds one candidate per block type in an `nn.ModuleDict` keyed by the
    type's name, so a state-dict key names the block type it belongs to and does not depend on
    the order of the space's lists. `forward` runs the first `depth` positions of each stage with
    the arch's block type at each; nothing else is computed. Built from the space containing one arch (see
    `SearchSpace.containing`) with `path` set, each position holds only the path's block: the
    standalone backbone of that architecture.
    """

    def __init__(self, space: BackboneSpace, act: str = "relu", drop_path: float = 0.0, path: Optional[BackboneArch] = None):
        super().__init__()
        self.stem = ConvBnAct(3, max(space.stem_widths), 3, 2, act=act)
        widths = [(max(s.widths), max(s.depths)) for s in space.stages]
        self.stages = nn.ModuleList(nn.ModuleList() for _ in space.stages)
        for s, i, in_ch, out_ch, stride in block_positions(max(space.stem_widths), widths):
            names = space.stages[s].blocks if path is None else (path.stages[s].blocks[i],)
            self.stages[s].append(nn.ModuleDict({name: component("block", name)(in_ch, out_ch, stride, act=act, drop_path=drop_path) for name in names}))
        self.out_channels = [max(s.widths) for s in space.stages[-NUM_NECK_LEVELS:]]
        init_convs(self)

    def forward(self, x: Tensor, arch: BackboneArch) -> list[Tensor]:
        """Features of the last three stages (strides 8, 16, 32)."""
        x = self.stem(x, arch.stem_width)
        features = []
        for positions, stage in zip(self.stages, arch.stages):
            for position, block_type in zip(positions, stage.blocks):
                x = position[block_type](x, stage.width)
            features.append(x)
        return features[-NUM_NECK_LEVELS:]
