"""Every bad input to the five commands: exit code 2, one line naming the flag or file, no
traceback, and nothing that was there before changed (checksums)."""
import hashlib
import json
import os
from pathlib import Path

import pytest
from common import MICRO_SPACE, StepTimer, write_space

from smnas.commands import retrain, train as train_supernet
from smnas.commands import search as evolve
from latency.__main__ import main as latency_main
from latency.measure import Settings
from latency.table import build_table
from supernet.data import build_datasets
from supernet.export import main as export_main
from supernet.shapes import generate_shapes
from supernet.space import SearchSpace
from supernet.supernet import Detector
from supernet.train_config import TrainConfig
from supernet.trainer import Trainer

COMMANDS = {"train": train_supernet.main, "retrain": retrain.main, "evolve": evolve.main, "latency": latency_main, "export": export_main}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    data = generate_shapes(root / "shapes", train=8, val=4, size=64, seed=0)
    space = write_space(root / "space.json")
    cfg = TrainConfig(space=space, data=str(data), out=str(root / "run"), steps=2, batch_size=2, workers=0, eval_images=2,
                      eval_random_archs=0, calib_batches=1, device="cpu")
    Trainer(cfg, build_datasets(cfg, 96)).run()
    micro = SearchSpace.from_dict(MICRO_SPACE)
    table = build_table(micro, Settings(warmup=0, repeats=1), root / "lut.json", num_classes=3, passes=1, calib_archs=0,
                        timer=StepTimer(), progress=False)
    arch = micro.smallest()
    (root / "arch.json").write_text(arch.to_json())
    (root / "archs.json").write_text(json.dumps([{"arch": arch.to_dict()}]))
    Detector(arch, 3, micro.activation, micro.head.anchor_scale).save(root / "model.pt")
    (root / "garbage.json").write_bytes(b"\x89 not json \xff\x00")
    (root / "afile").write_text("a file, not a folder")
    (root / "exported").mkdir()
    (root / "exported" / "model.onnx").write_bytes(b"an earlier export")
    for name, text in (("othermetrics", '{"kind": "something else"}'), ("archmetrics", '{"hash": "0123abcd", "map": 0.1, "latency_ms": 1.0}')):
        (root / name).mkdir()
        (root / name / "metrics.json").write_text(text)
    (root / "search").mkdir()
    (root / "search" / "history.jsonl").write_text('{"hash": "x"}\n')
    budget = (table.extreme(True)[1] + table.extreme(False)[1]) / 2
    return {"root": root, "data": str(data), "space": space, "run": str(root / "run"), "ckpt": str(root / "run" / "last.pt"),
            "lut": str(root / "lut.json"), "arch": str(root / "arch.json"), "archs": str(root / "archs.json"),
            "model": str(root / "model.pt"), "garbage": str(root / "garbage.json"), "afile": str(root / "afile"),
            "search": str(root / "search"), "exported": str(root / "exported"), "missing": str(root / "missing.json"),
            "othermetrics": str(root / "othermetrics"), "archmetrics": str(root / "archmetrics"), "budget": f"{budget:.4f}"}


