import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from common import StepTimer, write_space

from smnas.commands import retrain as retrain_script
from latency import Settings, build_table
from search import retrain as retrain_module
from search.retrain import load_archs
from search.screen import screen
from supernet import Arch, Detector, SearchSpace
from supernet.baselines import RECIPES, baseline, baselines, nearest
from supernet.checkpoint import load_supernet
from supernet.data import build_datasets
from supernet.export import read_metadata
from supernet.shapes import generate_shapes
from supernet.train_config import TrainConfig
from supernet.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
find_spec = importlib.util.find_spec
METRIC_KEYS = {"map", "ap50", "ap75", "aps", "apm", "apl", "latency_ms", "latency_pred_ms", "flops", "params", "train_seconds"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Shapes data, the micro space, a 2-step supernet on it and a table with deterministic timings."""
    root = tmp_path_factory.mktemp("retrain")
    data = generate_shapes(root / "shapes", train=8, val=3, size=64, seed=0)
    space_file = write_space(root / "space.json")
    cfg = TrainConfig(space=space_file, data=str(data), out=str(root / "supernet"), steps=2, batch_size=2, workers=0,
                      eval_images=2, eval_random_archs=0, calib_batches=1, device="cpu")
    Trainer(cfg, build_datasets(cfg, 96)).run()
    space = SearchSpace.load(space_file)
    build_table(space, Settings(warmup=0, repeats=1), root / "lut.json", num_classes=3, passes=1, calib_archs=0,
                timer=StepTimer(), progress=False)
    arch = space.smallest()
    (root / "arch.json").write_text(arch.to_json())
    return {"root": root, "data": str(data), "space": space_file, "supernet": str(root / "supernet" / "last.pt"),
            "lut": str(root / "lut.json"), "arch": arch}


def argv(setup, out, *extra):
    return ["--space", setup["space"], "--data", setup["data"], "--out", str(out), "--steps", "2", "--batch-size", "2",
            "--workers", "0", "--device", "cpu", "--lut", setup["lut"], "--log-every", "1", *extra]


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_baselines_are_archs_of_both_presets():
    for preset in ("tiny", "coco"):
        space = SearchSpace.preset(preset)
        found = baselines(space)
        assert set(found) == set(RECIPES)
        for name, arch in found.items():
            assert space.validate(arch) is arch
            assert {b for s in arch.backbone.stages for b in s.blocks} == {RECIPES[name].block}
            assert arch.head.type == RECIPES[name].head[0] and arch.neck.type == RECIPES[name].neck[0]
    coco = baselines(SearchSpace.preset("coco"))
    r18 = coco["resnet18_fpn_retinanet"]
    assert [s.width for s in r18.backbone.stages] == [48, 96, 192, 320]  # nearest to ResNet-18's 64..512 in ratio
    assert [s.depth for s in r18.backbone.stages] == [2, 2, 2, 2] and r18.resolution == 512
    assert [s.depth for s in coco["mobilenetv2_fpn_fcos"].backbone.stages] == [2, 3, 6, 3]
    assert nearest([24, 32, 48], 40) == 48 and nearest([2, 4], 3) == 4 and nearest([1, 4], 2) == 1  # ratio; ties to the smaller


def test_baseline_errors_name_what_is_missing():
    space = SearchSpace.from_dict({**json.loads(SearchSpace.preset("tiny").to_json()), "head": {"types": ["fcos"], "widths": [16], "num_convs": [1]}})
    with pytest.raises(ValueError, match="baseline resnet18_fpn_retinanet: head type 'retinanet' is not a choice"):
        baseline("resnet18_fpn_retinanet", space)
    assert set(baselines(space)) == {"mobilenetv2_fpn_fcos"}
    with pytest.raises(ValueError, match="baseline 'vgg': unknown"):
        baseline("baseline:vgg", space)


def test_load_archs_from_each_kind_of_file(setup, tmp_path):
    space = SearchSpace.load(setup["space"])
    a, b = space.smallest(), space.largest()
    finalists = tmp_path / "finalists.json"
    finalists.write_text(json.dumps([{"arch": a.to_dict(), "map": 0.2}, {"arch": b.to_dict(), "map": 0.1}]))
    assert load_archs(str(finalists), space) == [(a.hash(), a)]
    assert load_archs(str(finalists), space, index=1) == [(b.hash(), b)]
    assert [x for _, x in load_archs(str(finalists), space, every=True)] == [a, b]
    assert load_archs(str(setup["root"] / "arch.json"), space) == [(a.hash(), a)]
    with pytest.raises(ValueError, match=r"`index` 2: .*finalists.json holds 2 archs"):
        load_archs(str(finalists), space, index=2)
    with pytest.raises(ValueError, match="file not found"):
        load_archs(str(tmp_path / "nope.json"), space)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"arch": {**a.to_dict(), "resolution": 100}}]))
    with pytest.raises(ValueError, match=r"bad.json\[0\]: arch.resolution: 100 is not allowed"):
        load_archs(str(bad), space)
    assert load_archs("baseline:mobilenetv2_fpn_fcos", SearchSpace.preset("tiny"))[0][0] == "mobilenetv2_fpn_fcos"


def test_retrain_writes_model_arch_metrics_and_exports(setup, tmp_path, capsys):
    out = tmp_path / "r"
    assert retrain_script.main(argv(setup, out, "--arch", str(setup["root"] / "arch.json"), "--export", "--eval-images", "0")) == 0
    result = last_json(capsys)
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics) and result["map"] == metrics["map"]
    assert metrics["val_images"] == 3 and metrics["steps"] == 2 and metrics["train_seconds"] > 0
    assert metrics["latency_ms"] > 0 and metrics["latency_settings"]["lut"] == setup["lut"]
    assert metrics["latency_pred_ms"] > 0
    assert metrics["latency_settings"]["images"] == "mean over 4 batches of 3 validation images"  # the data's, not noise
    assert Arch.from_json((out / "arch.json").read_text()) == setup["arch"]
    det = Detector.load(out / "model.pt")
    assert det.arch == setup["arch"] and det.num_classes == 3
    assert det.classes == metrics["classes"] and [c["label"] for c in det.classes] == [0, 1, 2]  # which label is which class
    assert all(isinstance(c["id"], int) and c["name"] for c in det.classes)
    for fmt in ("torchscript", "onnx"):
        assert Path(metrics["export"][fmt]["path"]).is_file() and metrics["export"][fmt]["max_abs_diff"] < 1e-3
        assert read_metadata(metrics["export"][fmt]["path"])["classes"] == det.classes
    # finished: --resume returns it as is, without --resume the folder is refused
    assert retrain_script.main(argv(setup, out, "--arch", str(setup["root"] / "arch.json"), "--resume")) == 0
    assert last_json(capsys)["train_seconds"] == metrics["train_seconds"]
    assert retrain_script.main(argv(setup, out, "--arch", str(setup["root"] / "arch.json"))) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_export_without_its_packages_is_refused_before_training_and_a_failed_export_keeps_the_training(setup, tmp_path, capsys, monkeypatch):
    import supernet.export

    arch = ["--arch", str(setup["root"] / "arch.json")]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    assert retrain_script.main(argv(setup, tmp_path / "a", *arch, "--export")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --export: needs onnxruntime, not installed (pip install 'smnas[export]'); nothing was trained")
    assert not (tmp_path / "a" / "last.pt").exists()
    monkeypatch.undo()

    def full_disk(*_, **__):
        raise OSError(28, "No space left on device", str(tmp_path / "b" / "model.onnx"))

    monkeypatch.setattr(supernet.export, "export", full_disk)
    assert retrain_script.main(argv(setup, tmp_path / "b", *arch, "--export")) == 2
    assert "trained (model.pt, metrics.json) but not exported" in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["map"] >= 0 and "export" not in json.loads((tmp_path / "b" / "metrics.json").read_text())


def test_all_finalists_each_in_its_folder_and_resume_after_a_kill(setup, tmp_path, capsys, monkeypatch):
    space = SearchSpace.load(setup["space"])
    archs = [space.smallest(), space.sample(3)]
    finalists = tmp_path / "finalists.json"
    finalists.write_text(json.dumps([{"arch": a.to_dict()} for a in archs]))
    original = Trainer.train_step

    def dies_in_second_arch(self, images, targets):
        if self.model.arch == archs[1] and self.step == 1:
            raise KeyboardInterrupt
        return original(self, images, targets)

    monkeypatch.setattr(Trainer, "train_step", dies_in_second_arch)
    cmd = argv(setup, tmp_path / "all", "--arch", str(finalists), "--all", "--ckpt-every", "1")
    with pytest.raises(KeyboardInterrupt):
        retrain_script.main(cmd)
    monkeypatch.setattr(Trainer, "train_step", original)
    first, second = (tmp_path / "all" / a.hash() for a in archs)
    assert (first / "metrics.json").is_file() and not (second / "metrics.json").exists()
    assert torch.load(second / "last.pt", weights_only=True)["step"] == 1
    capsys.readouterr()
    assert retrain_script.main(cmd + ["--resume"]) == 0
    results = last_json(capsys)
    assert [r["hash"] for r in results] == [a.hash() for a in archs] and all(r["steps"] == 2 for r in results)
    log = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]  # the resumed run continued from step 1


def test_inherited_init_starts_from_the_supernet_weights(setup, tmp_path, capsys):
    arch = setup["arch"]
    out = tmp_path / "inh"
    # lr 1e-30 (0 is refused): every update is below float32 resolution of a nonzero weight (an
    # exact zero, e.g. a zero-initialised BN gamma the supernet never trained, moves by ~1e-30), so
    # the weights stay where they started and must equal the supernet's extracted ones
    assert retrain_script.main(argv(setup, out, "--arch", str(setup["root"] / "arch.json"), "--init", "inherited",
                                    "--supernet", setup["supernet"], "--lr", "1e-30", "--warmup", "0")) == 0
    assert last_json(capsys)["init"] == "inherited"
    extracted = load_supernet(setup["supernet"])[0].extract(arch).state_dict()
    trained = Detector.load(out / "model.pt").state_dict()
    weights = [k for k in extracted if k.endswith("weight")]
    assert weights and all(torch.allclose(extracted[k], trained[k], rtol=0, atol=1e-20) for k in weights)
    assert retrain_script.main(argv(setup, tmp_path / "x", "--arch", str(setup["root"] / "arch.json"), "--init", "inherited")) == 2
    assert "--init inherited: needs --supernet" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--arch", "baseline:vgg"], "baseline 'vgg': unknown"),
    (["--arch", "missing.json"], "--arch missing.json: file not found"),
    (["--arch", "baseline:resnet18_fpn_retinanet"], "block 'basic' is not a choice of stage 1"),  # the micro space lacks it there
])
def test_bad_arch_is_one_line_exit_2(setup, tmp_path, capsys, args, message):
    assert retrain_script.main(argv(setup, tmp_path / "bad", *args)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.slow
def test_retrain_under_torchrun_gloo(setup, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(REPO / "retrain.py"), *argv(setup, out, "--arch", str(setup["root"] / "arch.json"), "--steps", "3")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and METRIC_KEYS <= set(metrics)
    assert torch.load(out / "last.pt", weights_only=True)["config"]["batch_size"] == 2


def test_screening_trains_untimed_and_resumes(setup, tmp_path, monkeypatch):
    """A screening's short trainings are ranked by mAP alone: nothing is timed, and a finished one
    (metrics.json without a latency) is read back, not refused or trained again."""

    def no_timing(*args, **kwargs):
        raise AssertionError("a screening times no latency")

    monkeypatch.setattr(retrain_module, "measure_latency", no_timing)
    space = SearchSpace.load(setup["space"])
    cfg = TrainConfig(space=setup["space"], data=setup["data"], out=str(tmp_path), steps=2, batch_size=2, workers=0,
                      eval_images=2, eval_random_archs=0, calib_batches=1, device="cpu", seed=3)
    archs = [space.smallest(), space.largest()]
    first = screen(archs, space, cfg, tmp_path)
    assert {r["hash"] for r in first} == {a.hash() for a in archs} and all("latency_ms" not in r for r in first)
    assert [r["map"] for r in first] == sorted((r["map"] for r in first), reverse=True)
    monkeypatch.setattr(retrain_module, "Trainer", None)  # read back, never trained again
    assert screen(archs, space, cfg, tmp_path) == first


def test_a_trained_detector_is_timed_on_batches_of_the_validation_images(setup):
    """Its NMS filters what it finds on data: each timed batch is validation images, letterboxed
    as the detector's forward does, one batch starting where the one before ended."""
    from latency import ops
    from supernet.transform import letterbox_image

    images = [torch.rand(3, 20 + 4 * i, 32) for i in range(3)]
    batches = retrain_module.image_batches(images, batch_size=2, count=3)
    assert [[id(x) for x in b] for b in batches] == [[id(images[i]) for i in ids] for ids in ([0, 1], [2, 0], [1, 2])]
    arch = SearchSpace.load(setup["space"]).smallest()
    det = ops.detector(arch, ops.OpContext(num_classes=3))
    runner = ops.detector_runner(arch, ops.OpContext(num_classes=3), Settings(batch_size=2), det.state_dict(), images=batches[1])
    expected = torch.cat([letterbox_image(images[i], arch.resolution)[0] for i in (2, 0)])
    assert torch.equal(runner.inputs[0], expected)
    random_batch = ops.detector_runner(arch, ops.OpContext(num_classes=3), Settings(batch_size=2), det.state_dict()).inputs[0]
    assert random_batch.shape == expected.shape and not torch.equal(random_batch, expected)
