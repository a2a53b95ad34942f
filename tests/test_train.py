import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from common import COCO128, needs_coco128, read_board

from smnas.commands import train as train_supernet
from supernet.data import build_datasets
from supernet.errors import TrainError
from supernet.train_config import TrainConfig, changed_settings
from supernet.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def config(shapes, out, **kw) -> TrainConfig:
    base = dict(data=str(shapes), out=str(out), steps=6, batch_size=3, lr=0.01, warmup=2, workers=0, log_every=1,
                ckpt_every=3, eval_images=4, eval_random_archs=0, calib_batches=1, device="cpu", seed=1)
    return TrainConfig(**{**base, **kw})


def losses(run: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if "loss" in r]


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    return Trainer(cfg, build_datasets(cfg, 128), resume=resume).run()


class Interrupt(Exception):
    pass


def dies_at_step(step: int, train_step):
    """`Trainer.train_step` that raises Interrupt at `step`: a run killed there."""
    def dying(self, images, targets):
        if self.step == step:
            raise Interrupt
        return train_step(self, images, targets)
    return dying


@pytest.mark.parametrize("augment", ["flip", "scale_crop"])
def test_resume_continues_the_same_loss_curve(shapes, tmp_path, monkeypatch, augment):
    full = train(config(shapes, tmp_path / "full", augment=augment))
    assert full["step"] == 6 and Path(full["checkpoint"]).is_file()
    assert set(full["eval"]) == {"smallest", "largest"}

    original = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", dies_at_step(5, original))
    with pytest.raises(Interrupt):
        train(config(shapes, tmp_path / "cut", augment=augment))
    monkeypatch.setattr(Trainer, "train_step", original)
    assert [s for s, _ in losses(tmp_path / "cut")] == [1, 2, 3, 4, 5]
    resumed = train(config(shapes, tmp_path / "cut", augment=augment), resume=True)  # from the step-3 checkpoint
    assert resumed["step"] == 6
    assert [s for s, _ in losses(tmp_path / "cut")] == [1, 2, 3, 4, 5, 6]
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")  # logged to 5 decimals
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


def test_tensorboard_curves_of_a_resumed_run_do_not_overlap_and_end_with_hparams(shapes, tmp_path, monkeypatch):
    original = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", dies_at_step(5, original))
    with pytest.raises(Interrupt):
        train(config(shapes, tmp_path / "run"))
    monkeypatch.setattr(Trainer, "train_step", original)
    train(config(shapes, tmp_path / "run"), resume=True)  # from the step-3 checkpoint: steps 4 and 5 again
    scalars, hparams = read_board(tmp_path / "run" / "tensorboard")
    assert scalars["loss"] == [1, 2, 3, 4, 5, 6]  # the first run's steps 4 and 5 purged, each step once
    assert scalars["eval/largest/map"] == [6]
    assert hparams["lr"] == 0.01 and hparams["seed"] == 1  # the settings, beside the final mAP


def test_augment_none_draws_no_flips_and_scale_crop_changes_the_batches(shapes, tmp_path):
    keys = lambda augment: list(Trainer(config(shapes, tmp_path / augment, augment=augment), build_datasets(config(shapes, tmp_path), 128))
                                .loader(0, 3).batch_sampler)
    assert not any(flip for batch in keys("none") for _, flip, _ in batch) and any(flip for batch in keys("flip") for _, flip, _ in batch)
    cfg = config(shapes, tmp_path / "sc", augment="scale_crop")
    images, _ = next(iter(Trainer(cfg, build_datasets(cfg, 128)).loader(0, 1)))
    plain, _ = next(iter(Trainer(config(shapes, tmp_path / "fl"), build_datasets(cfg, 128)).loader(0, 1)))
    assert [tuple(i.shape) for i in images] != [tuple(i.shape) for i in plain]


def test_sandwich_and_fair_samplers_train(shapes, tmp_path):
    for sampler in ("sandwich", "fair"):
        result = train(config(shapes, tmp_path / sampler, steps=2, sampler=sampler))
        assert result["step"] == 2
        assert all(v["map"] >= 0 for v in result["eval"].values())


