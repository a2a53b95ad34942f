import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("svb", Path(__file__).parents[1] / "benchmarks" / "search_vs_baselines.py")
svb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(svb)


def _model(map_, ms, inherited=None):
    return {"map": map_, "latency_ms": ms, "latency_pred_ms": ms, "inherited_map": inherited}


def _report(searched=0.15, random=0.12):
    return {"latency_budget_ms": 20.0, "models": {
        "searched": _model(searched, 10.0, 0.03), "random": _model(random, 9.0, 0.02),
        "smallest": _model(0.05, 4.0, 0.025), "largest": _model(0.2, 40.0, 0.01),
        "mobilenetv2_fpn_fcos": _model(0.10, 10.4),  # within 5 % of the searched latency
        "efficientdet_d0_like": _model(0.30, 10.6),  # 6 % slower: it does not compete
    }}


def _timed(report):
    return {n: m["latency_ms"] for n, m in report["models"].items()}


def compare(report, slack):
    return svb.compare(report, slack, _timed(report))


def test_only_baselines_within_the_latency_slack_compete():
    verdict = compare(_report(), slack=0.05)
    assert verdict["baselines_within_slack"] == ["mobilenetv2_fpn_fcos"] and verdict["best_baseline"] == "mobilenetv2_fpn_fcos"
    assert verdict["margin_over_best_baseline"] == 0.05 and verdict["beats_baselines"] and verdict["beats_random"]
    assert verdict["inherited_ratio"] == {"searched": 0.2, "smallest": 0.5, "largest": 0.05}
    assert compare(_report(), slack=0.0)["beats_baselines"] is None  # no baseline competes: no claim either way
    loose = compare(_report(), slack=0.10)
    assert loose["best_baseline"] == "efficientdet_d0_like" and not loose["beats_baselines"]


def test_summary_counts_seeds_where_the_search_wins():
    seeds = {0: compare(_report(), 0.05), 1: compare(_report(searched=0.09, random=0.13), 0.05)}
    summary = svb.summarize(seeds)
    assert summary["searched_beats_baselines"] == 1 and summary["searched_beats_random"] == 1
    assert summary["seeds_with_a_baseline_within_slack"] == 2
    assert summary["margins"] == [0.05, -0.01] and summary["mean_margin_over_best_baseline"] == 0.02
    assert summary["mean_margin_over_random"] == -0.005


def test_the_side_by_side_latency_decides_who_competes():
    """Timed at the end of its own retraining the searched subnet looked slow (a host slowed
    down meanwhile) and a baseline fell within the slack; timed side by side it does not."""
    report = _report()
    latency = {**_timed(report), "searched": 8.0}  # the baseline at 10.4 ms is 30 % slower side by side
    verdict = svb.compare(report, 0.05, latency)
    assert verdict["baselines_within_slack"] == [] and verdict["beats_baselines"] is None
    assert verdict["models"]["searched"]["latency_ms"] == 8.0 and verdict["models"]["searched"]["latency_at_retraining_ms"] == 10.0


def test_several_retraining_seeds_compare_by_their_mean():
    """One training said the control won; the mean of three says the search did."""
    report = _report(searched=0.11, random=0.12)
    maps = {"searched": [0.11, 0.15, 0.16], "random": [0.12, 0.11, 0.10], "mobilenetv2_fpn_fcos": [0.10, 0.16, 0.16]}
    verdict = svb.compare(report, 0.05, _timed(report), maps)
    assert verdict["beats_random"] and not compare(report, 0.05)["beats_random"]
    searched = verdict["models"]["searched"]
    assert searched["map"] == 0.14 and searched["maps"] == maps["searched"] and searched["map_sd"] == 0.02646
    assert verdict["margin_over_best_baseline"] == 0.0 and verdict["beats_baselines"] is False  # a tie is no win
    assert "maps" not in verdict["models"]["smallest"] and verdict["inherited_ratio"]["searched"] == round(0.03 / 0.14, 3)



def test_margin_intervals_resample_each_models_trainings():
    """The interval is the retraining noise under the mean margin; one training a model gives none."""
    clear = _report(searched=0.15, random=0.10)
    maps = {"searched": [0.15, 0.16, 0.14], "random": [0.10, 0.11, 0.09], "mobilenetv2_fpn_fcos": [0.10, 0.12, 0.08]}
    seeds = {0: svb.compare(clear, 0.05, _timed(clear), maps), 1: svb.compare(clear, 0.05, _timed(clear), maps)}
    summary = svb.summarize(seeds)
    low, high = summary["margin_over_random_ci95"]
    assert 0 < low < summary["mean_margin_over_random"] == 0.05 < high < 0.07
    low, high = summary["margin_over_best_baseline_ci95"]
    assert low < 0.05 < high and high - low > svb.margin_interval(seeds, "random")[1] - svb.margin_interval(seeds, "random")[0]
    assert svb.margin_interval(seeds, "random") == svb.margin_interval(seeds, "random")  # seeded
    single = {0: compare(_report(), 0.05)}
    assert svb.summarize(single)["margin_over_random_ci95"] is None and svb.margin_interval(single, "best_baseline") is None
    assert svb.margin_interval(seeds | {2: seeds[0]}, "random", over_seeds=True) is not None
    assert svb.margin_interval({0: seeds[0]}, "random", over_seeds=True) is None  # one seed: nothing to resample
    once = {0: single[0], 1: single[0]}  # one training each: still seeds to resample
    assert svb.margin_interval(once, "random") is None and svb.margin_interval(once, "random", over_seeds=True) is not None


