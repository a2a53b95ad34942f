import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from supernet import SearchSpace

spec = importlib.util.spec_from_file_location("ranking", Path(__file__).parents[1] / "benchmarks" / "ranking.py")
ranking = importlib.util.module_from_spec(spec)
sys.modules["ranking"] = ranking  # its dataclasses look their module up there
spec.loader.exec_module(ranking)


def test_rank_agreement_with_its_bootstrap_interval():
    x = [0.1 * i for i in range(12)]
    assert ranking.rank_agreement(x, [2 * v for v in x]) == {"kendall_tau": 1.0, "kendall_tau_ci95": [1.0, 1.0], "spearman": 1.0,
                                                             "spearman_ci95": [1.0, 1.0]}
    assert ranking.rank_agreement(x, x[::-1])["kendall_tau_ci95"] == [-1.0, -1.0]
    noisy = [v + (0.35 if i % 3 == 0 else -0.2) for i, v in enumerate(x)]  # an order that mostly, not always, agrees
    r = ranking.rank_agreement(x, noisy)
    lo, hi = r["kendall_tau_ci95"]
    assert lo < r["kendall_tau"] < hi <= 1.0 and 0.3 < r["kendall_tau"] < 0.95
    assert r == ranking.rank_agreement(x, noisy)  # seeded
    with pytest.raises(ValueError, match="equally long lists"):
        ranking.rank_agreement(x, x[:5])


def test_ranking_row_reports_the_ratio_and_the_top5_overlap():
    truth = [0.01 * (i + 1) for i in range(10)]
    inherited = [t / 4 for t in truth]
    inherited[9], inherited[0] = inherited[0], inherited[9]  # the truth's best ranked last, its worst first
    row = ranking.ranking_row(inherited, truth)
    assert row["median_ratio"] == 0.25 and row["top5_overlap"] == 4 and row["kendall_tau"] < 1


def test_rank_errors_name_what_the_supernet_under_rates():
    space = SearchSpace.preset("tiny_one_stage")
    archs = [space.sample(i) for i in range(40)]
    truth = [0.1 + 0.001 * i for i in range(40)]
    depth = lambda a: sum(s.depth for s in a.backbone.stages)
    inherited = [t - 0.01 * depth(a) - (0.02 if a.head.type == "fcos" else 0) for t, a in zip(truth, archs)]  # deep and FCOS penalised
    row = ranking.ranking_row(inherited, truth, archs=archs)
    assert row["error_vs"]["backbone_depth"] > 0.5 and abs(row["error_vs"]["resolution"]) < 0.35
    assert row["type_error"]["head.fcos"] > 0 > row["type_error"]["head.retinanet"]
    assert set(row["type_error"]) == {f"neck.{t}" for t in space.neck.types} | {"head.fcos", "head.retinanet"}
    assert "error_vs" not in ranking.ranking_row(inherited, truth)
    agreed = ranking.ranking_row([t / 2 for t in truth], truth, archs=archs)  # the same order: no error to explain
    assert set(agreed["error_vs"].values()) == {None} and set(agreed["type_error"].values()) == {0.0}


class _Table:
    def predict(self, arch):
        return float(arch.resolution) + arch.neck.width / 100 + arch.head.width / 1000


def test_spread_archs_covers_every_neck_and_head_type_and_the_ceiling_spans_latency():
    space = SearchSpace.preset("tiny").restrict(blocks=("ir_k3_e6",))
    archs = ranking.spread_archs(space, _Table(), 9, seed=0)
    assert len({a.hash() for a in archs}) == 9
    assert {a.head.type for a in archs} == set(space.head.types) and {a.neck.type for a in archs} == set(space.neck.types)
    picks = ranking.ceiling_picks(archs, _Table().predict, 3)
    ms = sorted(_Table().predict(a) for a in archs)
    assert [_Table().predict(a) for a in picks] == [ms[0], ms[4], ms[8]]