def test_repeated_nan_stops_with_last_good_checkpoint(shapes, tmp_path, monkeypatch):
    original = Trainer.train_step

    def nan_after_2(self, images, targets):
        if self.step >= 2:
            self.optimizer.zero_grad(set_to_none=True)
            return None  # what train_step reports for a non-finite loss
        return original(self, images, targets)

    monkeypatch.setattr(Trainer, "train_step", nan_after_2)
    cfg = config(shapes, tmp_path / "nan", steps=20, ckpt_every=2)
    with pytest.warns(UserWarning, match="non-finite loss"), pytest.raises(TrainError, match=r"NaN/inf for 5 steps.*last\.pt"):
        train(cfg)
    blob = torch.load(tmp_path / "nan" / "last.pt", weights_only=True)
    assert blob["step"] == 6  # saved at step 2, 4, 6 while steps 3.. were skipped: weights still those of step 2


def test_non_finite_loss_is_skipped(shapes, tmp_path, monkeypatch):
    cfg = config(shapes, tmp_path / "skip", steps=1)
    trainer = Trainer(cfg, build_datasets(cfg, 128))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    images, targets = next(iter(trainer.loader()))
    images, targets = trainer._to_device(images, targets)
    real = trainer.ddp.forward
    monkeypatch.setattr(trainer, "ddp", lambda *a, **k: {n: v * float("nan") for n, v in real(*a, **k).items()})
    assert trainer.train_step(images, targets) is None
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "/nonexistent/coco"], "/nonexistent/coco: data folder not found"),
        (["--space", "huge"], "--space: 'huge' is neither a preset"),
        (["--train-ann", "x.json"], "--train-images, --val-ann, --val-images: needed when --data is not given"),
        # values that used to train something else silently, or fail deep inside timm
        (["--clip-grad", "-1"], "--clip-grad: expected a number in [0, inf] or none, got -1.0"),
        (["--steps", "0"], "--steps: expected an integer in [1, inf] or none, got 0"),
        (["--steps", "-5"], "--steps: expected an integer in [1, inf]"),
        (["--epochs", "0"], "--epochs: expected an integer in [1, inf], got 0"),
        (["--momentum", "nan"], "--momentum: expected a number in [0, 1), got nan"),
        (["--eval-every", "-1"], "--eval-every: expected an integer in [0, inf], got -1"),
        (["--ema", "2.0"], "--ema: expected a number in (0, 1) or none, got 2.0"),
        (["--warmup", "-1"], "--warmup: expected an integer in [0, inf], got -1"),
        (["--weight-decay", "-1"], "--weight-decay: expected a number in [0, inf], got -1.0"),
        (["--lr", "0"], "--lr: expected a number in (0, inf], got 0.0"),
        (["--lr", "nan"], "--lr: expected a number in (0, inf], got nan"),
        (["--batch-size", "0"], "--batch-size: expected an integer in [1, inf], got 0"),
        (["--batch-size", "-1"], "--batch-size: expected an integer in [1, inf], got -1"),
        (["--ckpt-every", "0"], "--ckpt-every: expected an integer in [1, inf], got 0"),
        (["--log-every", "0"], "--log-every: expected an integer in [1, inf], got 0"),
        (["--eval-images", "-3"], "--eval-images: expected an integer in [0, inf], got -3"),
        (["--workers", "-1"], "--workers: expected an integer in [0, inf], got -1"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path):
    assert train_supernet.main(argv + ["--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_bad_annotations_and_resume_errors(shapes, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    argv = ["--train-ann", str(bad), "--train-images", str(shapes / "train2017"), "--val-ann", str(bad), "--val-images", str(shapes / "val2017")]
    assert train_supernet.main(argv + ["--out", str(tmp_path / "r")]) == 2
    assert "bad.json" in capsys.readouterr().err
    common = ["--data", str(shapes), "--out", str(tmp_path / "r2"), "--steps", "1", "--batch-size", "2", "--workers", "0", "--device", "cpu"]
    assert train_supernet.main(common + ["--resume"]) == 2
    assert "--resume: no checkpoint at" in capsys.readouterr().err
    assert train_supernet.main(common + ["--eval-images", "2"]) == 0
    finished, records = (tmp_path / "r2" / "last.pt").read_bytes(), (tmp_path / "r2" / "metrics.jsonl").read_text()
    assert train_supernet.main(common + ["--eval-images", "2"]) == 2  # a new run would overwrite the finished one
    assert "holds a run" in capsys.readouterr().err and (tmp_path / "r2" / "last.pt").read_bytes() == finished
    assert train_supernet.main(common + ["--eval-images", "2", "--overwrite"]) == 0
    assert len((tmp_path / "r2" / "metrics.jsonl").read_text().splitlines()) == len(records.splitlines())  # not appended to
    other = tmp_path / "space.json"
    from supernet import SearchSpace

    d = json.loads(SearchSpace.preset("tiny").to_json())
    d["resolutions"] = [64]
    other.write_text(json.dumps(d))
    assert train_supernet.main(common + ["--resume", "--space", str(other)]) == 2
    assert "another search space" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_processes_gloo_identical_weights(shapes, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(REPO / "tests" / "ddp_worker.py"), str(shapes), str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "ddp" / "ranks.json").read_text())
    assert report["world"] == 2 and report["identical"], report
    assert report["steps"] == 4 and report["off_path_untouched"]
    assert "unused parameters" not in proc.stderr




def test_eval_images_0_scores_every_validation_image(shapes, tmp_path):
    cfg = config(shapes, tmp_path / "run", steps=1, eval_images=0)
    trainer = Trainer(cfg, build_datasets(cfg, 128))  # before: "no images to evaluate", after the whole training
    assert trainer.evaluate() == trainer.evaluate(max_images=len(trainer.val_set))


@pytest.mark.slow
def test_ddp_evaluation_splits_the_images_and_equals_a_single_process(shapes, tmp_path):
    """Each rank detects its share of the validation images (7: shares of 4 and 3); one COCOeval
    of them all gives what one process evaluating the same weights gets."""
    settings = dict(steps=2, batch_size=2, lr=0.05, warmup=1, workers=0, log_every=1, ckpt_every=100, eval_images=7,
                    eval_random_archs=1, calib_batches=2, device="cpu", seed=5)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(REPO / "tests" / "ddp_eval_worker.py"), str(shapes), str(out), json.dumps({**settings, "sync_bn": True})]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)  # trained with synchronised BN
    assert proc.returncode == 0, proc.stderr[-3000:]
    split = json.loads((out / "eval.json").read_text())
    cfg = TrainConfig(**settings, data=str(shapes), out=str(out))
    single_cfg = replace(cfg, out=str(tmp_path / "single"))
    with pytest.raises(TrainError, match=r"^`sync_bn`: needs a process group of 2 or more ranks"):
        Trainer(replace(single_cfg, sync_bn=True), build_datasets(cfg, 128))
    trainer = Trainer(single_cfg, build_datasets(cfg, 128))  # one process, the DDP run's final weights
    trainer.model.load_state_dict(torch.load(out / "last.pt", weights_only=True)["model"])
    single = trainer.evaluate()
    assert set(split) == set(single) == {"smallest", "largest", "random0"}
    for name in single:
        assert split[name]["hash"] == single[name]["hash"]
        assert split[name]["map"] > 0 or single[name]["map"] == 0
        for k, v in single[name].items():
            assert split[name][k] == pytest.approx(v, abs=1e-6), (name, k)


