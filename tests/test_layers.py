import pytest
import torch
from timm.layers import SEModule

from supernet.layers import BatchNorm2d, Conv2d, Linear, SqueezeExcite, leading_slice, se_channels


def cut(src: torch.nn.Module, dst: torch.nn.Module) -> torch.nn.Module:
    """Copy the leading slice of every tensor of `src` into `dst` (what extract does)."""
    with torch.no_grad():
        state = src.state_dict()
        for name, t in dst.state_dict().items():
            t.copy_(state[name][leading_slice(t.shape)])
    return dst


@pytest.mark.parametrize("groups", [1, "depthwise"])
def test_conv_uses_leading_channels(groups):
    torch.manual_seed(0)
    wide = Conv2d(16, 16, 3, padding=1, groups=16 if groups == "depthwise" else 1, bias=True)
    x = torch.randn(2, 8, 10, 10)
    out = 8 if groups == "depthwise" else 12
    plain = cut(wide, torch.nn.Conv2d(8, out, 3, padding=1, groups=8 if groups == "depthwise" else 1, bias=True))
    assert torch.allclose(wide(x, out), plain(x), atol=1e-6)
    full = torch.randn(1, 16, 4, 4)  # at full width it is the plain layer
    assert torch.equal(wide(full), torch.nn.Conv2d.forward(wide, full))


def test_linear_uses_leading_features():
    torch.manual_seed(0)
    wide, x = Linear(20, 10), torch.randn(3, 12)
    assert torch.allclose(wide(x, 6), cut(wide, torch.nn.Linear(12, 6))(x), atol=1e-6)


def test_batchnorm_slice_updates_only_its_running_stats():
    torch.manual_seed(0)
    bn = BatchNorm2d(16).train()
    mean0, var0 = bn.running_mean.clone(), bn.running_var.clone()
    x = torch.randn(4, 10, 5, 5) * 3 + 2
    plain = cut(bn, torch.nn.BatchNorm2d(10)).train()
    assert torch.allclose(bn(x), plain(x), atol=1e-5)
    assert torch.allclose(bn.running_mean[:10], plain.running_mean) and torch.allclose(bn.running_var[:10], plain.running_var)
    assert not torch.equal(bn.running_mean[:10], mean0[:10])
    assert torch.equal(bn.running_mean[10:], mean0[10:]) and torch.equal(bn.running_var[10:], var0[10:])
    bn.eval(), plain.eval()
    assert torch.allclose(bn(x), plain(x), atol=1e-5)


def test_batchnorm_cumulative_average_when_momentum_is_none():
    bn = BatchNorm2d(8, momentum=None).train()
    xs = [torch.randn(4, 6, 3, 3) + i for i in range(3)]
    for x in xs:
        bn(x)
    expected = torch.stack([x.mean((0, 2, 3)) for x in xs]).mean(0)
    assert torch.allclose(bn.running_mean[:6], expected, atol=1e-5)
    assert int(bn.num_batches_tracked) == 3


def test_squeeze_excite_matches_timm_at_cut_width():
    torch.manual_seed(0)
    wide = SqueezeExcite(48)
    x = torch.randn(2, 24, 6, 6)
    plain = cut(wide, SEModule(24, rd_channels=se_channels(24)))
    assert torch.allclose(wide(x), plain(x), atol=1e-6)
    assert wide.fc1.out_channels == se_channels(48)