def test_a_region_draws_only_its_own_archs_and_is_kept_by_the_points_file(tmp_path):
    import argparse

    space = SearchSpace.preset("tiny").restrict(blocks=("ir_k3_e6",))
    region = ranking.Region(resolution=space.resolutions[-1], head="fcos", max_ms=space.resolutions[-1] + 0.25)  # no 32-wide neck
    archs = ranking.spread_archs(space, _Table(), 8, seed=0, region=region)
    assert len({a.hash() for a in archs}) == 8
    assert all(a.resolution == region.resolution and a.head.type == "fcos" and _Table().predict(a) <= region.max_ms for a in archs)
    with pytest.raises(ValueError, match=r"lie in --resolution 64 --max-ms 0.001; expected at least -k 3"):
        ranking.spread_archs(space, _Table(), 3, seed=0, region=ranking.Region(resolution=64, max_ms=0.001))
    with pytest.raises(ValueError, match=r"random draws lie in the space; expected at least -k 100000"):
        ranking.spread_archs(space, _Table(), 100000, seed=0)
    args = argparse.Namespace(out=str(tmp_path / "r.json"), seed=0, smooth=[])
    ranking.write_result(archs, [1.0] * 8, {a.hash(): 0.1 * i for i, a in enumerate(archs)}, {}, {"demo": [0.01 * (i % 3) for i in range(8)]}, {"demo": "x/last.pt"}, None, "cpu",
                         {"epochs": 12}, 100, args, region)
    assert ranking.load_truth(str(tmp_path / "r.points.json"))["region"] == region


def test_supernets_are_named_and_names_must_differ():
    assert ranking.parse_supernets(["runs/a/last.pt", "b=runs/x/last.pt"]) == {"a": "runs/a/last.pt", "b": "runs/x/last.pt"}
    with pytest.raises(ValueError, match="given twice"):
        ranking.parse_supernets(["runs/a/last.pt", "a=other.pt"])


def test_a_points_file_is_read_back_as_the_truth_of_a_later_run(tmp_path):
    import argparse
    import json

    space = SearchSpace.preset("tiny").restrict(blocks=("ir_k3_e6",))
    archs = ranking.spread_archs(space, _Table(), 6, seed=0)
    truth = {a.hash(): 0.01 * (i + 1) for i, a in enumerate(archs)}
    again = {archs[0].hash(): 0.02}
    inherited = {"demo": [0.001 * (i + 1) for i in range(6)]}
    args = argparse.Namespace(out=str(tmp_path / "r.json"), seed=0, smooth=["demo"])
    ranking.write_result(archs, [1.0 * i for i in range(6)], truth, again, inherited, {"demo": "x/last.pt"}, None, "cpu",
                         {"epochs": 12}, 100, args)
    stored = ranking.load_truth(str(tmp_path / "r.points.json"))
    assert [a.hash() for a in stored["archs"]] == [a.hash() for a in archs]
    assert stored["truth"] == truth and stored["again"] == again and stored["inherited"]["demo"] == inherited["demo"]
    assert len(stored["inherited"]["demo_smoothed"]) == 6 and stored["supernets"]["demo_smoothed"].startswith("x/last.pt (scores smoothed")
    assert stored["supernets"]["demo"] == "x/last.pt" and stored["val_images"] == 100 and stored["latency"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"points": [{"arch": {"resolution": 64}}]}))
    with pytest.raises(ValueError, match=r"--truth .*bad.json: not a ranking points file"):
        ranking.load_truth(str(bad))


