import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from common import COCO128, needs_coco128

from latency.table import LatencyTable
from supernet import Arch, SearchSpace
from search.pipeline import BASELINE_OVER_BUDGET, SPACE, render_over_budget, render_screening
from supernet.baselines import baselines

REPO = Path(__file__).resolve().parents[1]


def test_report_names_the_baselines_left_out():
    assert render_over_budget({"baselines_over_budget": {}}) == [] and render_over_budget({}) == []  # reports before the rule
    line = render_over_budget({"baselines_over_budget": {"efficientdet_d0_like": 8.822, "resnet18_fpn_retinanet": 9.5}})[0]
    assert "`efficientdet_d0_like` (8.822 ms), `resnet18_fpn_retinanet` (9.5 ms)" in line and "10%" in line


def test_report_says_how_the_screened_subnets_were_chosen():
    row = {"hash": "abc", "resolution": 128, "inherited_map": 0.2, "screen_map": 0.1, "latency_pred_ms": 5.0}
    plain = {"schedule": {"screen_steps": None, "screen_epochs": 6}, "searched": {"screened": [row]}, "random": {"screened": [row]}}
    lines = render_screening(plain)
    assert "6 epochs." in lines[0] and "near" not in lines[0] and lines[2].endswith("latency predicted (ms) |")
    around = {**plain, "schedule": {**plain["schedule"], "screen_neighbours": 2},
              "searched": {"screened": [row, {**row, "hash": "def", "chosen": "near `abc`"}]},
              "random": {"screened": [{**row, "chosen": "next best"}]}}
    lines = render_screening(around)
    assert "Then 2 subnets near the search's best short training" in lines[0] and "the control's next 2 by inherited score" in lines[0]
    assert lines[2].endswith("| chosen |") and lines[3].count("|") == lines[2].count("|")
    assert [line.rsplit("|", 2)[1].strip() for line in lines[4:7]] == ["finalist", "near `abc`", "next best"]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~3 min alone on 2 cores; far more if the machine is shared
def test_quick_end_to_end_run_and_its_rerun(tmp_path):
    """The README's first command in its --quick form, on a fresh folder (the shapes data is
    generated there); run again, it skips every finished step."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # in the folder layout of benchmarks/search_vs_baselines.py, which then runs on this seed below
    cmd = [sys.executable, str(REPO / "end_to_end.py"), "--quick", "--out", "bench/seed0", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "bench" / "seed0"
    report = json.loads((out / "report.json").read_text())
    lo, hi = report["latency_range_ms"]
    assert lo < report["latency_budget_ms"] < hi
    space = SearchSpace.preset(SPACE)
    # a baseline the table puts well over the budget is listed, not retrained
    table, over = LatencyTable.load(out / "latency_cpu.json"), report["baselines_over_budget"]
    assert over == {n: round(table.predict(a), 3) for n, a in baselines(space).items()
                    if table.predict(a) > report["latency_budget_ms"] * (1 + BASELINE_OVER_BUDGET)}
    assert report["space"] == SPACE and set(report["models"]) == {"searched", "random", *baselines(space)} - set(over)
    for name, m in report["models"].items():
        space.validate(Arch.from_dict(m["arch"]))
        assert 0 <= m["map"] <= 1 and m["latency_ms"] > 0 and m["latency_pred_ms"] > 0 and m["flops"] > 0 and m["params"] > 0
        assert (out / "retrain" / name / "model.pt").is_file()
    searched = report["models"]["searched"]
    assert searched["latency_pred_ms"] <= report["latency_budget_ms"]
    finalists = json.loads((out / "search" / "finalists.json").read_text())
    assert {r["stage"] for r in finalists} == {"structural"}  # the demo searches the structure the supernet trained
    control = [json.loads(line) for line in (out / "random" / "history.jsonl").read_text().splitlines()]
    assert len(control) == report["searched"]["evaluated"] == report["random"]["evaluated"]  # the search's budget: no repeats
    assert {r["stage"] for r in control} == {"random"} and all(r["latency_ms"] <= report["latency_budget_ms"] for r in control)
    # each side's best by inherited score and its best of another resolution were trained briefly; the better one was retrained
    for name, best in (("searched", finalists[0]), ("random", min(control, key=lambda r: (-r["map"], r["latency_ms"])))):
        screened = report[name]["screened"]
        assert len(screened) == 2 and best["hash"] in {r["hash"] for r in screened}
        assert report["models"][name]["hash"] == screened[0]["hash"] and screened[0]["screen_map"] >= screened[1]["screen_map"]
        for r in screened:
            assert json.loads((out / "screen" / name / r["hash"] / "metrics.json").read_text())["map"] == r["screen_map"]
        assert f"`{screened[1]['hash']}`" in (out / "report.md").read_text()
    md = (out / "report.md").read_text()
    assert "![Pareto front of the search](pareto.png)" in md and (out / "pareto.png").is_file()
    assert all(f"| {name} |" in md for name in report["models"]) and all(f"`{name}` ({ms:g} ms)" in md for name, ms in over.items())
    assert json.loads(proc.stdout.strip().splitlines()[-1])["latency_budget_ms"] == report["latency_budget_ms"]

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trained already" in again.stderr and "built already" in again.stderr
    assert again.stderr.count("already retrained") == len(report["models"]) + 4  # and the four screenings
    assert json.loads((out / "report.json").read_text())["models"] == report["models"]

    # the 3-seed benchmark on this finished seed: it retrains only the supernet's extremes
    result = tmp_path / "bench.json"
    bench = subprocess.run([sys.executable, str(REPO / "benchmarks" / "search_vs_baselines.py"), "--quick", "--seeds", "0",
                            "--retrain-seeds", "2", "--work", "bench", "--out", str(result)], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=900)
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert bench.stderr.count("already retrained") == len(report["models"]) + 4
    seed = json.loads(result.read_text())["per_seed"]["0"]
    for name in ["searched", "random", *seed["baselines_within_slack"]]:  # the compared models, retrained with a second seed
        again = json.loads((out / "retrain_seed1" / name / "metrics.json").read_text())
        assert seed["models"][name]["maps"] == [report["models"][name]["map"], again["map"]]
    assert "maps" not in seed["models"]["largest"]
    assert set(seed["models"]) == {*report["models"], "smallest", "largest"}
    assert all(seed["models"][n]["inherited_map"] is not None for n in ("searched", "random", "smallest", "largest"))
    assert seed["models"]["mobilenetv2_fpn_fcos"]["inherited_map"] is None


@needs_coco128
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_demo_on_a_users_coco_format_data(tmp_path):
    """`smnas demo` on real COCO images (80 category ids with gaps, crowd boxes): the latency
    table is timed for their 80 classes and the report names the data."""
    ann, images = COCO128 / "instances.json", COCO128 / "images"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "smnas", "demo", "--quick", "--out", "coco128", "--device", "cpu", "--train-ann", str(ann),
           "--train-images", str(images), "--val-ann", str(ann), "--val-images", str(images)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "coco128"
    report = json.loads((out / "report.json").read_text())
    assert report["data"] == {"train_ann": str(ann), "train_images": str(images), "val_ann": str(ann), "val_images": str(images)}
    assert LatencyTable.load(out / "latency_cpu.json").context.num_classes == 80
    assert all(0 <= m["map"] <= 1 for m in report["models"].values())
    assert f"--train-ann {ann}" in (out / "report.md").read_text()
    assert not (tmp_path / "data").exists()  # the shapes data was not generated