@pytest.mark.slow
def test_ctrl_c_on_one_rank_stops_every_rank_after_the_same_step(shapes, tmp_path):
    """Under torchrun a Ctrl-C may reach only some ranks: they agree on the step, rank 0 saves,
    and a resumed run ends where an uninterrupted one would."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(REPO / "tests" / "ddp_interrupt_worker.py"), str(shapes), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] == seen[1] and seen[0]["step"] == 3 and "interrupted at step 3 of 6" in seen[0]["interrupted"], seen
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3
    for r in (0, 1):
        (out / f"rank{r}.json").unlink()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)  # resumed: rank 1 is interrupted no more
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)] == [{"interrupted": None, "step": 6}] * 2


@needs_coco128
def test_trains_and_evaluates_on_real_coco128(tmp_path, capsys):
    """A COCO-format dataset written by another tool (80 non-contiguous ids, crowd boxes, empty
    images) through the override flags."""
    ann, images = str(COCO128 / "instances.json"), str(COCO128 / "images")
    argv = ["--train-ann", ann, "--train-images", images, "--val-ann", ann, "--val-images", images, "--out", str(tmp_path / "run"),
            "--steps", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--eval-images", "4", "--log-every", "1"]
    assert train_supernet.main(argv) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)  # stdout is the JSON line alone (`| jq` works); people read stderr
    assert "mAP largest" in out.err and "checkpoint" in out.err
    assert result["step"] == 2 and set(result["eval"]["largest"]) >= {"map", "ap50", "ap75", "aps", "apm", "apl"}
    blob = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert blob["num_classes"] == 80 and blob["cat_ids"][:3] == [1, 2, 3] and blob["cat_ids"][-1] == 90


def test_resume_refuses_changed_settings_and_allows_runtime_ones(shapes, tmp_path):
    cfg = config(shapes, tmp_path / "run", steps=2)
    train(cfg)
    with pytest.raises(TrainError, match=r"`steps` 2 -> 3, `ema` None -> 0.99"):
        Trainer(config(shapes, tmp_path / "run", steps=3, ema=0.99), build_datasets(cfg, 128), resume=True)
    with pytest.raises(TrainError, match=r"`lr` 0.01 -> 0.02"):
        Trainer(config(shapes, tmp_path / "run", steps=2, lr=0.02), build_datasets(cfg, 128), resume=True)
    # where and how it runs may change: the finished run is evaluated again, its final record once
    again = train(config(shapes, tmp_path / "run", steps=2, log_every=2, eval_images=2, ckpt_every=1), resume=True)
    assert again["step"] == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval" in r] == [2] and [r["step"] for r in records if "loss" in r] == [1, 2]


def test_a_checkpoint_that_predates_width_sampling_was_trained_with_uniform_widths():
    """Resuming a run saved before the option existed must not switch it to today's default."""
    assert changed_settings({}, TrainConfig(width_sampling="uniform")) == []
    assert changed_settings({}, TrainConfig(width_sampling="wide")) == ["`width_sampling` 'uniform' -> 'wide'"]
    assert changed_settings({"width_sampling": "wide"}, TrainConfig(width_sampling="wide")) == []


