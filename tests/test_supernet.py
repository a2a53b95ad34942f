import dataclasses
import random

import pytest
import torch

from supernet import Arch, Detector, PostProcess, SearchSpace, Supernet, preserve_off_path
from supernet.layers import leading_slice
from supernet.transform import letterbox

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def space():
    return SearchSpace.preset("tiny")


@pytest.fixture(scope="module")
def model(space):
    torch.manual_seed(0)
    # score_thresh 0 keeps detections coming from an untrained model, so comparisons are not empty
    return Supernet(space, NUM_CLASSES, PostProcess(score_thresh=0.0))


def batch(seed: int = 0, sizes=((60, 80), (90, 50))):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, h, w, generator=g) for h, w in sizes]
    targets = []
    for h, w in sizes:
        n = int(torch.randint(0, 4, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = 6 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.35, h * 0.35])
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, NUM_CLASSES, (n,), generator=g)})
    targets[0] = {"boxes": torch.tensor([[5.0, 6.0, 40.0, 45.0]]), "labels": torch.tensor([1])}  # never all empty
    return images, targets


def with_types(arch: Arch, neck: str, head: str, space: SearchSpace) -> Arch:
    repeats = max(space.choices(("neck", "repeats"), {"neck.type": neck}))
    return dataclasses.replace(
        arch, neck=dataclasses.replace(arch.neck, type=neck, repeats=repeats), head=dataclasses.replace(arch.head, type=head)
    )


EXPECTED_LOSSES = {
    "fcos": {"classification", "bbox_regression", "bbox_ctrness"},
    "retinanet": {"classification", "bbox_regression"},
    "two_stage": {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"},
}


@pytest.mark.parametrize("neck", ["fpn", "pan", "bifpn"])
@pytest.mark.parametrize("head", ["fcos", "retinanet", "two_stage"])
def test_forward_backward_each_neck_and_head(model, space, neck, head):
    arch = with_types(space.sample(random.Random(hash((neck, head)) % 1000)), neck, head, space)
    images, targets = batch(1)
    model.train()
    model.zero_grad(set_to_none=True)
    losses = model(images, targets, arch=arch)
    assert set(losses) == EXPECTED_LOSSES[head]
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    used = {n for n, p in model.named_parameters() if p.grad is not None}
    assert any(n.startswith(f"head.{head}.") for n in used) and any(n.startswith(f"neck.{neck}.") for n in used)
    others = [t for t in ("fcos", "retinanet", "two_stage") if t != head]
    assert not any(n.startswith(tuple(f"head.{t}." for t in others)) for n in used)
    assert not any(n.startswith(tuple(f"neck.{t}." for t in ("fpn", "pan", "bifpn") if t != neck)) for n in used)
    model.eval()
    with torch.no_grad():
        dets = model(images, arch=arch)
    assert len(dets) == 2
    for det, img in zip(dets, images):
        assert set(det) == {"boxes", "labels", "scores"}
        assert det["boxes"].shape[0] > 0
        h, w = img.shape[-2:]
        assert det["boxes"][:, 2].max() <= w and det["boxes"][:, 3].max() <= h  # input-image coordinates
        assert det["labels"].min() >= 0 and det["labels"].max() < NUM_CLASSES


@pytest.mark.parametrize("head", ["fcos", "retinanet", "two_stage"])
def test_every_head_splits_into_raw_outputs_and_postprocess(model, space, head):
    """The two parts the latency table times apart are, in sequence, exactly the head's forward."""
    arch = with_types(space.sample(3), "fpn", head, space)
    model.eval()
    with torch.no_grad():
        images = letterbox(batch(2)[0], arch.resolution)[0]
        features = model.neck["fpn"](model.backbone(images.tensors, arch.backbone), arch.neck.width)
        module = model.head[head]
        split, whole = module.postprocess(module.raw_outputs(features, images, arch.head), images), module(features, images, arch.head)
    assert len(split) == len(whole) == 2 and all(len(d["boxes"]) > 0 for d in whole)
    for a, b in zip(split, whole):
        assert all(torch.equal(a[k], b[k]) for k in ("boxes", "scores", "labels"))


def test_gradients_exactly_on_the_path(model, space):
    """Parameters the path does not use get no gradient; elastic weights get gradient only on their
    leading slice; and the path's gradients equal those of the extracted detector."""
    arch = space.sample(random.Random(11))
    images, targets = batch(2)
    model.train()
    model.zero_grad(set_to_none=True)
    det = model.extract(arch).train()
    torch.manual_seed(0)
    loss_s = sum(model(images, targets, arch=arch).values())
    torch.manual_seed(0)
    loss_d = sum(det(images, targets).values())
    assert torch.allclose(loss_s, loss_d, rtol=1e-5, atol=1e-6)
    loss_s.backward()
    loss_d.backward()
    shapes = model.path_shapes(arch)
    det_params = dict(det.named_parameters())
    assert set(shapes) == set(det_params)
    for name, p in model.named_parameters():
        if name not in shapes:
            assert p.grad is None, name
            continue
        region = leading_slice(shapes[name])
        ref = det_params[name].grad
        if ref is None:  # on the path but outside the loss (e.g. no positives for a branch)
            assert p.grad is None or not p.grad.any(), name
            continue
        assert torch.allclose(p.grad[region], ref, rtol=1e-4, atol=1e-6), name
        rest = p.grad.clone()
        rest[region] = 0
        assert not rest.any(), f"{name} has gradient off the path"


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),
    lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-1),
], ids=["sgd", "adamw"])
def test_optimizer_step_leaves_off_path_bit_identical(space, make_opt):
    torch.manual_seed(0)
    model = Supernet(space, NUM_CLASSES).train()
    opt = make_opt(model.parameters())
    images, targets = batch(3)
    first, second = space.largest(), space.sample(random.Random(5))
    for arch in (first, second):  # the first step leaves momentum everywhere on the largest path
        opt.zero_grad(set_to_none=True)
        sum(model(images, targets, arch=arch).values()).backward()
        before = _snapshot(model)
        with preserve_off_path(model, arch, opt):
            opt.step()
    shapes = model.path_shapes(second)
    changed_on_path = 0
    for name, p in model.named_parameters():
        old = before[name]
        if name not in shapes:
            assert torch.equal(p, old), name
            continue
        region = leading_slice(shapes[name])
        changed_on_path += int(not torch.equal(p[region], old[region]))
        outside_new, outside_old = p.detach().clone(), old.clone()
        outside_new[region] = 0
        outside_old[region] = 0
        assert torch.equal(outside_new, outside_old), f"{name} changed off the path"
    assert changed_on_path > 10