def test_flops_prior_rows_rank_the_product_and_gflops_alone(tmp_path):
    """NAME@ALPHA adds NAME's scores x GFLOPs^ALPHA and a gflops row, ranked like any other but
    with no mAP ratio; the class count is stored so a later --truth run can add such rows."""
    import argparse

    from latency.cost import flops

    space = SearchSpace.preset("tiny").restrict(blocks=("ir_k3_e6",))
    archs = ranking.spread_archs(space, _Table(), 6, seed=0)
    gflops = [flops(a, 3) / 1e9 for a in archs]
    truth = {a.hash(): g for a, g in zip(archs, gflops)}  # the truth follows FLOPs exactly
    order = sorted(range(6), key=lambda i: gflops[i])
    inherited = {"demo": [0.1 - 1e-6 * order.index(i) for i in range(6)]}  # a supernet that ranks them backwards, by a hair
    args = argparse.Namespace(out=str(tmp_path / "r.json"), seed=0, smooth=[], flops_prior=ranking.parse_flops_priors(["demo@0.5"]))
    ranking.write_result(archs, [1.0] * 6, truth, {}, inherited, {"demo": "x/last.pt"}, None, "cpu", {"epochs": 12}, 100, args,
                         num_classes=3)
    stored = ranking.load_truth(str(tmp_path / "r.points.json"))
    assert stored["num_classes"] == 3 and stored["inherited"]["demo_flops0.5"] == [round(v * g ** 0.5, 6) for v, g in zip(inherited["demo"], gflops)]
    rows = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    assert rows["gflops"]["kendall_tau"] == rows["demo_flops0.5"]["kendall_tau"] == 1.0 and rows["demo"]["kendall_tau"] == -1.0
    assert rows["gflops"]["median_ratio"] is None and rows["demo_flops0.5"]["median_ratio"] is None and rows["demo"]["median_ratio"] is not None
    for spec in ("demo", "demo@-1", "@1", "demo@x"):
        with pytest.raises(ValueError, match=f"--flops-prior {re.escape(spec)}: expected NAME@ALPHA"):
            ranking.parse_flops_priors([spec])
    with pytest.raises(SystemExit, match="class count"):
        ranking.add_flops_rows([("demo", 1.0)], archs, dict(inherited), {"demo": "x"}, None)
    with pytest.raises(SystemExit, match=r"--flops-prior nope@1: no such row"):
        ranking.add_flops_rows([("nope", 1.0)], archs, dict(inherited), {"demo": "x"}, 3)
    import subprocess

    script = Path(__file__).parents[1] / "benchmarks" / "ranking.py"
    for flags, message in ((["--flops-prior", "nope@1"], "error: --flops-prior nope@1: no such row; rows: ['demo', 'demo_flops0.5', 'gflops']"),
                           (["--smooth", "nope"], "error: --smooth nope: no such row")):  # refused before any supernet is loaded
        run = subprocess.run([sys.executable, str(script), "--truth", str(tmp_path / "r.points.json"), "--out", str(tmp_path / "o.json"), *flags],
                             capture_output=True, text=True)
        assert run.returncode != 0 and run.stderr.strip().splitlines()[-1].startswith(message) and not (tmp_path / "o.json").exists()


def test_an_ensemble_row_ranks_its_members_mean_score(tmp_path):
    """NAME=A+B scores each arch by the mean of A's and B's scores: two supernets whose errors
    are opposite rank perfectly together though neither does alone; a rerun replaces the row."""
    import argparse
    import subprocess

    space = SearchSpace.preset("tiny").restrict(blocks=("ir_k3_e6",))
    archs = ranking.spread_archs(space, _Table(), 6, seed=0)
    truth = {a.hash(): 0.1 * (i + 1) for i, a in enumerate(archs)}
    noise = [0.05, -0.05, 0.05, -0.05, 0.05, -0.05]  # each alone swaps neighbours; the mean cancels it
    inherited = {"a": [0.1 * (i + 1) + e for i, e in enumerate(noise)], "b": [0.1 * (i + 1) - e for i, e in enumerate(noise)]}
    args = argparse.Namespace(out=str(tmp_path / "r.json"), seed=0, smooth=["ab"], ensemble=ranking.parse_ensembles(["ab=a+b"]))
    ranking.write_result(archs, [1.0] * 6, truth, {}, inherited, {"a": "x/last.pt", "b": "y/last.pt"}, None, "cpu", {"epochs": 12}, 100, args)
    stored = ranking.load_truth(str(tmp_path / "r.points.json"))
    assert stored["inherited"]["ab"] == [round(0.1 * (i + 1), 6) for i in range(6)] and "ab_smoothed" in stored["inherited"]
    assert stored["supernets"]["ab"] == "the mean score of 2 rows: a, b"
    rows = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    assert rows["ab"]["kendall_tau"] == 1.0 and rows["a"]["kendall_tau"] < 1.0 and rows["b"]["kendall_tau"] < 1.0
    assert rows["ab"]["members_kendall_tau"] < rows["a"]["kendall_tau"] and "members_kendall_tau" not in rows["a"]
    for spec in ("ab", "ab=a", "ab=a+a", "=a+b", "ab=a+", "a=a+b"):
        with pytest.raises(ValueError, match=f"--ensemble {re.escape(spec)}: expected NAME=ROW\\+ROW"):
            ranking.parse_ensembles([spec])
    script = Path(__file__).parents[1] / "benchmarks" / "ranking.py"
    run = subprocess.run([sys.executable, str(script), "--truth", str(tmp_path / "r.points.json"), "--out", str(tmp_path / "o.json"),
                          "--ensemble", "ac=a+c"], capture_output=True, text=True)  # refused before any supernet is loaded
    assert run.returncode != 0 and run.stderr.strip().splitlines()[-1].startswith("error: --ensemble ac=a+c: no such row 'c'")
    assert not (tmp_path / "o.json").exists()
    run = subprocess.run([sys.executable, str(script), "--truth", str(tmp_path / "r.points.json"), "--out", str(tmp_path / "o.json"),
                          "--ensemble", "ab=b+a"], capture_output=True, text=True)  # a stored row of that name is replaced
    assert run.returncode == 0, run.stderr
    again = ranking.load_truth(str(tmp_path / "o.points.json"))
    assert again["supernets"]["ab"] == "the mean score of 2 rows: b, a" and again["inherited"]["a"] == stored["inherited"]["a"]


