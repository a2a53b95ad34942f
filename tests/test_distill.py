import json

import pytest
import torch
from test_train import config, train

from supernet import SearchSpace, Supernet
from supernet.distill import capture_features, feature_distillation, feature_modules
from supernet.errors import TrainError
from supernet.train_config import TrainConfig


def test_feature_distillation_matches_leading_channels_at_the_students_size():
    teacher = [torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)]
    pooled = [torch.nn.functional.avg_pool2d(t[:, :4], 2) for t in teacher]
    assert feature_distillation([p.clone() for p in pooled], teacher).item() == pytest.approx(0, abs=1e-6)
    student = [p.clone().requires_grad_() for p in pooled]
    off = feature_distillation([s + 1 for s in student], teacher)
    assert off.item() > 0.1
    off.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    teacher[0].requires_grad_()
    feature_distillation(student, teacher).backward()
    assert teacher[0].grad is None  # the teacher is a target, never trained by the loss
    with pytest.raises(ValueError, match="2 student levels, 1 teacher"):
        feature_distillation(student, teacher[:1])


@pytest.mark.parametrize("where", ["backbone", "neck"])
def test_capture_features_keeps_the_last_paths_outputs(where):
    space = SearchSpace.preset("tiny")
    model = Supernet(space, 3).eval()
    with capture_features(feature_modules(model, where)) as captured:
        model([torch.rand(3, 64, 64)], arch=space.smallest())
    widths = {"backbone": [s.width for s in space.smallest().backbone.stages[-3:]], "neck": [space.smallest().neck.width] * 3}[where]
    assert [f.shape[1] for f in captured["features"]] == widths
    model([torch.rand(3, 64, 64)], arch=space.smallest())  # the hooks are gone once the block closed
    assert all(not m._forward_hooks for m in feature_modules(model, where))


def test_distillation_trains_and_is_refused_without_a_teacher(shapes, tmp_path):  # noqa: F811
    result = train(config(shapes, tmp_path / "kd", steps=2, sampler="sandwich", distill=1.0, distill_features="neck"))
    lines = [json.loads(line) for line in (tmp_path / "kd" / "metrics.jsonl").read_text().splitlines()]
    assert result["step"] == 2 and all(r["distill"] > 0 for r in lines if "loss" in r)
    with pytest.raises(TrainError, match="`distill`: expected 0 with `sampler` uniform"):
        TrainConfig(sampler="uniform", distill=0.5)
    with pytest.raises(TrainError, match="`distill_features`: expected one of"):
        TrainConfig(sampler="sandwich", distill=1.0, distill_features="head")
    with pytest.raises(TrainError, match="`distill`: expected a number"):
        TrainConfig(distill=-1.0)
