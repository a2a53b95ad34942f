"""The `smnas` command: one entry point, flags generated from the config dataclasses, run configs."""
import dataclasses
import json
import subprocess
import sys

import pytest
import torch
import yaml
from common import REPO, write_space

from search.nas import SearchConfig
from search.retrain import RetrainJob
from smnas import __version__
from smnas.cli import main as smnas
from smnas.commands import retrain as retrain_command, search as search_command, train as train_command
from supernet.shapes import generate_shapes
from supernet.train_config import TrainConfig


@pytest.mark.parametrize("command, classes", [("train", [TrainConfig]), ("search", [SearchConfig]), ("retrain", [RetrainJob, TrainConfig])])
def test_every_config_field_is_a_flag_with_help_and_default(command, classes, capsys):
    assert smnas([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for cls in classes:
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            assert flag in text, flag
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
    assert "(default: 0.04)" in text or command == "search"  # defaults are shown
    assert "--config FILE" in text


def test_dispatcher_version_and_unknown_command(capsys):
    assert smnas(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"smnas {__version__}"
    assert smnas(["trian"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'trian'" in err and "train" in err
    assert smnas(["train", "--steps", "abc"]) == 2
    assert "--steps" in capsys.readouterr().err


def test_python_dash_m_smnas_runs_a_command(tmp_path):
    space = write_space(tmp_path / "space.json")
    proc = subprocess.run([sys.executable, "-m", "smnas", "info", "--space", space, "--num-classes", "3"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)  # stdout is the JSON result alone
    assert report["archs"]["largest"]["extract_matches"] and report["space_size"] > 1


def test_config_file_sets_defaults_and_flags_override_it(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"lr": 0.5, "epochs": 3, "train_blocks": ["ir_k3_e6"], "ema": 0.99, "amp": "bf16", "out": "x"}))
    config, resume, overwrite = train_command.parse(["--config", str(run), "--epochs", "7", "--amp", "none", "--ema", "none"])
    assert config == dataclasses.replace(TrainConfig(), lr=0.5, epochs=7, train_blocks=("ir_k3_e6",), ema=None, amp=None, out="x")
    assert train_command.parse(["--amp"])[0].amp == "fp16" and train_command.parse(["--amp", "bf16"])[0].amp == "bf16"
    old = tmp_path / "old.yaml"
    old.write_text("amp: true\n")  # a config written when amp was a switch
    assert train_command.parse(["--config", str(old)])[0].amp == "fp16"
    assert not resume and not overwrite
    search = tmp_path / "search.yaml"
    search.write_text("latency_budget: 12.5\nsmooth: true\n")
    config, _ = search_command.parse(["--config", str(search)])
    assert config == dataclasses.replace(SearchConfig(), latency_budget=12.5, smooth=True)
    job, args, _ = retrain_command.parse(["--config", str(tmp_path / "run.yaml"), "--arch", "baseline:x"])
    assert job.arch == "baseline:x" and args["lr"] == 0.5 and args["out"] == "x"


@pytest.mark.parametrize("text, expected", [
    ("lr: 0.1\nlearning_rate: 3\n", "unknown setting 'learning_rate'"),
    ("- 1\n- 2\n", "expected a mapping of settings"),
    ("lr: [unclosed\n", "--config"),
])
def test_bad_config_file_is_one_line_naming_it(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as e:
        train_command.parse(["--config", str(path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and expected in err and str(path) in err
    with pytest.raises(SystemExit):
        train_command.parse(["--config", str(tmp_path / "missing.yaml")])
    assert "missing.yaml" in capsys.readouterr().err


def test_search_needs_a_latency_budget_from_flag_or_file(capsys):
    with pytest.raises(SystemExit) as e:
        search_command.parse([])
    assert e.value.code == 2 and "--latency-budget: required" in capsys.readouterr().err


@pytest.mark.slow
def test_a_training_run_reruns_from_its_config_yaml_to_the_same_result(tmp_path, capsys):
    data = generate_shapes(tmp_path / "shapes", train=12, val=4, size=64, seed=0)
    space = write_space(tmp_path / "space.json")
    argv = ["--data", str(data), "--space", space, "--steps", "3", "--batch-size", "2", "--workers", "0", "--device", "cpu",
            "--eval-images", "2", "--eval-random-archs", "0", "--calib-batches", "1", "--lr", "0.02", "--seed", "5"]
    assert train_command.main(argv + ["--out", str(tmp_path / "a")]) == 0
    first = json.loads(capsys.readouterr().out)
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved["lr"] == 0.02 and saved["seed"] == 5 and saved["steps"] == 3
    assert train_command.main(["--config", str(tmp_path / "a" / "config.yaml"), "--out", str(tmp_path / "b")]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["eval"] == first["eval"]
    a, b = (torch.load(tmp_path / run / "last.pt", weights_only=True)["model"] for run in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_importing_the_commands_prints_no_warning():
    modules = ["smnas.cli", "smnas.commands.train", "smnas.commands.search", "smnas.commands.retrain", "smnas.commands.demo",
               "supernet.export", "latency.__main__", "latency.backends", "supernet.__main__", "supernet.tensorboard"]
    proc = subprocess.run([sys.executable, "-W", "error", "-c", "; ".join(f"import {m}" for m in modules)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]


def test_library_errors_name_parameters_and_commands_show_their_flags(tmp_path, capsys):
    """The library speaks of `batch_size`; `smnas train` of --batch-size, `latency build` of --out."""
    with pytest.raises(Exception, match=r"^`batch_size`: expected an integer in \[1, inf\], got 0$"):
        TrainConfig(batch_size=0)
    assert smnas(["train", "--batch-size", "0", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == "error: --batch-size: expected an integer in [1, inf], got 0\n"
    with pytest.raises(ValueError, match=r"^`dtype` fp16: not supported for CPU timing"):
        from latency.measure import Settings
        Settings(dtype="fp16")
    assert smnas(["latency", "build", "--dtype", "fp16", "--out", str(tmp_path / "t.json")]) == 2
    assert capsys.readouterr().err.startswith("error: --dtype fp16: not supported for CPU timing")
    from supernet.cli import as_flags
    assert as_flags("`dtype` and `ir_k3_e6`") == "--dtype and `ir_k3_e6`"  # a name that is no flag of the command stays


def test_a_library_warning_is_one_line_naming_the_flag(monkeypatch):
    import warnings

    from supernet.cli import log_to_stderr
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    search_command.parse(["--latency-budget", "5"])
    log_to_stderr()
    shown = warnings.formatwarning(UserWarning("lower `layers` or `population`"), UserWarning, "trainer.py", 1)
    assert shown == "warning: lower `layers` or --population\n"


def test_latency_flags_come_from_the_settings_and_job_dataclasses(capsys):
    from latency.__main__ import BuildJob, ValidateJob
    from latency.measure import Settings
    for sub, classes in (("build", [BuildJob, Settings]), ("validate", [ValidateJob])):
        assert smnas(["latency", sub, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        for cls in classes:
            for f in dataclasses.fields(cls):
                assert "--" + f.name.replace("_", "-") in text and f.metadata.get("help"), (sub, f.name)
        assert "(default: 2)" in text and ("--repeats N" in text)


def test_demo_schedule_overrides_are_checked_before_any_work(tmp_path, capsys):
    assert smnas(["demo", "--retrain-epochs", "0", "--out", str(tmp_path / "demo")]) == 2
    assert capsys.readouterr().err == "error: --retrain-epochs: expected an integer in [1, inf], got 0\n" and not (tmp_path / "demo").exists()


def test_demo_schedule_overrides_reach_the_pipeline(monkeypatch, tmp_path):
    from search.pipeline import FULL
    from smnas.commands import demo
    seen = {}

    def fake(out, quick, device, seed, workers, space, data, schedule):
        seen["schedule"] = schedule
        raise ValueError("stop")
    monkeypatch.setattr(demo, "run_pipeline", fake)
    assert smnas(["demo", "--retrain-epochs", "100", "--screen-epochs", "30", "--out", str(tmp_path)]) == 2
    assert seen["schedule"] == dataclasses.replace(FULL, retrain_epochs=100, screen_epochs=30)


def test_commands_leave_the_process_group_together_unless_one_rank_failed(monkeypatch, capsys):
    """Torchrun's ranks meet at a barrier and destroy the group after a finished run or an agreed
    interruption; after a bad input (which one rank may hit alone) they do not wait for the others."""
    import torch.distributed as dist

    from smnas.commands import run_reporting
    from supernet.errors import Interrupted, TrainError

    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))

    def raising(error):
        def work():
            raise error
        return work

    assert run_reporting(lambda: "done") == (0, "done") and calls == ["barrier", "destroy"]
    calls.clear()
    assert run_reporting(raising(Interrupted("interrupted at step 3"))) == (130, None) and calls == ["barrier", "destroy"]
    calls.clear()
    assert run_reporting(raising(TrainError("`lr`: expected a number > 0"))) == (2, None) and calls == []
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and err.startswith("stopped: ") and "lr" in err.splitlines()[1]  # one line each