def test_more_second_seeds_are_trained_only_for_archs_that_lack_one(tmp_path, monkeypatch):
    """--truth with --ceiling-archs beyond the stored ones: the missing second seeds are trained
    (spread over latency, with the second seed, each in its own folder), the stored ones kept."""
    from supernet.train_config import TrainConfig

    space = SearchSpace.preset("tiny").restrict(blocks=("ir_k3_e6",))
    archs = ranking.spread_archs(space, _Table(), 6, seed=0)
    trained = []

    def fake_retrain(arch, space_, config, lut=None, resume=False):
        trained.append((arch.hash(), config.seed, Path(config.out).name, resume))
        return {"map": 0.5}

    monkeypatch.setattr(ranking, "retrain", fake_retrain)
    config = TrainConfig(space="tiny", data="d", out=str(tmp_path / "x"), epochs=12, seed=0)
    stored = {archs[0].hash(): 0.1}
    again = ranking.second_seed_truth(archs, _Table().predict, stored, 3, space, config, str(tmp_path), seed=1)
    assert len(again) == 3 and again[archs[0].hash()] == 0.1 and stored == {archs[0].hash(): 0.1}
    rest = sorted((a for a in archs if a.hash() != archs[0].hash()), key=_Table().predict)
    assert [t[0] for t in trained] == [rest[0].hash(), rest[-1].hash()]  # the two ends of the rest's latency range
    assert all(seed == 1 and name == f"{h}_seed1" and resume for h, seed, name, resume in trained)
    trained.clear()
    assert ranking.second_seed_truth(archs, _Table().predict, again, 3, space, config, str(tmp_path), seed=1) == again and not trained


def test_rows_are_set_against_each_truth_seed_and_their_mean():
    space = SearchSpace.preset("tiny").restrict(blocks=("ir_k3_e6",))
    archs = ranking.spread_archs(space, _Table(), 5, seed=0)
    truth = {a.hash(): 0.1 * (i + 1) for i, a in enumerate(archs)}
    again = {a.hash(): 0.2 * (4 - i) for i, a in enumerate(archs[:4])}  # the second seed reverses the first on 4 archs, and spreads more
    inherited = [0.01 * (i + 1) for i in range(5)]  # the first seed's order
    row = ranking.second_seed_agreement(inherited, truth, again, archs)
    assert row["two_seed_archs"] == 4
    assert row["vs_first_seed"]["kendall_tau"] == 1.0 and row["vs_second_seed"]["kendall_tau"] == -1.0
    assert row["vs_seed_mean"]["kendall_tau"] == -1.0  # the mean follows the seed that spreads more
    ceiling = ranking.noise_ceiling(truth, again, [0, 1], archs)
    assert ceiling["archs"] == 4 and ceiling["seeds"] == [0, 1] and ceiling["kendall_tau"] == -1.0
    assert ranking.noise_ceiling(truth, dict(list(again.items())[:2]), [0, 1], archs) is None
    assert ranking.second_seed_agreement(inherited, truth, {}, archs) == {}


