import importlib.util
from pathlib import Path

import pytest

from supernet import SearchSpace

spec = importlib.util.spec_from_file_location("ranking", Path(__file__).parents[1] / "benchmarks" / "ranking.py")
ranking = importlib.util.module_from_spec(spec)
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


class _Table:
    def predict(self, arch):
        return float(arch.resolution) + arch.neck.width / 100 + arch.head.width / 1000


def test_spread_archs_covers_every_neck_and_head_type_and_the_ceiling_spans_latency():
    space = SearchSpace.preset("tiny").restrict(blocks=("ir_k3_e6",))
    archs = ranking.spread_archs(space, _Table(), 9, seed=0)
    assert len({a.hash() for a in archs}) == 9
    assert {a.head.type for a in archs} == set(space.head.types) and {a.neck.type for a in archs} == set(space.neck.types)
    picks = ranking.ceiling_picks(archs, _Table(), 3)
    ms = sorted(_Table().predict(a) for a in archs)
    assert [_Table().predict(a) for a in picks] == [ms[0], ms[4], ms[8]]


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
    args = argparse.Namespace(out=str(tmp_path / "r.json"), seed=0)
    ranking.write_result(archs, [1.0 * i for i in range(6)], truth, again, inherited, {"demo": "x/last.pt"}, None, "cpu",
                         {"epochs": 12}, 100, args)
    stored = ranking.load_truth(str(tmp_path / "r.points.json"))
    assert [a.hash() for a in stored["archs"]] == [a.hash() for a in archs]
    assert stored["truth"] == truth and stored["again"] == again and stored["inherited"] == inherited
    assert stored["supernets"] == {"demo": "x/last.pt"} and stored["val_images"] == 100 and stored["latency"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"points": [{"arch": {"resolution": 64}}]}))
    with pytest.raises(ValueError, match=r"--truth .*bad.json: not a ranking points file"):
        ranking.load_truth(str(bad))
