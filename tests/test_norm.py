"""GroupNorm (`SearchSpace.norm` "gn", `--norm gn`): elastic like the BatchNorm it replaces, and
kept through extraction, saving, recalibration, training and the latency table."""
import dataclasses
import random

import pytest
import torch
import torch.nn.functional as F
from test_supernet import NUM_CLASSES, _assert_same_detections, batch
from test_train import config, train

from latency.ops import OpContext, make_op, op_runner
from latency.measure import Settings
from supernet import Arch, Detector, PostProcess, SearchSpace, Supernet
from supernet.bn import recalibrate_bn
from supernet.checkpoint import load_supernet
from supernet.errors import TrainError
from supernet.layers import BatchNorm2d, GroupNorm2d, group_norm


@pytest.fixture(scope="module")
def gn_space():
    return dataclasses.replace(SearchSpace.preset("tiny"), norm="gn")


def test_group_norm_groups_eight_channels_and_narrow_paths_keep_the_first_groups():
    gn = GroupNorm2d(48)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5), gn.bias.uniform_(-1, 1)
    x = torch.randn(2, 48, 5, 5)
    assert torch.allclose(gn(x), F.group_norm(x, 6, gn.weight, gn.bias, gn.eps))
    assert torch.allclose(gn(x[:, :16]), gn(x)[:, :16], atol=1e-6)  # the 16-channel path: the 48's first two groups
    assert torch.allclose(gn(x[:, :12]), F.group_norm(x[:, :12], 3, gn.weight[:12], gn.bias[:12], gn.eps))  # 12: groups of 4


def test_group_norm_replaces_every_batchnorm():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), BatchNorm2d(16), torch.nn.Sequential(BatchNorm2d(24)))
    group_norm(model)
    assert [type(m) for m in model.modules() if "Norm" in type(m).__name__] == [GroupNorm2d, GroupNorm2d]
    assert model[2][0].num_channels == 24


def test_space_refuses_widths_that_are_not_whole_groups_and_serialises_norm_only_when_gn(gn_space):
    data = gn_space.to_dict()
    assert data["norm"] == "gn" and SearchSpace.from_dict(data) == gn_space
    assert "norm" not in SearchSpace.preset("tiny").to_dict()  # spaces saved before GroupNorm stay equal
    data["neck"]["widths"] = [12, 16, 20]
    with pytest.raises(ValueError, match=r"norm: gn .* widths \[12, 20\] are not multiples of 8"):
        SearchSpace.from_dict(data)
    with pytest.raises(ValueError, match="norm: expected one of"):
        SearchSpace.from_dict({**gn_space.to_dict(), "norm": "ln"})


def test_gn_supernet_extracts_saves_and_loads_gn_detectors(gn_space, tmp_path):
    torch.manual_seed(0)
    model = Supernet(gn_space, NUM_CLASSES, PostProcess(score_thresh=0.0)).eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    images, _ = batch(4)
    rng = random.Random(5)
    for arch in [gn_space.smallest(), gn_space.largest(), *(gn_space.sample(rng) for _ in range(4))]:
        det = model.extract(arch)
        assert any(isinstance(m, GroupNorm2d) for m in det.modules())
        with torch.no_grad():
            _assert_same_detections(model(images, arch=arch), det(images))
    det.save(tmp_path / "det.pt")
    again = Detector.load(tmp_path / "det.pt").eval()
    assert again.space.norm == "gn"
    with torch.no_grad():
        _assert_same_detections(again(images), det(images))


def test_recalibration_of_a_gn_model_reads_no_batches(gn_space):
    def loader():
        raise AssertionError("a GroupNorm model has no statistics to recalibrate")
        yield

    recalibrate_bn(Supernet(gn_space, NUM_CLASSES), gn_space.smallest(), loader(), 4, "cpu")


def test_training_with_norm_gn_checkpoints_a_gn_supernet(shapes, tmp_path):
    done = train(config(shapes, tmp_path / "gn", space="tiny", norm="gn", steps=2, eval_images=2))
    model, blob = load_supernet(done["checkpoint"])
    assert model.space.norm == "gn" and blob["config"]["norm"] == "gn"
    assert any(isinstance(m, GroupNorm2d) for m in model.modules())
    assert {"smallest", "largest"} <= set(done["eval"])


def test_norm_gn_on_a_space_with_odd_widths_is_one_line_naming_the_flag(shapes, tmp_path):
    data = SearchSpace.preset("tiny").to_dict()
    data["head"]["widths"] = [12, 24]
    space_file = tmp_path / "space.json"
    space_file.write_text(SearchSpace.from_dict(data).to_json())
    with pytest.raises(TrainError, match=r"`norm` gn: gn normalises groups of 8 channels; widths \[12\]"):
        train(config(shapes, tmp_path / "odd", space=str(space_file), norm="gn"))


def test_latency_ops_of_a_gn_space_run_group_norm(gn_space):
    ctx = OpContext.for_space(gn_space, NUM_CLASSES)
    assert ctx.norm == "gn" and OpContext.from_dict(ctx.to_dict()) == ctx
    assert "norm" not in OpContext.for_space(SearchSpace.preset("tiny"), NUM_CLASSES).to_dict()
    op = make_op("stem", res=64, width=16)
    runner = op_runner(op, ctx, Settings(device="cpu"))
    assert any(isinstance(m, GroupNorm2d) for m in runner.module.modules())


def test_a_gn_detector_exports_and_matches_eager(tmp_path):
    from supernet.export import export

    space = SearchSpace.preset("tiny")
    arch = Arch.from_dict({**space.smallest().to_dict(), "resolution": 64})
    torch.manual_seed(0)
    det = Detector(arch, NUM_CLASSES, space.activation, space.head.anchor_scale, norm="gn").eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in det.modules())
    result = export(det, tmp_path)
    for fmt in ("torchscript", "onnx"):
        assert "check_failed" not in result[fmt], result[fmt]