def test_within_resolution_tau_counts_only_pairs_of_one_resolution():
    from types import SimpleNamespace

    archs = [SimpleNamespace(resolution=r) for r in (64, 64, 64, 128, 128)]
    truth = [0.1, 0.2, 0.3, 0.9, 0.8]
    # across resolutions the order is perfect; within 64 px one pair of 3 is swapped, within 128 px the pair agrees
    inherited = [0.1, 0.3, 0.2, 0.9, 0.8]
    assert ranking.within_resolution_tau(inherited, truth, archs) == {"kendall_tau": round((1 - 1 + 1 + 1) / 4, 4), "pairs": 4}
    assert ranking.within_resolution_tau([0.5] * 5, truth, archs)["kendall_tau"] == 0.0  # ties count zero
    assert ranking.within_resolution_tau(truth[:2], truth[:2], [SimpleNamespace(resolution=64), SimpleNamespace(resolution=96)]) == {
        "kendall_tau": None, "pairs": 0}


def test_more_second_seeds_from_a_stored_truth_need_a_supernet(tmp_path):
    import argparse

    space = SearchSpace.preset("tiny").restrict(blocks=("ir_k3_e6",))
    archs = ranking.spread_archs(space, _Table(), 4, seed=0)
    stored = {"archs": archs, "again": {}, "noise_ceiling": None, "inherited": {}, "supernets": {}}
    args = argparse.Namespace(ceiling_archs=3, seed=0, work=str(tmp_path))
    with pytest.raises(SystemExit, match="--ceiling-archs 3: the --truth has a second seed for 0 archs; training more needs a --supernet"):
        ranking.rank_stored(stored, {}, args, "cpu")


def test_refined_map_fine_tunes_from_the_inherited_weights(tmp_path):
    """--refine-steps: at a vanishing learning rate the fine-tuned subnet is the extracted one,
    so the score starts from the supernet's weights, not a fresh initialisation; a second call
    reads the result back."""
    import torch

    from supernet.checkpoint import load_supernet
    from supernet.data import build_datasets
    from supernet.shapes import generate_shapes
    from supernet.train_config import TrainConfig
    from supernet.trainer import Trainer

    data = generate_shapes(tmp_path / "shapes", train=8, val=4, size=64, seed=0)
    cfg = TrainConfig(space="tiny", data=str(data), out=str(tmp_path / "sn"), steps=1, batch_size=2, workers=0, eval_images=2,
                      eval_random_archs=0, calib_batches=1, device="cpu")
    datasets = build_datasets(cfg, 128)
    Trainer(cfg, datasets).run()
    model, blob = load_supernet(tmp_path / "sn" / "last.pt")
    arch = model.space.sample(3)
    config = ranking.refine_config({**blob["config"], "sampler": "sandwich", "distill": 1.0, "warmup": 0}, 1, out=str(tmp_path / "r"),
                                   seed=0, device="cpu", workers=0, eval_images=2, batch_size=2, lr=1e-30)
    assert (config.steps, config.distill, config.start_from, config.train_blocks, config.lr) == (1, 0.0, None, None, 1e-30)
    score = ranking.refined_map(model, arch, config, datasets)
    assert 0.0 <= score <= 1.0
    refined = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["model"]
    for name, t in model.extract(arch).state_dict().items():
        if "running" not in name and "num_batches" not in name:  # BN statistics become the subnet's own
            assert torch.allclose(refined[name], t, atol=1e-20), name
    (tmp_path / "r" / "last.pt").unlink()
    assert ranking.refined_map(model, arch, config, datasets) == score  # read back from result.json, not trained again


def test_proxy_variants_are_set_against_the_truth_and_the_searchs_own_score():
    spec = importlib.util.spec_from_file_location("ranking_proxies", Path(__file__).parents[1] / "benchmarks" / "ranking_proxies.py")
    proxies = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(proxies)
    truth = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    scores = {"map": [1, 2, 3, 4, 5, 6], "map_calib2": [1, 2, 3, 4, 6, 5], "ap50": [6, 5, 4, 3, 2, 1]}
    rows = proxies.summarize(scores, truth)
    assert rows["map"]["kendall_tau"] == 1.0 and rows["ap50"]["kendall_tau"] == -1.0
    assert rows["map_calib2"]["kendall_tau_vs_map"] == round(13 / 15, 4) and "kendall_tau_vs_map" not in rows["ap50"]
    assert set(rows["map"]) == {"kendall_tau", "kendall_tau_ci95"}
