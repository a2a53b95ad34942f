import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from timm.layers import SEModule

from supernet.layers import BatchNorm2d, Conv2d, Linear, SqueezeExcite, leading_slice, se_channels, sync_batchnorm

REPO = Path(__file__).resolve().parents[1]


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



def test_sync_batchnorm_keeps_the_parameters_and_runs_locally_without_a_process_group():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), BatchNorm2d(8), torch.nn.Sequential(BatchNorm2d(8)))
    params, keys = [id(p) for p in model.parameters()], list(model.state_dict())
    reference = copy.deepcopy(model)
    synced = sync_batchnorm(model)
    assert synced is model and [type(m).__name__ for m in model.modules()].count("SyncBatchNorm2d") == 2
    assert [id(p) for p in model.parameters()] == params and list(model.state_dict()) == keys  # the optimizer's references hold
    x = torch.randn(4, 3, 6, 6)
    assert torch.equal(model(x), reference(x))  # no process group: plain BatchNorm2d
    assert torch.equal(model[1].running_mean, reference[1].running_mean)


@pytest.mark.slow
def test_sync_batchnorm_over_two_ranks_equals_one_batchnorm_on_the_union(tmp_path):
    """Each of two gloo ranks holds half a batch and runs 12 of 16 channels: outputs, input and
    parameter gradients and running statistics are those of one BatchNorm2d on the whole batch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(REPO / "tests" / "ddp_syncbn_worker.py"), str(tmp_path / "out.pt")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = torch.load(tmp_path / "out.pt", weights_only=True)
    assert r["type"] == "SyncBatchNorm2d"
    ref = torch.nn.BatchNorm2d(12)
    with torch.no_grad():
        ref.weight.copy_(r["state"]["weight"][:12])
        ref.bias.copy_(r["state"]["bias"][:12])
    x = r["batch"][:, :12].clone().requires_grad_()
    y = ref(x)
    (y * r["upstream"]).sum().backward()
    assert torch.allclose(r["out"], y, atol=1e-5) and torch.allclose(r["input_grad"], x.grad, atol=1e-5)
    assert torch.allclose(r["grads"]["0.weight"][:12], ref.weight.grad, atol=1e-4)
    assert torch.allclose(r["grads"]["0.bias"][:12], ref.bias.grad, atol=1e-4)
    assert not r["grads"]["0.weight"][12:].any() and not r["grads"]["0.bias"][12:].any()
    assert torch.allclose(r["state"]["running_mean"][:12], ref.running_mean, atol=1e-5)
    assert torch.allclose(r["state"]["running_var"][:12], ref.running_var, atol=1e-5)
    assert torch.equal(r["state"]["running_mean"][12:], torch.zeros(4)) and torch.equal(r["state"]["running_var"][12:], torch.ones(4))
    assert int(r["state"]["num_batches_tracked"]) == 1