def base(command: str, case: list[str]) -> list[str]:
    """The valid flags each case changes one thing of."""
    if command in ("train", "retrain"):
        length = [] if {"--steps", "--epochs"} & set(case) else ["--steps", "2"]
        flags = ["--data", "{data}", "--space", "{space}", "--workers", "0", "--device", "cpu", "--batch-size", "2",
                 "--eval-images", "2", "--out", "{tmp}/out", *length]
        if command == "retrain" and "--arch" not in case:
            flags += ["--arch", "{arch}"]
        return flags
    if command == "evolve":
        return ["--supernet", "{ckpt}", "--lut", "{lut}", "--latency-budget", "{budget}", "--population", "2", "--generations", "1",
                "--calib-batches", "1", "--eval-images", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--out", "{tmp}/out"]
    return []


def later_wins(argv: list[str]) -> list[str]:
    """Drop a base flag (and its values) that the case gives again."""
    chunks: list[list[str]] = []
    for a in argv:
        if a.startswith("--") or not chunks:
            chunks.append([a])
        else:
            chunks[-1].append(a)
    last = {c[0]: i for i, c in enumerate(chunks)}
    return [a for i, c in enumerate(chunks) if not c[0].startswith("--") or last[c[0]] == i for a in c]


CASES = [
    # train_supernet.py
    ("train", ["--steps", "0"], "--steps"),
    ("train", ["--steps", "abc"], "--steps"),
    ("train", ["--augment", "bogus"], "--augment"),
    ("train", ["--resume", "--overwrite"], "--overwrite"),
    ("train", ["--distill", "1", "--sampler", "uniform"], "--distill"),
    ("train", ["--random-paths", "0"], "--random-paths"),
    ("train", ["--width-sampling", "widest"], "--width-sampling"),
    ("train", ["--steps", "-5"], "--steps"),
    ("train", ["--epochs", "0"], "--epochs"),
    ("train", ["--batch-size", "0"], "--batch-size"),
    ("train", ["--batch-size", "-1"], "--batch-size"),
    ("train", ["--batch-size", "1000"], "--batch-size"),
    ("train", ["--lr", "0"], "--lr"),
    ("train", ["--lr", "nan"], "--lr"),
    ("train", ["--lr", "inf"], "--lr"),
    ("train", ["--momentum", "nan"], "--momentum"),
    ("train", ["--momentum", "1"], "--momentum"),
    ("train", ["--warmup", "-1"], "--warmup"),
    ("train", ["--weight-decay", "-1"], "--weight-decay"),
    ("train", ["--clip-grad", "-1"], "--clip-grad"),
    ("train", ["--ema", "2.0"], "--ema"),
    ("train", ["--eval-every", "-1"], "--eval-every"),
    ("train", ["--ckpt-every", "0"], "--ckpt-every"),
    ("train", ["--log-every", "0"], "--log-every"),
    ("train", ["--eval-images", "-1"], "--eval-images"),
    ("train", ["--data", "{afile}"], "afile"),
    ("train", ["--workers", "-1"], "--workers"),
    ("train", ["--space", "nosuch"], "nosuch"),
    ("train", ["--data", "{tmp}/nodata"], "nodata"),
    ("train", ["--val-ann", "{garbage}"], "garbage.json"),
    ("train", ["--out", "{run}"], "--resume"),
    ("train", ["--out", "{run}", "--resume", "--lr", "0.5"], "--lr"),
    ("train", ["--resume"], "--resume"),
    ("train", ["--train-blocks", "bogus"], "--train-blocks"),
    ("train", ["--structure", "{missing}"], "--structure"),
    ("train", ["--structure", "{garbage}"], "--structure"),
    ("train", ["--start-from", "{garbage}"], "--start-from"),
    ("train", ["--amp"], "--amp"),
    ("train", ["--out", "{afile}/sub"], "afile"),
    # retrain.py
    ("retrain", ["--arch", "{missing}"], "--arch"),
    ("retrain", ["--arch", "{garbage}"], "--arch"),
    ("retrain", ["--arch", "baseline:nosuch"], "nosuch"),
    ("retrain", ["--arch", "{archs}", "--index", "5"], "--index"),
    ("retrain", ["--init", "inherited"], "--supernet"),
    ("retrain", ["--supernet", "{garbage}"], "garbage.json"),
    ("retrain", ["--lut", "{garbage}"], "--lut"),
    ("retrain", ["--lut", "{arch}"], "--lut"),
    ("retrain", ["--lr", "-1"], "--lr"),
    ("retrain", ["--init", "bogus"], "--init"),
    ("retrain", ["--steps", "0"], "--steps"),
    ("retrain", ["--out", "{afile}/sub"], "afile"),
    ("retrain", ["--out", "{othermetrics}", "--resume"], "othermetrics/metrics.json"),
    ("retrain", ["--out", "{archmetrics}", "--resume"], "archmetrics/metrics.json"),
    # evolve.py
    ("evolve", ["--latency-budget", "nan"], "--latency-budget"),
    ("evolve", ["--latency-budget", "-1"], "--latency-budget"),
    ("evolve", ["--flops-budget", "0"], "--flops-budget"),
    ("evolve", ["--flops-budget", "-1"], "--flops-budget"),
    ("evolve", ["--params-budget", "nan"], "--params-budget"),
    ("evolve", ["--structural-block", "bogus"], "--structural-block"),
    ("evolve", ["--population", "0"], "--population"),
    ("evolve", ["--population", "x"], "--population"),
    ("evolve", ["--generations", "0"], "--generations"),
    ("evolve", ["--mutation-prob", "2"], "--mutation-prob"),
    ("evolve", ["--crossover-prob", "-0.1"], "--crossover-prob"),
    ("evolve", ["--eval-images", "-1"], "--eval-images"),
    ("evolve", ["--eval-images", "1000"], "--eval-images"),
    ("evolve", ["--finetune-steps", "-1"], "--finetune-steps"),
    ("evolve", ["--topk", "0"], "--topk"),
    ("evolve", ["--supernet", "{missing}"], "missing.json"),
    ("evolve", ["--lut", "{garbage}"], "garbage.json"),
    ("evolve", ["--lut", "{arch}"], "arch.json"),
    ("evolve", ["--stage", "modular"], "--base-arch"),
    ("evolve", ["--out", "{search}"], "--resume"),
    ("evolve", ["--out", "{afile}/sub"], "afile"),
    # python -m latency
    ("latency", ["build", "--space", "{space}", "--out", "{lut}"], "--overwrite"),
    ("latency", ["build", "--space", "{space}", "--out", "{tmp}"], "--out"),
    ("latency", ["build", "--space", "{space}", "--out", "{afile}/lut.json"], "--out"),
    ("latency", ["build", "--space", "{space}", "--out", "{tmp}/l.json", "--batch-size", "0"], "--batch-size"),
    ("latency", ["build", "--space", "{space}", "--out", "{tmp}/l.json", "--threads", "0"], "--threads"),
    ("latency", ["build", "--space", "{space}", "--out", "{tmp}/l.json", "--dtype", "fp64"], "--dtype"),
    ("latency", ["build", "--space", "{space}", "--out", "{tmp}/l.json", "--num-classes", "0"], "--num-classes"),
    ("latency", ["build", "--space", "{space}", "--out", "{tmp}/l.json", "--calib", "-1"], "--calib"),
    ("latency", ["build", "--space", "{space}", "--out", "{tmp}/l.json", "--passes", "0"], "--passes"),
    ("latency", ["build", "--space", "{space}", "--out", "{tmp}/l.json", "--repeats", "0"], "--repeats"),
    ("latency", ["build", "--space", "{space}", "--out", "{tmp}/l.json", "--warmup", "-1"], "--warmup"),
    ("latency", ["build", "--space", "nosuch", "--out", "{tmp}/l.json"], "nosuch"),
    ("latency", ["validate", "--lut", "{missing}"], "missing.json"),
    ("latency", ["validate", "--lut", "{garbage}"], "garbage.json"),
    ("latency", ["validate", "--lut", "{arch}"], "arch.json"),
    ("latency", ["validate", "--lut", "{lut}", "--samples", "0"], "--samples"),
    # python -m supernet.export
    ("export", ["{missing}"], "missing.json"),
    ("export", ["{garbage}"], "garbage.json"),
    ("export", ["{ckpt}"], "last.pt"),
    ("export", ["{model}", "--formats", "bogus"], "--formats"),
    ("export", ["{model}", "--out", "{afile}"], "afile"),
    ("export", ["{model}", "--out", "{exported}"], "--overwrite"),
]


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_there_are_enough_cases():
    assert len(CASES) >= 50 and {c for c, _, _ in CASES} == set(COMMANDS)


@pytest.mark.parametrize("command,case,expected", CASES, ids=[f"{c}:{' '.join(a)}" for c, a, _ in CASES])
def test_bad_input_gets_one_line_and_changes_nothing(files, tmp_path, capsys, command, case, expected):
    values = {**files, "tmp": str(tmp_path)}
    argv = later_wins([a.format(**values) for a in base(command, case) + case])
    before = checksums(files["root"])
    capsys.readouterr()
    try:
        rc = COMMANDS[command](argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert expected.format(**values) in lines[0], lines[0]
    after = checksums(files["root"])
    assert {k: after.get(k) for k in before} == before


def test_a_full_disk_mid_run_leaves_the_last_checkpoint_intact(files, tmp_path, monkeypatch, capsys):
    import errno

    import supernet.io

    out = tmp_path / "run"
    argv = [a.format(**files, tmp=tmp_path) for a in base("train", ["--steps", "4"])] + ["--ckpt-every", "2", "--out", str(out), "--steps", "4"]
    argv = later_wins(argv)
    writes = {"n": 0}
    original = supernet.io.os.fsync

    def disk_full_on_second_checkpoint(fd):
        writes["n"] += "last.pt" in os.readlink(f"/proc/self/fd/{fd}")  # the checkpoint's temp file, not config.yaml
        if writes["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "last.pt"))
        return original(fd)

    monkeypatch.setattr(supernet.io.os, "fsync", disk_full_on_second_checkpoint)
    capsys.readouterr()
    assert train_supernet.main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert lines == [f"error: {out / 'last.pt'}: No space left on device"]
    import torch

    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2  # the first checkpoint, whole
    assert not list(out.glob(".*.tmp"))


def test_a_full_disk_mid_export_keeps_the_earlier_export(files, tmp_path, monkeypatch, capsys):
    """The exports are written by Python from memory: the full disk is one line naming the file
    (the C++ writers used to abort the process and leave their partial file), and the export
    that was there is intact."""
    import errno

    import supernet.io

    out = tmp_path / "exported"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"an earlier export")
    (out / ".model.onnx.abc.tmp").write_bytes(b"left by an export that was killed")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # as the OS raises it: no file name

    monkeypatch.setattr(supernet.io.os, "fsync", disk_full)
    capsys.readouterr()
    assert export_main([files["model"], "--out", str(out), "--formats", "onnx", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out / 'model.onnx'}: No space left on device"
    assert (out / "model.onnx").read_bytes() == b"an earlier export"
    assert not list(out.glob(".*.tmp"))  # neither this write's temp file nor the killed one's


def test_an_unreadable_image_is_named_or_skipped(files, tmp_path, capsys):
    import shutil

    data = tmp_path / "shapes"
    shutil.copytree(files["data"], data)
    images = sorted((data / "train2017").iterdir())
    images[1].write_bytes(images[1].read_bytes()[:100])  # a truncated image
    argv = later_wins([a.format(**files, tmp=tmp_path) for a in base("train", [])] + ["--data", str(data), "--workers", "0"])
    capsys.readouterr()
    assert train_supernet.main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and str(images[1]) in err[0] and "image id" in err[0] and "--skip-unreadable" in err[0]
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image"):
        assert train_supernet.main(argv + ["--overwrite", "--skip-unreadable"]) == 0
