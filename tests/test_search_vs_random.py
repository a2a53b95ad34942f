import importlib.util
import json
import statistics
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("svr", Path(__file__).parents[1] / "benchmarks" / "search_vs_random.py")
svr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(svr)


def _run(pairs, retrain_seeds=1):
    """A search_vs_baselines result: one seed a (searched mAPs, control mAPs) pair."""
    def model(maps):
        return {"map": statistics.mean(maps), **({"maps": maps} if len(maps) > 1 else {})}
    return {"benchmark": "search_vs_baselines", "quick": False, "retrain_seeds": retrain_seeds,
            "per_seed": {str(i): {"models": {"searched": model(a), "random": model(b)}} for i, (a, b) in enumerate(pairs)}}


def test_pooled_spread_and_the_margin_to_win_every_seed():
    six = _run([([0.30], [0.25]), ([0.20], [0.26]), ([0.31], [0.29]), ([0.22], [0.27]), ([0.28], [0.28]), ([0.26], [0.21])])
    three = _run([([0.40], [0.30]), ([0.35], [0.36]), ([0.33], [0.30])])
    r = svr.analyse({"six.json": six, "three.json": three}, power=0.8)
    m6, m3 = [0.05, -0.06, 0.02, -0.05, 0.0, 0.05], [0.10, -0.01, 0.03]
    assert r["runs"]["six.json"]["margins"] == pytest.approx(m6) and r["runs"]["three.json"]["searched_beats_random"] == 2
    assert (r["seeds"], r["searched_beats_random"], r["best_mean_margin_of_a_run_with_6_or_more_seeds"]) == (9, 5, round(statistics.mean(m6), 4))
    pooled = ((5 * statistics.variance(m6) + 2 * statistics.variance(m3)) / 7) ** 0.5
    assert r["pooled_sd_over_seeds"] == pytest.approx(pooled, abs=1e-4)
    # all of 3 seeds won with probability 0.8: each with 0.8^(1/3) = 0.928, 1.46 SD above zero
    assert r["margin_to_win_every_seed"]["3"] == pytest.approx(1.4618 * pooled, abs=2e-4)
    assert r["margin_to_win_every_seed"]["6"] > r["margin_to_win_every_seed"]["3"]


def test_a_run_whose_seeds_another_run_holds_is_counted_once():
    pairs = [([0.30], [0.25]), ([0.20], [0.26]), ([0.31], [0.29])]
    first = _run(pairs)
    retrained = _run([([a[0], a[0] + 0.02], [b[0], b[0] - 0.01]) for a, b in pairs], retrain_seeds=2)  # the same picks, trained twice
    subset = _run(pairs[:2])
    rounded = _run([([round(a[0] + 3e-6, 5)], b) for a, b in pairs])  # written rounded: the same seeds
    other = _run([([0.5], [0.4]), ([0.45], [0.41])])
    r = svr.analyse({"a.json": first, "b_retrained.json": retrained, "c_subset.json": subset, "d_rounded.json": rounded, "e.json": other})
    assert set(r["runs"]) == {"b_retrained.json", "e.json"} and r["left_out"] == ["a.json", "c_subset.json", "d_rounded.json"]
    assert r["runs"]["b_retrained.json"]["margins"] == pytest.approx([0.065, -0.045, 0.035])


def test_the_command_writes_the_result_and_refuses_what_it_cannot_read(tmp_path, monkeypatch, capsys):
    for name, run in (("a.json", _run([([0.3], [0.2]), ([0.2], [0.25])])), ("b.json", _run([([0.3], [0.28])]))):
        (tmp_path / name).write_text(json.dumps(run))
    out = tmp_path / "r.json"
    monkeypatch.setattr("sys.argv", ["svr", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)])
    svr.main()
    assert json.loads(out.read_text())["seeds"] == 3 and json.loads(capsys.readouterr().out)["seeds"] == 3
    (tmp_path / "bad.json").write_text(json.dumps({"benchmark": "ranking"}))
    for argv, message in (([str(tmp_path / "bad.json")], "bad.json: not a search_vs_baselines result"),
                          ([str(tmp_path / "b.json")], "no run with two or more seeds"),
                          ([str(tmp_path / "a.json"), "--power", "1"], "--power: expected a probability in (0, 1), got 1.0")):
        monkeypatch.setattr("sys.argv", ["svr", *argv, "--out", str(tmp_path / "x.json")])
        with pytest.raises(SystemExit) as e:
            svr.main()
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