def test_without_guard_weight_decay_moves_off_path_slices(space):
    """The guard is needed: a plain step moves the unused slice of elastic weights."""
    torch.manual_seed(0)
    model = Supernet(space, NUM_CLASSES).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    images, targets = batch(3)
    arch = space.smallest()
    sum(model(images, targets, arch=arch).values()).backward()
    before = _snapshot(model)
    opt.step()
    name = "backbone.stem.conv.weight"  # smallest stem width 8 of 16
    region = leading_slice(model.path_shapes(arch)[name])
    after = model.get_parameter(name).detach().clone()
    after[region], before[name][region] = 0, 0
    assert not torch.equal(after, before[name])


def _assert_same_detections(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["boxes"].shape == y["boxes"].shape
        assert torch.allclose(x["boxes"], y["boxes"], atol=1e-3)
        assert torch.allclose(x["scores"], y["scores"], atol=1e-5)
        assert torch.equal(x["labels"], y["labels"])


def test_extract_equivalence_on_random_archs(model, space):
    """Eval-mode outputs of the extracted detector equal the supernet's on that path (25 archs,
    covering each head and neck type, non-square inputs that need letterboxing)."""
    model.eval()
    rng = random.Random(123)
    archs = [space.sample(rng) for _ in range(22)] + [space.smallest(), space.largest()]
    archs.append(with_types(space.sample(rng), "bifpn", "two_stage", space))
    assert {a.head.type for a in archs} == set(space.head.types)
    assert {a.neck.type for a in archs} == set(space.neck.types)
    images, _ = batch(4)
    for arch in archs:
        det = model.extract(arch)
        assert not det.training
        with torch.no_grad():
            _assert_same_detections(model(images, arch=arch), det(images))
        # widths physically cut: the detector holds exactly the path's parameters
        assert {n: tuple(p.shape) for n, p in det.named_parameters()} == model.path_shapes(arch)


def test_detector_holds_only_its_path(model, space):
    arch = space.sample(random.Random(9))
    det = model.extract(arch)
    n_det = sum(p.numel() for p in det.parameters())
    assert n_det < sum(p.numel() for p in model.parameters()) / 3
    for positions in det.backbone.stages:  # one candidate per position, the arch's depth
        assert all(len(pos) == 1 for pos in positions)
    assert [len(s) for s in det.backbone.stages] == [s.depth for s in arch.backbone.stages]
    assert list(det.neck) == [arch.neck.type] and list(det.head) == [arch.head.type]
    with pytest.raises(ValueError, match="different arch"):
        det(batch(0)[0], arch=space.smallest() if arch != space.smallest() else space.largest())


def test_detector_save_load_round_trip(model, space, tmp_path):
    arch = space.sample(random.Random(3))
    det = model.extract(arch).eval()
    path = tmp_path / "model.pt"
    det.save(path)
    blob = torch.load(path, weights_only=True)
    assert Arch.from_dict(blob["config"]["arch"]) == arch
    loaded = Detector.load(path).eval()
    images, _ = batch(5)
    with torch.no_grad():
        _assert_same_detections(det(images), loaded(images))


def test_detector_load_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        Detector.load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad\.pt: not a readable detector file"):
        Detector.load(bad)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="expected a dict with 'config' and 'state_dict'"):
        Detector.load(tmp_path / "other.pt")