def test_resume_with_another_thread_count_warns(shapes, tmp_path):
    cfg = config(shapes, tmp_path / "run", steps=2)
    train(cfg)
    threads = torch.get_num_threads()
    blob = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert blob["threads"] == threads
    blob["threads"] = threads + 1
    torch.save(blob, tmp_path / "run" / "last.pt")
    with pytest.warns(UserWarning, match="threads.*not bit-equal"):
        Trainer(cfg, build_datasets(cfg, 128), resume=True)


def test_a_fresh_run_drops_debris_and_a_second_writer_is_refused(shapes, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 7, "loss": 1.0}\n')  # a run killed before its first checkpoint
    (out / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    cfg = config(shapes, out, steps=2)
    first = Trainer(cfg, build_datasets(cfg, 128))
    assert not (out / ".last.pt.abc123.tmp").exists() and not (out / "metrics.jsonl").exists()
    with pytest.raises(TrainError, match=rf"`out` {out}: another run \(pid {os.getpid()}\) is writing here"):
        Trainer(cfg, build_datasets(cfg, 128))
    first.run()  # releases the folder
    assert [s for s, _ in losses(out)] == [1, 2]
    Trainer(cfg, build_datasets(cfg, 128), resume=True).run()


def test_non_finite_weights_stop_the_run_without_a_checkpoint(shapes, tmp_path, monkeypatch):
    cfg = config(shapes, tmp_path / "run", steps=6, ckpt_every=2)
    original = torch.optim.SGD.step

    def poisons_at_step_3(self, *a, **kw):
        out = original(self, *a, **kw)
        if trainer.step == 3:
            with torch.no_grad():
                next(p for g in self.param_groups for p in g["params"] if p.grad is not None).fill_(float("nan"))
        return out

    trainer = Trainer(cfg, build_datasets(cfg, 128))
    monkeypatch.setattr(torch.optim.SGD, "step", poisons_at_step_3)
    with pytest.raises(TrainError, match="step 3: the update made weights NaN/inf"):
        trainer.run()
    blob = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert blob["step"] == 2 and all(torch.isfinite(v).all() for v in blob["model"].values() if v.is_floating_point())


def test_ctrl_c_saves_at_the_step_boundary_and_resume_matches(shapes, tmp_path, monkeypatch):
    import signal

    from supernet.errors import Interrupted

    full = train(config(shapes, tmp_path / "full", ckpt_every=100))
    original = Trainer.train_step

    def ctrl_c_at_step_4(self, images, targets):
        if self.step == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, images, targets)

    monkeypatch.setattr(Trainer, "train_step", ctrl_c_at_step_4)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under a backgrounded shell
    with pytest.raises(Interrupted, match="interrupted at step 5 of 6"):
        train(config(shapes, tmp_path / "cut", ckpt_every=100))
    monkeypatch.setattr(Trainer, "train_step", original)
    assert signal.getsignal(signal.SIGINT) == before  # restored
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["step"] == 5
    train(config(shapes, tmp_path / "cut", ckpt_every=100), resume=True)
    assert losses(tmp_path / "cut") == losses(tmp_path / "full") and full["step"] == 6