def test_interval_over_seeds_holds_the_seed_to_seed_spread():
    """Two seeds with tight trainings but opposite margins: the trainings-only interval excludes
    zero around their mean, the interval over seeds spans both seeds' margins."""
    won, lost = _report(searched=0.15, random=0.10), _report(searched=0.10, random=0.13)
    seeds = {0: svb.compare(won, 0.05, _timed(won), {"searched": [0.15, 0.151, 0.149], "random": [0.10, 0.101, 0.099]}),
             1: svb.compare(lost, 0.05, _timed(lost), {"searched": [0.10, 0.101, 0.099], "random": [0.13, 0.131, 0.129]})}
    summary = svb.summarize(seeds)
    low, high = summary["margin_over_random_ci95"]
    assert 0.005 < low <= summary["mean_margin_over_random"] == 0.01 <= high < 0.015
    low, high = summary["margin_over_random_ci95_over_seeds"]
    assert -0.032 < low < -0.028 and 0.048 < high < 0.052


def test_summarize_rewrites_a_finished_result_in_place(tmp_path, monkeypatch, capsys):
    import json

    import pytest
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"benchmark": "search_vs_baselines", "summary": {}, "per_seed": {"0": compare(_report(), 0.05)}}))
    monkeypatch.setattr("sys.argv", ["svb", "--summarize", str(path)])
    svb.main()
    assert json.loads(path.read_text())["summary"]["margins"] == [0.05]
    (tmp_path / "other.json").write_text("{}")
    monkeypatch.setattr("sys.argv", ["svb", "--summarize", str(tmp_path / "other.json")])
    with pytest.raises(SystemExit) as e:
        svb.main()
    assert e.value.code == 2 and "--summarize" in capsys.readouterr().err and (tmp_path / "other.json").read_text() == "{}"


def test_longer_retraining_runs_every_seed_anew_with_the_recipe_at_more_epochs(tmp_path, monkeypatch):
    """--retrain-epochs: the pipeline's own 12-epoch training is not one of the compared ones;
    each seed trains the recorded recipe for the given epochs in its own folder, untimed."""
    import dataclasses

    import torch

    from supernet.space import SearchSpace
    from supernet.train_config import TrainConfig
    space = SearchSpace.resolve("tiny_one_stage")
    arch = space.sample(0)
    recipe = TrainConfig(space="tiny_one_stage", epochs=12, steps=30, seed=3, out=str(tmp_path / "retrain" / "searched"))
    (tmp_path / "retrain" / "searched").mkdir(parents=True)
    torch.save({"config": dataclasses.asdict(recipe)}, tmp_path / "retrain" / "searched" / "last.pt")
    report = {"space": "tiny_one_stage", "models": {"searched": {"map": 0.5, "arch": arch.to_dict()}}}
    calls = []

    def fake_retrain(a, s, cfg, resume, timed=True):
        calls.append((cfg, timed))
        return {"map": 0.1 * len(calls)}
    monkeypatch.setattr(svb, "retrain", fake_retrain)
    assert svb.retrain_seeds(tmp_path, report, ["searched"], 2, epochs=48) == {"searched": [0.1, 0.2]}
    assert [(c.epochs, c.steps, c.seed, Path(c.out).relative_to(tmp_path).as_posix(), timed) for c, timed in calls] == [
        (48, None, 3, "retrain_e48/searched", False), (48, None, 1003, "retrain_e48_seed1/searched", False)]
    calls.clear()
    assert svb.retrain_seeds(tmp_path, report, ["searched"], 2) == {"searched": [0.5, 0.1]}  # the pipeline's own first
    assert [(c.epochs, c.steps, Path(c.out).relative_to(tmp_path).as_posix(), timed) for c, timed in calls] == [
        (12, 30, "retrain_seed1/searched", True)]


def test_the_pipelines_checks_refuse_flags_before_any_work(tmp_path, monkeypatch, capsys):
    import pytest

    for flags, message in ((["--all-blocks", "--resolution-first"], "error: --resolution-first: evolves the structure, then more of "
                            "it at one resolution; not with the modular stage (--all-blocks, or the schedule's search_stage 'both')"),
                           (["--flops-prior", "-1"], "error: --flops-prior: expected a number >= 0 (0: rank by mAP alone), got -1.0")):
        monkeypatch.setattr("sys.argv", ["svb", *flags, "--work", str(tmp_path / "w")])
        with pytest.raises(SystemExit) as e:
            svb.main()
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith(message) and "\n" not in err and not (tmp_path / "w").exists()
