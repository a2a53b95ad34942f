"""Necks: FPN (top-down), PAN (top-down then bottom-up) and BiFPN-style weighted fusion.

Each takes the backbone's three features (strides 8, 16, 32, elastic channels) and returns three
features of the arch's neck width. `repeats` stacks cells (PAN, BiFPN, which declare it as a
knob); the first `repeats` cells of the widest build run, as with elastic depth.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_act_layer
from torch import Tensor

from .layers import BatchNorm2d, Conv2d, ConvBnAct, init_convs
from .registry import register_neck


def _up(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class _Laterals(nn.Module):
    """1x1 conv + BN projecting each backbone level to the neck width."""

    def __init__(self, in_channels: list[int], width: int):
        super().__init__()
        self.convs = nn.ModuleList(ConvBnAct(c, width, 1, act=None) for c in in_channels)

    def forward(self, features: list[Tensor], width: int) -> list[Tensor]:
        return [conv(f, width) for conv, f in zip(self.convs, features)]


class FPN(nn.Module):
    """Feature Pyramid Network: laterals, top-down sum with nearest upsampling, 3x3 output convs."""

    knobs: tuple[str, ...] = ()  # one top-down pass: nothing to repeat

    def __init__(self, in_channels: list[int], width: int, act: str = "relu"):
        super().__init__()
        self.lateral = _Laterals(in_channels, width)
        self.output = nn.ModuleList(ConvBnAct(width, width, 3, act=act) for _ in in_channels)
        init_convs(self)

    def forward(self, features: list[Tensor], width: int) -> list[Tensor]:
        lat = self.lateral(features, width)
        outs = [lat[-1]]
        for x in reversed(lat[:-1]):
            outs.insert(0, x + _up(outs[0], x))
        return [conv(p, width) for conv, p in zip(self.output, outs)]


class PANCell(nn.Module):
    """One PANet cell on same-width levels: top-down fusion, then bottom-up with stride-2 convs."""

    def __init__(self, width: int, levels: int, act: str):
        super().__init__()
        self.td = nn.ModuleList(ConvBnAct(width, width, 3, act=act) for _ in range(levels - 1))
        self.down = nn.ModuleList(ConvBnAct(width, width, 3, 2, act=act) for _ in range(levels - 1))
        self.bu = nn.ModuleList(ConvBnAct(width, width, 3, act=act) for _ in range(levels - 1))

    def forward(self, x: list[Tensor], width: int) -> list[Tensor]:
        td = [x[-1]]
        for i in range(len(x) - 2, -1, -1):
            td.insert(0, self.td[i](x[i] + _up(td[0], x[i]), width))
        out = [td[0]]
        for i in range(1, len(x)):
            out.append(self.bu[i - 1](td[i] + self.down[i - 1](out[-1], width), width))
        return out


class _CellStack(nn.Module):
    """Laterals, then `repeats` cells of `Cell` (the first `repeats` of the widest build run)."""

    Cell: type[nn.Module]
    knobs: tuple[str, ...] = ("repeats",)

    def __init__(self, in_channels: list[int], width: int, act: str = "relu", repeats: int = 1):
        super().__init__()
        self.lateral = _Laterals(in_channels, width)
        self.cells = nn.ModuleList(self.Cell(width, len(in_channels), act) for _ in range(repeats))
        init_convs(self)

    def forward(self, features: list[Tensor], width: int, repeats: int = 1) -> list[Tensor]:
        x = self.lateral(features, width)
        for cell in self.cells[:repeats]:
            x = cell(x, width)
        return x


class PAN(_CellStack):
    Cell = PANCell


class SeparableConvBn(nn.Module):
    """EfficientDet's fusion conv: activation, 3x3 depthwise, 1x1 pointwise, BN."""

    def __init__(self, width: int, act: str):
        super().__init__()
        self.act = create_act_layer(act, inplace=False)
        self.dw = Conv2d(width, width, 3, padding=1, groups=width, bias=False)
        self.pw = Conv2d(width, width, 1, bias=False)
        self.bn = BatchNorm2d(width)

    def forward(self, x: Tensor, width: int) -> Tensor:
        return self.bn(self.pw(self.dw(self.act(x)), width))


class WeightedFusion(nn.Module):
    """Fast normalised fusion (EfficientDet): sum_i relu(w_i) x_i / (sum_i relu(w_i) + eps)."""

    def __init__(self, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, xs: list[Tensor]) -> Tensor:
        w = F.relu(self.weight)
        w = w / (w.sum() + 1e-4)
        return sum(wi * x for wi, x in zip(w, xs))


class BiFPNCell(nn.Module):
    """One BiFPN cell: top-down then bottom-up, each node a weighted fusion and a separable conv;
    inner levels also take their own input in the bottom-up pass (the cross-scale skip)."""

    def __init__(self, width: int, levels: int, act: str):
        super().__init__()
        self.td_fuse = nn.ModuleList(WeightedFusion(2) for _ in range(levels - 1))
        self.td_conv = nn.ModuleList(SeparableConvBn(width, act) for _ in range(levels - 1))
        self.bu_fuse = nn.ModuleList(WeightedFusion(2 if i == levels - 1 else 3) for i in range(1, levels))
        self.bu_conv = nn.ModuleList(SeparableConvBn(width, act) for _ in range(levels - 1))

    def forward(self, x: list[Tensor], width: int) -> list[Tensor]:
        td = [x[-1]]
        for i in range(len(x) - 2, -1, -1):
            td.insert(0, self.td_conv[i](self.td_fuse[i]([x[i], _up(td[0], x[i])]), width))
        out = [td[0]]
        for i in range(1, len(x)):
            down = F.max_pool2d(out[-1], 3, 2, 1)
            inputs = [x[i], down] if i == len(x) - 1 else [x[i], td[i], down]
            out.append(self.bu_conv[i - 1](self.bu_fuse[i - 1](inputs), width))
        return out


class BiFPN(_CellStack):
    Cell = BiFPNCell


register_neck("fpn", FPN)
register_neck("pan", PAN)
register_neck("bifpn", BiFPN)
