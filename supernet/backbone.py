"""The backbone: a stride-2 stem and four stages of elastic depth, width and block types."""
from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from .blocks import BLOCKS
from .layers import ConvBnAct, init_convs
from typing import Optional

from .space import NUM_NECK_LEVELS, BackboneArch, BackboneSpace


class Backbone(nn.Module):
    """Built from a `BackboneSpace` at its widest widths and deepest depths.

    Each block position holds one candidate per block type in an `nn.ModuleDict` keyed by the
    type's name, so a state-dict key names the block type it belongs to and does not depend on
    the order of the space's lists. `forward` runs the first `depth` positions of each stage with
    the arch's block type at each; nothing else is computed. Built from a one-point space (see
    `SearchSpace.point`) with `path` set, each position holds only the path's block: the
    standalone backbone of that architecture.
    """

    def __init__(self, space: BackboneSpace, act: str = "relu", drop_path: float = 0.0, path: Optional[BackboneArch] = None):
        super().__init__()
        in_ch = max(space.stem_widths)
        self.stem = ConvBnAct(3, in_ch, 3, 2, act=act)
        self.stages = nn.ModuleList()
        for s, stage in enumerate(space.stages):
            out_ch = max(stage.widths)
            positions = nn.ModuleList()
            for i in range(max(stage.depths)):
                names = stage.blocks if path is None else (path.stages[s].blocks[i],)
                positions.append(
                    nn.ModuleDict({name: BLOCKS[name](in_ch, out_ch, 2 if i == 0 else 1, act=act, drop_path=drop_path) for name in names})
                )
                in_ch = out_ch
            self.stages.append(positions)
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
