"""Backbone block candidates, registered by name, same constructor and forward signature each.

Every block is built at its widest widths in the supernet and at its exact widths in a standalone
detector; `forward(x, out_channels)` runs it on `x.shape[1]` input and `out_channels` output
channels, with inner widths (expansion, bottleneck, squeeze) derived from those the same way the
constructor derives them, so both builds compute the same function on the same leading weights.
"""
from __future__ import annotations

from functools import partial
import torch.nn as nn
from timm.layers import DropPath, create_act_layer, make_divisible
from torch import Tensor

from .layers import ConvBnAct, SqueezeExcite
from .registry import register_block


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0 else nn.Identity()


class InvertedResidual(nn.Module):
    """MobileNetV2/EfficientNet block: 1x1 expand, kxk depthwise, optional squeeze-excite, 1x1 project."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, kernel: int, expand: int, se: bool, act: str = "relu", drop_path: float = 0.0):
        super().__init__()
        self.expand = expand
        mid = make_divisible(in_ch * expand)
        self.conv_pw = ConvBnAct(in_ch, mid, 1, act=act)
        self.conv_dw = ConvBnAct(mid, mid, kernel, stride, groups=mid, act=act)
        self.se = SqueezeExcite(mid, act=act) if se else nn.Identity()
        self.conv_pwl = ConvBnAct(mid, out_ch, 1, act=None)
        self.has_skip = stride == 1 and in_ch == out_ch
        self.drop_path = _drop_path(drop_path)
        if self.has_skip:
            nn.init.zeros_(self.conv_pwl.bn.weight)

    def forward(self, x: Tensor, out_channels: int) -> Tensor:
        mid = make_divisible(x.shape[1] * self.expand)
        y = self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x, mid))), out_channels)
        return x + self.drop_path(y) if self.has_skip else y


class _Residual(nn.Module):
    """ResNet shortcut handling shared by the basic and bottleneck blocks."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: str, drop_path: float):
        super().__init__()
        self.shortcut = ConvBnAct(in_ch, out_ch, 1, stride, act=None) if stride != 1 or in_ch != out_ch else None
        self.act = create_act_layer(act, inplace=True)
        self.drop_path = _drop_path(drop_path)

    def merge(self, x: Tensor, y: Tensor, out_channels: int) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x, out_channels)
        return self.act(skip + self.drop_path(y))


class BasicBlock(_Residual):
    """ResNet basic block: two 3x3 convs."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: str = "relu", drop_path: float = 0.0):
        super().__init__(in_ch, out_ch, stride, act, drop_path)
        self.conv1 = ConvBnAct(in_ch, out_ch, 3, stride, act=act)
        self.conv2 = ConvBnAct(out_ch, out_ch, 3, act=None)
        nn.init.zeros_(self.conv2.bn.weight)

    def forward(self, x: Tensor, out_channels: int) -> Tensor:
        return self.merge(x, self.conv2(self.conv1(x, out_channels), out_channels), out_channels)


def bottleneck_width(out_ch: int) -> int:
    return make_divisible(out_ch / 4)


class Bottleneck(_Residual):
    """ResNet bottleneck block: 1x1 reduce to a quarter, 3x3, 1x1 expand."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: str = "relu", drop_path: float = 0.0):
        super().__init__(in_ch, out_ch, stride, act, drop_path)
        mid = bottleneck_width(out_ch)
        self.conv1 = ConvBnAct(in_ch, mid, 1, act=act)
        self.conv2 = ConvBnAct(mid, mid, 3, stride, act=act)
        self.conv3 = ConvBnAct(mid, out_ch, 1, act=None)
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: Tensor, out_channels: int) -> Tensor:
        mid = bottleneck_width(out_channels)
        return self.merge(x, self.conv3(self.conv2(self.conv1(x, mid), mid), out_channels), out_channels)


for _k in (3, 5, 7):
    for _e in (3, 6):
        for _se in (False, True):
            register_block(f"ir_k{_k}_e{_e}{'_se' if _se else ''}", partial(InvertedResidual, kernel=_k, expand=_e, se=_se))
register_block("basic", BasicBlock)
register_block("bottleneck", Bottleneck)