def test_stage_matched_training_samples_the_sub_space(shapes, tmp_path):
    from supernet import Arch, SearchSpace
    from supernet.space import StageArch

    cfg = config(shapes, tmp_path / "structural", steps=2, train_blocks=("ir_k3_e6",), eval_random_archs=1)
    trainer = Trainer(cfg, build_datasets(cfg, 128))
    paths = [a for step in range(20) for a in trainer.sampler.paths(step)]
    assert all(b == "ir_k3_e6" for a in paths for s in a.backbone.stages for b in s.blocks)
    assert all(b == "ir_k3_e6" for a in trainer.eval_archs.values() for s in a.backbone.stages for b in s.blocks)
    assert trainer.model.space == SearchSpace.preset("tiny")  # the supernet still holds every candidate
    trainer.run()
    # fine-tune on one structure, from those weights: every block type, the structure fixed
    base = SearchSpace.preset("tiny").sample(2)
    base = Arch(base.resolution, type(base.backbone)(base.backbone.stem_width, [StageArch(s.width, ("ir_k3_e6",) * s.depth) for s in base.backbone.stages]),
                base.neck, base.head)
    structure = tmp_path / "structure.json"
    structure.write_text(base.to_json())
    cfg = config(shapes, tmp_path / "finetune", steps=1, structure=str(structure), start_from=str(tmp_path / "structural" / "last.pt"))
    tuned = Trainer(cfg, build_datasets(cfg, 128))
    start = torch.load(tmp_path / "structural" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(v, start[k]) for k, v in tuned.model.state_dict().items())
    paths = [a for step in range(30) for a in tuned.sampler.paths(step)]
    assert {(a.resolution, a.neck.type, a.head.type, tuple(s.depth for s in a.backbone.stages)) for a in paths} == {
        (base.resolution, base.neck.type, base.head.type, tuple(s.depth for s in base.backbone.stages))}
    assert len({b for a in paths for s in a.backbone.stages for b in s.blocks}) > 3


def test_region_training_samples_only_the_region(shapes, tmp_path):
    from supernet import SearchSpace

    cfg = config(shapes, tmp_path / "region", steps=1, space="tiny_one_stage", train_blocks=("ir_k3_e6",), train_resolutions=(96,),
                 train_heads=("fcos",), eval_random_archs=1)
    trainer = Trainer(cfg, build_datasets(cfg, 96))
    paths = [a for step in range(30) for a in trainer.sampler.paths(step)] + list(trainer.eval_archs.values())
    assert {(a.resolution, a.head.type) for a in paths} == {(96, "fcos")}
    assert len({a.neck.type for a in paths}) == 3 and len({tuple(s.depth for s in a.backbone.stages) for a in paths}) > 3
    assert trainer.model.space == SearchSpace.preset("tiny_one_stage")


