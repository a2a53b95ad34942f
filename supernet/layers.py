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

import math
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.layers import SEModule, create_act_layer, make_divisible
from torch import Tensor, nn

from .space import GROUP_CHANNELS


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


class SyncBatchNorm2d(BatchNorm2d):
    """`BatchNorm2d` whose training statistics are those of the active slice over every rank's
    batch (per-GPU batches of 4-8 images train BN on too few otherwise). torch's SyncBatchNorm
    cannot run a slice of its channels and runs on GPUs only; this one reduces the slice's sums
    with a differentiable all-reduce, so it runs wherever the process group does (gloo on CPU
    too). Passes without gradients (BN recalibration: each rank on the same batches) stay local.
    Same parameters and buffers as `BatchNorm2d`, so checkpoints are interchangeable."""

    def __init__(self, num_features: int, process_group: Optional[object] = None, **kwargs):
        super().__init__(num_features, **kwargs)
        self.process_group = process_group

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and torch.is_grad_enabled() and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1):
            return super().forward(x)
        c = x.shape[1]
        stats = torch.cat([x.float().sum((0, 2, 3)), x.float().square().sum((0, 2, 3)), x.new_full((1,), x.numel() / c, dtype=torch.float32)])
        stats = _AllReduceSum.apply(stats, self.process_group)
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean.square()).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean[:c].mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var[:c].mul_(1 - m).add_(var.detach() * (count / (count - 1).clamp_min(1)), alpha=m)
        y = (x.float() - mean[:, None, None]) * torch.rsqrt(var + self.eps)[:, None, None]
        if self.affine:
            y = y * self.weight[:c, None, None] + self.bias[:c, None, None]
        return y.to(x.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks that gradients flow through (each rank's sum depends on every rank's
    input, so the gradient is summed over ranks too); torch.distributed.nn's is deprecated."""

    @staticmethod
    def forward(ctx, x: Tensor, group: Optional[object]) -> Tensor:
        ctx.group = group
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def sync_batchnorm(module: nn.Module, process_group: Optional[object] = None) -> nn.Module:
    """`module` with every `BatchNorm2d` replaced by a `SyncBatchNorm2d` holding the same
    parameters and buffers (the optimizer's references stay valid), as torch's
    `convert_sync_batchnorm` does for its own; returns the module (replaced if it is one)."""
    if type(module) is BatchNorm2d:
        synced = SyncBatchNorm2d(module.num_features, process_group, eps=module.eps, momentum=module.momentum,
                                 affine=module.affine, track_running_stats=module.track_running_stats)
        for name, p in module.named_parameters(recurse=False):
            setattr(synced, name, p)
        for name, b in module.named_buffers(recurse=False):
            setattr(synced, name, b)
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, sync_batchnorm(child, process_group))
    return module


class GroupNorm2d(nn.GroupNorm):
    """GroupNorm over groups of `GROUP_CHANNELS` channels of the first `x.shape[1]` channels: a
    narrower path keeps the first groups of the wider ones, so every width normalises a channel
    with the same neighbours. No running statistics: nothing to recalibrate after a path changes,
    nothing to synchronise across GPUs, whatever the batch. A width that is not a multiple of the
    group (a bottleneck's quarter width) takes the largest group size that divides it."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(num_channels // _group_size(num_channels), num_channels, eps)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        if c == self.num_channels:  # the plain layer (what a standalone detector runs, and exports)
            return super().forward(x)
        return F.group_norm(x, c // _group_size(c), self.weight[:c], self.bias[:c], self.eps)


def _group_size(channels: int) -> int:
    return math.gcd(channels, GROUP_CHANNELS)


def group_norm(module: nn.Module) -> nn.Module:
    """`module` with every `BatchNorm2d` replaced by a `GroupNorm2d` of its width (affine
    parameters start as GroupNorm's: ones and zeros); returns the module (replaced if it is one)."""
    if type(module) is BatchNorm2d:
        return GroupNorm2d(module.num_features, module.eps).to(device=module.weight.device, dtype=module.weight.dtype)
    for name, child in module.named_children():
        module.add_module(name, group_norm(child))
    return module


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
