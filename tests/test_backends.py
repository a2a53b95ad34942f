"""Latency tables timed in another runtime than eager PyTorch (`latency.backends`)."""
import importlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from common import MICRO_SPACE, StepTimer
from torch.utils._pytree import tree_flatten

from latency import Settings, build_table
from latency.backends import BackendError, check_backend, runnable
from latency.ops import OpContext, detector_runner, op_runner, space_ops
from latency.table import LatencyTable, TableError
from supernet.space import SearchSpace

SPACE = SearchSpace.from_dict(MICRO_SPACE)
ONE_ARCH_WIDE = {  # few ops: exporting each one to ONNX is what a build under onnxruntime pays for
    "resolutions": [64],
    "backbone": {"stem_widths": [8], "stages": [{"depths": [1], "widths": [8], "blocks": ["basic", "ir_k3_e6"]}] * 4},
    "neck": {"types": ["fpn"], "widths": [8], "repeats": [1]},
    "head": {"types": ["fcos"], "widths": [8], "num_convs": [1]},
}
ORT = Settings(warmup=0, repeats=1, backend="onnxruntime")


def tensors(out) -> list[torch.Tensor]:
    return [torch.as_tensor(x) for x in tree_flatten(out)[0] if isinstance(x, (torch.Tensor,)) or hasattr(x, "dtype")]


def test_every_op_kind_runs_in_onnxruntime_and_the_networks_compute_what_eager_does():
    ctx, by_kind = OpContext.for_space(SPACE, 3), {}
    for op in space_ops(SPACE).values():
        by_kind.setdefault(op.kind, op)
    assert set(by_kind) == {"io", "stem", "block", "neck", "head", "post"}
    for kind, op in by_kind.items():
        runner = op_runner(op, ctx, Settings())
        with torch.no_grad():
            eager = tensors(runner())
        out = tensors(runnable(runner, "onnxruntime", threads=1)())
        assert out, kind
        if kind in ("io", "stem", "block", "neck"):  # deterministic networks: the same numbers
            assert len(out) == len(eager) and all(torch.allclose(o.float(), e.float(), atol=1e-4) for o, e in zip(out, eager)), kind
    # a whole detector (the calibration subnets, validation, retraining's measured latency)
    arch = SPACE.sample(0)
    runner = detector_runner(arch, ctx, Settings())
    with torch.no_grad():
        boxes = runner()[0]["boxes"]
    assert tensors(runnable(runner, "onnxruntime", threads=1)())[0].shape == boxes.shape


@pytest.mark.slow
def test_an_onnxruntime_table_records_its_runtime_and_is_refused_for_eager_runs(tmp_path):
    space = SearchSpace.from_dict(ONE_ARCH_WIDE)
    table = build_table(space, ORT, tmp_path / "ort.json", num_classes=3, passes=1, calib_archs=2, timer=StepTimer(), progress=False)
    assert table.settings.backend == "onnxruntime" and len(table.entries) == len(space_ops(space))
    runtime = table.meta.environment["runtime"]
    assert runtime["backend"] == "onnxruntime" and runtime["provider"] == "CPUExecutionProvider" and runtime["version"]
    assert LatencyTable.load(tmp_path / "ort.json", ORT).settings == ORT
    with pytest.raises(TableError, match="built for `backend` onnxruntime, this run uses eager"):
        LatencyTable.load(tmp_path / "ort.json", Settings(warmup=0, repeats=1))
    LatencyTable.load(tmp_path / "ort.json", Settings(), force=True)


@pytest.mark.slow
def test_an_onnxruntime_build_exports_each_op_once_not_once_a_pass(tmp_path, monkeypatch):
    """Exporting is most of what a measurement costs under onnxruntime; the graph is the same
    every pass (the key seeds the weights), so each entry is exported once and loaded after."""
    import tempfile

    exports, export = [], torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: exports.append(1) or export(*a, **k))
    folders = []
    monkeypatch.setattr(tempfile, "TemporaryDirectory", lambda *a, _real=tempfile.TemporaryDirectory, **k: folders.append(_real(*a, **k)) or folders[-1])
    space = SearchSpace.from_dict(ONE_ARCH_WIDE)
    table = build_table(space, ORT, tmp_path / "ort.json", num_classes=3, passes=3, calib_archs=2, timer=StepTimer(), progress=False,
                        extra_passes=0)
    entries = len(table.entries) + 2  # the ops and the calibration subnets, each measured in 3 passes
    assert len(exports) == entries + 1  # once each, and the noise check's reference detector
    assert len(folders) == 1 and not Path(folders[0].name).exists()  # the graphs go with the build


def test_an_op_the_backend_cannot_run_is_named_and_what_was_measured_is_kept(tmp_path, monkeypatch):
    measure_module = importlib.import_module("latency.measure")  # (the package exports a function of that name)
    calls = {"n": 0}

    def failing_on_the_fifth(runner, backend, threads=None):
        calls["n"] += 1
        if calls["n"] == 5 + 5:  # after the noise check's 5 runs of its reference, the fifth entry
            raise BackendError("onnxruntime: cannot export or load it (Unsupported: MyOp)")
        return runner

    monkeypatch.setattr(measure_module, "runnable", failing_on_the_fifth)
    out = tmp_path / "ort.json"
    with pytest.raises(BackendError, match=r"the onnxruntime backend cannot run it: onnxruntime: cannot export .*MyOp") as e:
        build_table(SPACE, ORT, out, num_classes=3, passes=1, calib_archs=0, timer=StepTimer(), progress=False)
    key = str(e.value).split(": the onnxruntime backend")[0]
    assert key in space_ops(SPACE) or key.startswith("subnet")
    partial = json.loads((tmp_path / "ort.json.partial").read_text())
    assert not out.exists() and sum(map(len, partial["times"].values())) == 4  # the four measured: kept for the resumed build


def test_bad_backend_settings_are_one_line_before_anything_runs(monkeypatch):
    with pytest.raises(ValueError, match=r"`backend`: expected one of \['eager', 'onnxruntime', 'compile'\], got 'trt'"):
        Settings(backend="trt")
    with pytest.raises(ValueError, match="`backend` onnxruntime: times fp32 graphs only so far"):
        Settings(backend="onnxruntime", dtype="bf16")
    with pytest.raises(ValueError, match="only the CPU execution provider"):
        check_backend("onnxruntime", "cuda:0")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ValueError, match=r"`backend` onnxruntime: needs the onnxruntime and onnx packages \(pip install 'smnas\[export\]'"):
        build_table(SPACE, ORT, "never.json", num_classes=3, passes=1, calib_archs=0, timer=StepTimer(), progress=False)


@pytest.mark.slow
def test_compile_backend_runs_an_op_as_eager_computes_it():
    op = next(o for o in space_ops(SPACE).values() if o.kind == "stem")
    runner = op_runner(op, OpContext.for_space(SPACE, 3), Settings())
    fn = runnable(runner, "compile")
    assert runnable(runner, "compile") is fn  # built once per runner
    with torch.no_grad():
        assert torch.allclose(fn(), runner(), atol=1e-5)