@pytest.mark.parametrize("flags, message", [
    (["--train-blocks", "bogus"], "--train-blocks: none of ['bogus']"),
    (["--train-resolutions", "100"], "--train-resolutions: [100] not among this space's choices [64, 96, 128]"),
    (["--train-heads", "yolo"], "--train-heads: ['yolo'] not among this space's choices"),
    (["--structure", "nowhere.json"], "--structure: nowhere.json not found"),
    (["--start-from", "nowhere.pt"], "--start-from: nowhere.pt: supernet checkpoint not found"),
])
def test_stage_matched_flags_errors(shapes, tmp_path, capsys, flags, message):
    argv = ["--data", str(shapes), "--out", str(tmp_path / "r"), "--steps", "1", "--batch-size", "2", "--workers", "0", "--device", "cpu"]
    assert train_supernet.main(argv + flags) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_gradients_are_averaged_over_the_paths_that_ran_each_weight(shapes, tmp_path):
    """Two paths that share the backbone but not the head type: the shared weights get the mean
    of both gradients, each head its own path's gradient in full."""
    cfg = config(shapes, tmp_path / "g", steps=1, clip_grad=None, train_blocks=("ir_k3_e6",))
    trainer = Trainer(cfg, build_datasets(cfg, 128))
    a = trainer.sample_space.smallest()
    heads = [t for t in trainer.space.head.types if t != a.head.type]
    b = type(a)(a.resolution, a.backbone, a.neck, type(a.head)(heads[0], a.head.width, a.head.num_convs))
    images, targets = trainer._to_device(*next(iter(trainer.loader(0, 1))))

    def grads(paths):
        trainer.model.zero_grad(set_to_none=True)
        for arch in paths:  # what train_step accumulates, without the optimizer step
            losses = trainer.model(images, targets, arch=arch)
            (sum(losses.values()) / len(paths)).backward()
        trainer._average_over_users(paths)
        return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    both, only_a, only_b = grads([a, b]), grads([a]), grads([b])
    stem = "backbone.stem.conv.weight"
    assert torch.allclose(both[stem], (only_a[stem] + only_b[stem]) / 2, atol=1e-6)
    head_a = next(n for n in only_a if n.startswith(f"head.{a.head.type}."))
    head_b = next(n for n in only_b if n.startswith(f"head.{b.head.type}."))
    assert torch.allclose(both[head_a], only_a[head_a], atol=1e-6) and torch.allclose(both[head_b], only_b[head_b], atol=1e-6)


def test_bf16_autocast_trains_on_cpu_and_fp16_is_refused_there(shapes, tmp_path):
    result = train(config(shapes, tmp_path / "bf16", steps=2, amp="bf16"))
    assert result["step"] == 2 and all(0 <= m["map"] <= 1 for m in result["eval"].values())
    blob = torch.load(tmp_path / "bf16" / "last.pt", weights_only=True)
    assert blob["config"]["amp"] == "bf16" and all(t.dtype == torch.float32 for t in blob["model"].values() if t.is_floating_point())
    with pytest.raises(TrainError, match=r"`amp` fp16: needs a CUDA device \(this run is on cpu\)"):
        train(config(shapes, tmp_path / "fp16", amp="fp16"))
    with pytest.raises(TrainError, match=r"`amp`: expected one of \['fp16', 'bf16'\] or none, got 'fp8'"):
        config(shapes, tmp_path / "fp8", amp="fp8")


def test_a_checkpoint_from_when_amp_was_a_switch_resumes_unchanged():
    recorded = {"width_sampling": "wide"}  # (a field the test does not care about, predated otherwise)
    assert changed_settings({**recorded, "amp": False}, TrainConfig(amp=None)) == []
    assert changed_settings({**recorded, "amp": True}, TrainConfig(amp="fp16")) == []
    assert changed_settings({**recorded, "amp": True}, TrainConfig(amp="bf16")) == ["`amp` 'fp16' -> 'bf16'"]


def test_the_loader_memory_is_printed_at_start_and_warned_when_over_what_is_available(shapes, tmp_path, caplog, monkeypatch):
    from supernet.data import coco

    with caplog.at_level("INFO", logger="supernet.trainer"):
        train(config(shapes, tmp_path / "a", steps=1, workers=2))
    line = next(r.message for r in caplog.records if r.message.startswith("data: 24 images"))
    assert "2 loader workers x up to 0.3 MB of decoded batches (2 x 3 images at 128 px)" in line
    monkeypatch.setattr(coco, "_available_memory", lambda: 1024)
    with pytest.warns(UserWarning, match="more than is available; lower `workers` or `batch_size`"):
        train(config(shapes, tmp_path / "b", steps=1))