def test_bad_inputs_are_clear_errors(model, space):
    arch = space.smallest()
    model.train()
    images, targets = batch(0)
    with pytest.raises(TypeError, match="pass arch="):
        model(images, targets)
    with pytest.raises(ValueError, match="targets: required"):
        model(images, None, arch=arch)
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\]: values must be in 0..2"):
        model(images, [{"boxes": targets[0]["boxes"], "labels": torch.tensor([7])}, targets[1]], arch=arch)
    with pytest.raises(ValueError, match=r"arch\.resolution: 100"):
        model(images, targets, arch=dataclasses.replace(arch, resolution=100))
    model.eval()
    with pytest.raises(ValueError, match=r"images\[0\]: expected a float tensor \[3, H, W\]"):
        model([torch.rand(1, 32, 32)], arch=arch)
    with pytest.raises(ValueError, match="num_classes"):
        Supernet(space, 0)
    model.train()
    single = model(images[0], [targets[0]], arch=arch)  # one [3, H, W] tensor is one image
    assert torch.isfinite(sum(single.values()))


def test_largest_tiny_arch_memory(space):
    """The tiny preset's supernet and its largest path fit in a few hundred MB."""
    torch.manual_seed(0)
    model = Supernet(space, 80).train()
    param_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    assert param_mb < 50
    arch = space.largest()
    images = [torch.rand(3, 128, 128) for _ in range(4)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([5])}] * 4
    saved = []

    def pack(t):  # every tensor autograd keeps for backward: the activation memory of the step
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = sum(model(images, targets, arch=arch).values())
    loss.backward()
    activation_mb = sum(saved) / 2**20
    assert 1 < activation_mb < 300, activation_mb


def test_guard_with_accumulated_paths(space):
    """Sandwich-style steps accumulate several paths: the union of their slices may update."""
    torch.manual_seed(0)
    model = Supernet(space, NUM_CLASSES).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    images, targets = batch(3)
    archs = [space.smallest(), space.sample(random.Random(8))]
    for arch in archs:
        sum(model(images, targets, arch=arch).values()).backward()
    before = _snapshot(model)
    with preserve_off_path(model, archs, opt):
        opt.step()
    shapes = [model.path_shapes(a) for a in archs]
    for name, p in model.named_parameters():
        mask = torch.zeros(p.shape, dtype=torch.bool)
        for s in shapes:
            if name in s:
                mask[leading_slice(s[name])] = True
        assert torch.equal(p[~mask], before[name][~mask]), name
    assert not torch.equal(model.backbone.stem.conv.weight[:8], before["backbone.stem.conv.weight"][:8])


def test_fcos_box_distances_below_zero_still_get_a_gradient(space):
    """Two distances of every box pushed below zero: with a plain ReLU the boxes have zero width
    and those distances no gradient to leave it (a from-scratch run on coco128 stayed there for
    good); the leaking gradient points back up, and the outputs are a ReLU's. A fresh head's
    boxes start at one stride a side."""
    from supernet.heads.fcos import relu_leaking_gradient
    x = torch.tensor([-2.0, -0.5, 0.5, 3.0], requires_grad=True)
    y = relu_leaking_gradient(x)
    y.sum().backward()
    assert torch.equal(y, torch.relu(x)) and x.grad.tolist() == pytest.approx([0.01, 0.01, 1.0, 1.0])
    arch = Arch.from_dict({**space.smallest().to_dict(), "resolution": 64, "head": {"type": "fcos", "width": 16, "num_convs": 1}})
    torch.manual_seed(0)
    det = Detector(arch, NUM_CLASSES).train()
    reg = det.head.fcos.bbox_reg
    images, targets = batch(1)
    assert reg.bias.tolist() == [1.0] * 4 and det(images, targets)["bbox_regression"].item() < 0.99
    with torch.no_grad():
        reg.weight.zero_()
        reg.bias.copy_(torch.tensor([-1.0, 1.0, -1.0, 1.0]))  # left and right below zero: boxes of zero width
    det(images, targets)["bbox_regression"].backward()
    assert reg.bias.grad[0] < 0 and reg.bias.grad[2] < 0  # gradient descent widens them again
