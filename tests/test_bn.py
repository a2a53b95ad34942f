import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from supernet import SearchSpace, Supernet
from supernet.bn import recalibrate_bn
from supernet.data import CocoDetection, build_loader, coco_paths
from supernet.shapes import generate_shapes


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    paths = coco_paths(generate_shapes(tmp_path_factory.mktemp("shapes"), train=4, val=1, size=64, seed=0))
    return build_loader(CocoDetection(paths["train_images"], paths["train_ann"], max_size=64), 2, shuffle=False, workers=0, seed=0)


def scrambled_supernet(space: SearchSpace) -> Supernet:
    """Running statistics that no recalibration would produce, so any reset or update shows."""
    torch.manual_seed(0)
    model = Supernet(space, 3)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.num_batches_tracked.fill_(7)
    return model


def norms(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, _BatchNorm)}


@pytest.mark.parametrize("pick", ["smallest", "random"])
def test_only_the_path_slices_change_and_match_a_standalone_detector(loader, pick):
    space = SearchSpace.preset("tiny")
    model = scrambled_supernet(space).train()
    arch = space.smallest() if pick == "smallest" else space.sample(3)
    detector = model.extract(arch)
    before = {n: b.clone() for n, b in model.named_buffers()}
    params = {n: p.clone() for n, p in model.named_parameters()}
    recalibrate_bn(model, arch, loader, batches=2, device="cpu")
    recalibrate_bn(detector, None, loader, batches=2, device="cpu")

    shapes = model.path_shapes(arch)
    partial = off = 0
    for name, bn in norms(model).items():
        used = shapes.get(f"{name}.weight", (0,))[0]
        mean, var = before[f"{name}.running_mean"], before[f"{name}.running_var"]
        assert torch.equal(bn.running_mean[used:], mean[used:]) and torch.equal(bn.running_var[used:], var[used:])
        if used == 0:
            off += 1
            assert bn.num_batches_tracked == 7
            continue
        partial += used < bn.num_features
        assert not torch.equal(bn.running_mean[:used], mean[:used]) and not torch.equal(bn.running_var[:used], var[:used])
        assert bn.num_batches_tracked == 9 and bn.momentum == 0.1
        standalone = norms(detector)[name]
        assert torch.allclose(standalone.running_mean, bn.running_mean[:used], atol=1e-5)
        assert torch.allclose(standalone.running_var, bn.running_var[:used], rtol=1e-4, atol=1e-5)
    assert partial > 0 and off > 0
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert all(m.training for m in model.modules()) and all(m.training for m in detector.modules())


def test_restores_mixed_modes_and_rejects_no_batches(loader):
    space = SearchSpace.preset("tiny")
    model = scrambled_supernet(space).eval()
    frozen = next(iter(norms(model).values())).train()
    before = {n: b.clone() for n, b in model.named_buffers()}
    with pytest.raises(ValueError, match="batches: expected a positive integer"):
        recalibrate_bn(model, space.smallest(), loader, batches=0, device="cpu")
    recalibrate_bn(model, space.smallest(), loader, batches=1, device="cpu")
    assert frozen.training and sum(m.training for m in model.modules()) == 1
    assert any(not torch.equal(b, before[n]) for n, b in model.named_buffers())
