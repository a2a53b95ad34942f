"""Elastic layers: plain torch/timm layers whose leading channels can run alone.

Widths are elastic, as in Once-for-All, rather than separate weights per width choice: a width-w
choice uses the first w output (and input) channels of the widest weights, with BatchNorm affine
parameters and running statistics sliced alike. Why: the input width of a layer is the output width
of whatever ran before it (a previous stage's width, a neck width), so separate weights would be
needed for every (input width, output width) pair, multiplying parameters and splitting the
training signal; slicing keeps one weight tensor per layer that every width choice trains.

Each class subclasses the plain layer it stands for (same parameter names and shapes), and runs
the plain layer's own forward when the requested width is its full width. A standalone detector
is built from the same classes at exactly its widths, so it always takes that plain path.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import SEModule, create_act_layer, make_divisible
from torch import Tensor, nn


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` running on the first `x.shape[1]` input and `out_channels` output channels.

    Depthwise convolutions (groups == in == out channels) follow their input width."""

    def forward(self, x: Tensor, out_channels: Optional[int] = None) -> Tensor:
        cin = x.shape[1]
        depthwise = self.groups > 1
        cout = cin if depthwise else (out_channels or self.out_channels)
        if cin == self.in_channels and cout == self.out_channels:
            return super().forward(x)
        weight = self.weight[:cout] if depthwise else self.weight[:cout, :cin]
        bias = None if self.bias is None else self.bias[:cout]
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, cin if depthwise else 1)


class Linear(nn.Linear):
    """`nn.Linear` on the first `x.shape[-1]` inputs and `out_features` outputs."""

    def forward(self, x: Tensor, out_features: Optional[int] = None) -> Tensor:
        fin, fout = x.shape[-1], out_features or self.out_features
        if fin == self.in_features and fout == self.out_features:
            return super().forward(x)
        return F.linear(x, self.weight[:fout, :fin], None if self.bias is None else self.bias[:fout])


class BatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d` over the first `x.shape[1]` channels; running statistics are updated in
    place on that slice only, so channels off the path keep their statistics."""

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        use_batch_stats = self.training or not self.track_running_stats
        momentum = self.momentum if self.momentum is not None else 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as in nn.BatchNorm2d
                momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c] if self.affine else None,
            self.bias[:c] if self.affine else None,
            use_batch_stats,
            momentum,
            self.eps,
        )


class ConvBnAct(nn.Module):
    """Conv -> BN -> activation (or none), elastic in both widths."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: Optional[str] = "relu"):
        super().__init__()
        self.conv = Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = BatchNorm2d(out_ch)
        self.act = create_act_layer(act, inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor, out_channels: Optional[int] = None) -> Tensor:
        return self.act(self.bn(self.conv(x, out_channels)))


def se_channels(channels: int, rd_ratio: float = 0.25, divisor: int = 8) -> int:
    """Squeeze width for `channels`, computed as timm's SEModule does."""
    return make_divisible(channels * rd_ratio, divisor, round_limit=0.0)


class SqueezeExcite(SEModule):
    """timm's SEModule with elastic channels: at width c it squeezes to `se_channels(c)`."""

    def __init__(self, channels: int, rd_ratio: float = 0.25, act: str = "relu"):
        super().__init__(channels, rd_channels=se_channels(channels, rd_ratio), act_layer=act)
        self.rd_ratio = rd_ratio
        self.fc1 = Conv2d(self.fc1.in_channels, self.fc1.out_channels, 1, bias=True)
        self.fc2 = Conv2d(self.fc2.in_channels, self.fc2.out_channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        if c == self.fc2.out_channels:
            return super().forward(x)
        s = self.act(self.bn(self.fc1(x.mean((2, 3), keepdim=True), se_channels(c, self.rd_ratio))))
        return x * self.gate(self.fc2(s, c))


def init_convs(module: nn.Module) -> None:
    """He (fan-out) initialisation of every convolution in `module`, as ResNets use."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def leading_slice(shape: torch.Size | tuple[int, ...]) -> tuple[slice, ...]:
    """Index that takes the first `shape[i]` entries of every dimension."""
    return tuple(slice(0, n) for n in shape)
