import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from common import MICRO_SPACE, StepTimer, read_board

from smnas.commands import search as evolve
from latency import Settings, build_table
from search.evolution import SearchError
from search.nas import Search, SearchConfig, SubnetEvaluator, finetune_config, stage_genes
from supernet import Arch, SearchSpace
from supernet.data import build_datasets
from supernet.shapes import generate_shapes
from supernet.train_config import TrainConfig
from supernet.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
SPACE = MICRO_SPACE


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    data = generate_shapes(root / "shapes", train=12, val=4, size=64, seed=0)
    space_file = root / "space.json"
    space_file.write_text(json.dumps(SPACE))
    cfg = TrainConfig(space=str(space_file), data=str(data), out=str(root / "run"), steps=2, batch_size=2, workers=0,
                      eval_images=2, eval_random_archs=0, calib_batches=1, device="cpu")
    Trainer(cfg, build_datasets(cfg, 96)).run()
    space = SearchSpace.from_dict(SPACE)
    table = build_table(space, Settings(warmup=0, repeats=1), root / "lut.json", num_classes=3, passes=1, calib_archs=0,
                        timer=StepTimer(), progress=False)
    budget = (table.extreme(True)[1] + table.extreme(False)[1]) / 2
    return {"root": root, "checkpoint": str(root / "run" / "last.pt"), "lut": str(root / "lut.json"), "budget": budget, "table": table}


def config(trained, out, **kw) -> SearchConfig:
    base = dict(supernet=trained["checkpoint"], lut=trained["lut"], latency_budget=trained["budget"], population=4, generations=2,
                topk=2, calib_batches=1, eval_images=2, batch_size=2, workers=0, device="cpu", out=str(out), finalists=3)
    return SearchConfig(**{**base, **kw})


def read_history(out):
    return [json.loads(line) for line in (Path(out) / "history.jsonl").read_text().splitlines()]


def test_short_search_writes_every_output_within_budget(trained, tmp_path):
    summary = Search(config(trained, tmp_path / "s")).run()
    out = tmp_path / "s"
    history = read_history(out)
    assert len(history) == 16  # 2 stages x 2 generations x 4
    assert summary["evaluated"] == 15 == len({r["hash"] for r in history})  # the modular stage opens with the structural best
    keys = {"arch", "map", "ap50", "latency_ms", "flops", "params", "generation", "seconds", "stage", "hash"}
    assert all(keys <= set(r) for r in history)
    assert all(r["latency_ms"] <= trained["budget"] for r in history)
    finalists = json.loads((out / "finalists.json").read_text())
    assert 1 <= len(finalists) <= 3 and len({f["hash"] for f in finalists}) == len(finalists)
    assert [f["map"] for f in finalists] == sorted((f["map"] for f in finalists), reverse=True)
    assert all(f["latency_ms"] <= trained["budget"] and Arch.from_dict(f["arch"]).hash() == f["hash"] for f in finalists)
    assert summary["best"]["hash"] == finalists[0]["hash"]
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto and all(not (o["map"] > p["map"] and o["latency_ms"] < p["latency_ms"]) for p in pareto for o in history)
    assert (out / "pareto.png").stat().st_size > 1000
    assert yaml.safe_load((out / "config.yaml").read_text())["latency_budget"] == trained["budget"]
    scalars, _ = read_board(out / "tensorboard")  # the search's progress, one point a generation, at evaluations so far
    assert scalars["search/structural/best_map"] == [4, 8] and scalars["search/modular/best_map"] == [12, 16]
    assert scalars["search/pareto_size"] == [4, 8, 12, 16] and scalars["search/evaluations_per_min"] == [4, 8, 12, 16]


def test_per_resolution_evolves_each_resolution_on_its_own(trained, tmp_path):
    resolutions = SearchSpace.from_dict(SPACE).resolutions
    assert len(resolutions) == 2
    out = tmp_path / "s"
    Search(config(trained, out, stage="structural", per_resolution=True, generations=5, latency_budget=1e6)).run()
    history = read_history(out)
    assert len(history) == (3 + 2) * 4  # the 5 generations divided among two resolutions, x 4
    # each evolution keeps to its resolution, the first's records before the second's
    assert [r["arch"]["resolution"] for r in history] == [resolutions[0]] * 12 + [resolutions[1]] * 8
    again = tmp_path / "again"  # seeded: a second run evaluates the same subnets in the same order
    Search(config(trained, again, stage="structural", per_resolution=True, generations=5, latency_budget=1e6)).run()
    assert [r["hash"] for r in read_history(again)] == [r["hash"] for r in history]


def test_a_search_at_one_resolution_and_the_pipelines_focus_on_the_screened_one(trained, tmp_path):
    from search.pipeline import _focus

    resolutions = SearchSpace.from_dict(SPACE).resolutions
    first = Search(config(trained, tmp_path / "run" / "search", stage="structural", per_resolution=True, generations=2, latency_budget=1e6))
    first.run()
    best, evaluated = _focus(first, resolutions[1], 2)
    focus = read_history(tmp_path / "run" / "search_focus")
    assert evaluated == len({r["hash"] for r in focus}) and len(focus) == 2 * 4
    assert {r["arch"]["resolution"] for r in focus} == {resolutions[1]}
    # the pick: the best score at that resolution, the first search's subnets there competing too
    there = [r for r in read_history(tmp_path / "run" / "search") if r["arch"]["resolution"] == resolutions[1]] + focus
    assert best.arch.resolution == resolutions[1] and best.map == max(r["map"] for r in there)
    again, evaluated_again = _focus(first, resolutions[1], 2)  # finished: read back, nothing evaluated anew
    assert again.hash == best.hash and evaluated_again == evaluated and len(read_history(tmp_path / "run" / "search_focus")) == len(focus)
    with pytest.raises(SearchError, match=r"`resolution` 100: expected one of the space's input resolutions"):
        Search(config(trained, tmp_path / "x", resolution=100))
    with pytest.raises(SearchError, match=r"`resolution` and `per_resolution`"):
        Search(config(trained, tmp_path / "y", resolution=resolutions[0], per_resolution=True))


def test_stage_both_keeps_the_structure_in_the_modular_stage(trained, tmp_path):
    Search(config(trained, tmp_path / "s", generations=3)).run()
    history = read_history(tmp_path / "s")
    structural = [r for r in history if r["stage"] == "structural"]
    modular = [r for r in history if r["stage"] == "modular"]
    assert structural and modular
    space = SearchSpace.from_dict(SPACE)
    for r in structural:  # every block is the structural block (where a stage offers it)
        assert all(b == "ir_k3_e6" for st in r["arch"]["backbone"]["stages"][:3] for b in st["blocks"])
    best = max(structural, key=lambda r: r["map"])
    opening = [r for r in modular if r["generation"] == 0]
    assert [r["hash"] for r in opening if r.get("cached")] == [best["hash"]]  # the modular stage starts from it, not re-evaluated
    assert max(r["map"] for r in modular) >= best["map"]
    structure = {g.name for g in space.genes() if g.structure}
    assert structure == {"resolution", "neck.type", "head.type", *(f"backbone.stages[{i}].depth" for i in range(4))}
    fixed = {n: v for n, v in space.encode(Arch.from_dict(best["arch"])).items() if n in structure}
    for r in modular:
        genes = space.encode(Arch.from_dict(r["arch"]))
        assert {n: genes[n] for n in fixed} == fixed
    assert len({json.dumps(r["arch"]["backbone"]) for r in modular}) > 1  # and something else did evolve


class Killed(Exception):
    pass


def test_resume_after_a_kill_reevaluates_nothing(trained, tmp_path, monkeypatch):
    full = tmp_path / "full"
    Search(config(trained, full)).run()
    calls, resumed = [], False
    original = SubnetEvaluator.infer

    def dies_on_the_seventh(self, arch):
        calls.append(arch.hash())
        if len(calls) == 7 and not resumed:
            raise Killed
        return original(self, arch)

    monkeypatch.setattr(SubnetEvaluator, "infer", dies_on_the_seventh)
    cut = tmp_path / "cut"
    with pytest.raises(Killed):
        Search(config(trained, cut)).run()
    assert len(read_history(cut)) == 5  # the sixth was being scored (COCOeval overlaps the next subnet): lost, redone
    with open(cut / "history.jsonl", "a") as f:
        f.write('{"hash": "cut mid-li')  # the kill can cut a line
    calls.clear()
    resumed = True
    Search(config(trained, cut), resume=True).run()
    assert len(calls) == 16 - 5 - 1  # only what was not done (the modular stage's opening arch is the structural best's)
    strip = lambda rs: [(r["hash"], r["stage"], r["generation"], r["map"]) for r in rs]  # noqa: E731
    assert strip(read_history(cut)) == strip(read_history(full))
    assert json.loads((cut / "finalists.json").read_text()) == json.loads((full / "finalists.json").read_text())


def test_budget_and_setting_errors(trained, tmp_path):
    with pytest.raises(SearchError, match=r"`latency_budget` 0.001 ms: below the fastest subnet of this space on .*, \d+\.\d+ ms"):
        Search(config(trained, tmp_path / "a", latency_budget=0.001))
    Search(config(trained, tmp_path / "b", generations=1, stage="structural")).run()
    with pytest.raises(SearchError, match="already holds a search; pass `resume`"):
        Search(config(trained, tmp_path / "b", generations=1, stage="structural"))
    with pytest.raises(SearchError, match="other settings .`population`"):
        Search(config(trained, tmp_path / "b", generations=1, stage="structural", population=5), resume=True)
    with pytest.raises(SearchError, match="`resume`: no search to resume"):
        Search(config(trained, tmp_path / "c"), resume=True)


def test_modular_stage_needs_and_uses_a_base_arch(trained, tmp_path):
    space = SearchSpace.from_dict(SPACE)
    with pytest.raises(SearchError, match="base arch"):
        stage_genes(space, "modular")
    base = space.sample(3)
    genes = dict(stage_genes(space, "modular", base))
    assert genes["resolution"] == (base.resolution,) and genes["head.type"] == (base.head.type,)
    assert len(genes["neck.width"]) == 2
    arch_file = tmp_path / "base.json"
    arch_file.write_text(base.to_json())
    Search(config(trained, tmp_path / "m", stage="modular", base_arch=str(arch_file), generations=1)).run()
    assert all(r["arch"]["resolution"] == base.resolution for r in read_history(tmp_path / "m"))


@pytest.mark.parametrize("extra, message", [
    (["--supernet", "nowhere.pt"], "nowhere.pt: supernet checkpoint not found"),
    (["--lut", "nowhere.json"], "nowhere.json: latency table not found"),
])
def test_cli_errors(trained, tmp_path, extra, message, capsys):
    argv = ["--supernet", trained["checkpoint"], "--lut", trained["lut"], "--latency-budget", "5", "--out", str(tmp_path / "o"), *extra]
    assert evolve.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


@pytest.mark.slow
def test_torchrun_split_equals_single_process(trained, tmp_path):
    """Two gloo ranks split each generation's evaluations; rank 0 writes the same history."""
    cfg = config(trained, tmp_path / "single")
    args = ["--supernet", cfg.supernet, "--lut", cfg.lut, "--latency-budget", repr(cfg.latency_budget), "--population", "4",
            "--generations", "2", "--topk", "2", "--calib-batches", "1", "--eval-images", "2", "--batch-size", "2",
            "--workers", "0", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    single = subprocess.run([sys.executable, str(REPO / "evolve.py"), *args, "--out", str(tmp_path / "single")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                          str(REPO / "evolve.py"), *args, "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    strip = lambda rs: [(r["hash"], r["stage"], r["generation"], round(r["map"], 6)) for r in rs]  # noqa: E731
    assert strip(read_history(tmp_path / "ddp")) == strip(read_history(tmp_path / "single"))


def test_config_fields_are_flags():
    """Every setting of a search can be given on the command line."""
    cfg, resume = evolve.parse(["--latency-budget", "3", "--aging", "40", "--val-images", "v", "--objective", "pareto"])
    assert cfg == replace(SearchConfig(), latency_budget=3.0, aging=40, val_images="v", objective="pareto") and not resume


def test_the_fine_tune_keeps_the_supernets_own_width_sampling(trained, tmp_path):
    """A supernet saved before --width-sampling existed drew widths uniformly: its fine-tune must too."""
    recorded = {k: v for k, v in TrainConfig(steps=7, lr=0.02).__dict__.items() if k != "width_sampling"}
    search = config(trained, tmp_path / "s", finetune_steps=3)
    assert finetune_config(recorded, search, tmp_path).width_sampling == "uniform"
    wide = finetune_config({**recorded, "width_sampling": "wide"}, search, tmp_path)
    assert (wide.width_sampling, wide.lr, wide.steps, wide.structure) == ("wide", 0.02, 3, str(tmp_path / "structure.json"))


def test_stage_both_fine_tunes_on_the_found_structure_and_resumes(trained, tmp_path):
    import torch

    out = tmp_path / "ft"
    Search(config(trained, out, finetune_steps=2)).run()
    history = read_history(out)
    best = max((r for r in history if r["stage"] == "structural"), key=lambda r: r["map"])
    structure = Arch.from_dict(json.loads((out / "finetune" / "structure.json").read_text()))
    assert structure.hash() == best["hash"]
    result = json.loads((out / "finetune" / "result.json").read_text())
    assert result["step"] == 2
    before = torch.load(trained["checkpoint"], weights_only=True)["model"]
    after = torch.load(out / "finetune" / "last.pt", weights_only=True)
    assert after["config"]["start_from"] == trained["checkpoint"] and after["config"]["structure"].endswith("structure.json")
    assert any(not torch.equal(before[k], v) for k, v in after["model"].items())  # the modular stage ranks new weights
    modular = [r for r in history if r["stage"] == "modular"]
    for r in modular:
        assert (r["arch"]["resolution"], r["arch"]["head"]["type"]) == (structure.resolution, structure.head.type)
    assert modular[0]["hash"] == best["hash"] and not modular[0].get("cached")  # scored again, on the fine-tuned weights
    finalists = json.loads((out / "finalists.json").read_text())  # ranked on the final weights only
    assert {r["stage"] for r in finalists} == {"modular"} and finalists[0]["map"] == max(r["map"] for r in modular)
    mtime = (out / "finetune" / "last.pt").stat().st_mtime_ns
    Search(config(trained, out, finetune_steps=2), resume=True).run()  # done: neither trained nor evaluated again
    assert (out / "finetune" / "last.pt").stat().st_mtime_ns == mtime
    assert [r["hash"] for r in read_history(out)][: len(history)] == [r["hash"] for r in history]


@pytest.mark.parametrize("kw, message", [
    (dict(stage="structural", finetune_steps=2), "`finetune_steps`: fine-tunes between the two stages"),
    (dict(finetune_steps=-1), r"`finetune_steps`: expected an integer in \[0, inf\], got -1"),
    (dict(objective="best"), r"`objective`: expected one of \['map', 'pareto'\], got 'best'"),
    (dict(stage="modular"), "`stage` modular: needs `base_arch`"),
    (dict(structural_block="bogus"), "`structural_block` bogus: blocks: none of"),
])
def test_stage_settings_errors(trained, tmp_path, kw, message):
    with pytest.raises(SearchError, match=message):
        Search(config(trained, tmp_path / "e", **kw))


def test_random_control_draws_uniformly_under_the_budget(trained, tmp_path):
    summary = Search(config(trained, tmp_path / "r", stage="random", population=3, generations=2)).run()
    history = read_history(tmp_path / "r")
    assert len(history) == 6 == summary["evaluated"] and {r["stage"] for r in history} == {"random"}
    assert all(r["latency_ms"] <= trained["budget"] for r in history)
    assert len({json.dumps(r["arch"]["backbone"]["stages"]) for r in history}) > 1  # blocks drawn too, not fixed
    assert summary["best"]["map"] == max(r["map"] for r in history)


def test_random_control_draws_from_the_sub_space_the_supernet_trained(trained, tmp_path):
    """A stage-matched supernet (--train-blocks) trained one block: the control draws only
    archs of it, on the same weights, as the search's structural stage does."""
    cfg = TrainConfig(space=str(trained["root"] / "space.json"), data=str(trained["root"] / "shapes"), out=str(tmp_path / "sm"), steps=1,
                      batch_size=2, workers=0, eval_images=2, eval_random_archs=0, calib_batches=1, device="cpu", train_blocks=("ir_k3_e6",))
    Trainer(cfg, build_datasets(cfg, 96)).run()
    Search(config(trained, tmp_path / "r", supernet=str(tmp_path / "sm" / "last.pt"), stage="random", population=3, generations=2)).run()
    blocks = {b for r in read_history(tmp_path / "r") for s in r["arch"]["backbone"]["stages"] for b in s["blocks"]}
    assert blocks == {"ir_k3_e6", "basic"}  # the last stage offers no ir_k3_e6 and keeps its only choice



def test_smooth_ranks_by_the_smoothed_score(trained, tmp_path):
    """With smooth, every evaluated subnet carries its smoothed mAP; finalists are ranked by it
    (the raw mAP stays the measured one)."""
    out = tmp_path / "s"
    summary = Search(config(trained, out, smooth=True, stage="structural", generations=3, finalists=4)).run()
    finalists = json.loads((out / "finalists.json").read_text())
    assert all("map_smoothed" in f for f in finalists)
    assert [f["map_smoothed"] for f in finalists] == sorted((f["map_smoothed"] for f in finalists), reverse=True)
    history = read_history(out)
    assert summary["best"]["hash"] == finalists[0]["hash"] and {f["hash"] for f in finalists} <= {r["hash"] for r in history}
    raw = {r["hash"]: r["map"] for r in history}
    assert all(f["map"] == raw[f["hash"]] for f in finalists)


def test_flops_prior_ranks_by_map_times_gflops_to_the_power_alpha(trained, tmp_path):
    """Every evaluated subnet carries mAP x GFLOPs^alpha; evolution and finalists rank by it (the
    raw mAP stays the measured one), so a subnet that computes more can outrank a better-scored
    one; the random control, with the same config, ranks the same way."""
    out = tmp_path / "p"
    summary = Search(config(trained, out, flops_prior=0.5, stage="structural", generations=3, finalists=4)).run()
    history = read_history(out)
    assert all(r["map_flops"] == pytest.approx(r["map"] * (r["flops"] / 1e9) ** 0.5, abs=1e-6) for r in history)
    finalists = json.loads((out / "finalists.json").read_text())
    assert [f["map_flops"] for f in finalists] == sorted((f["map_flops"] for f in finalists), reverse=True)
    assert summary["best"]["hash"] == max(history, key=lambda r: r["map_flops"])["hash"]
    Search(config(trained, tmp_path / "r", flops_prior=0.5, stage="random", population=3, generations=2)).run()
    assert all("map_flops" in f for f in json.loads((tmp_path / "r" / "finalists.json").read_text()))
    with pytest.raises(SearchError, match="`flops_prior`: not with `smooth`"):
        config(trained, tmp_path / "x", flops_prior=0.5, smooth=True)
    with pytest.raises(SearchError, match="flops_prior"):
        config(trained, tmp_path / "x", flops_prior=-0.1)


def test_a_folder_searched_before_a_setting_existed_resumes_with_its_default(trained, tmp_path):
    out = tmp_path / "old"
    cfg = config(trained, out, stage="structural", generations=1)
    Search(cfg).run()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["flops_prior"]  # written by a version without it
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    assert Search(cfg, resume=True).run()["evaluated"] == 4
    with pytest.raises(SearchError, match="`flops_prior`"):
        Search(replace(cfg, flops_prior=0.3), resume=True)


def test_resolution_first_needs_more_generations_and_a_screening_of_every_resolution(tmp_path):
    from search.pipeline import run_pipeline

    with pytest.raises(ValueError, match=r"`resolution_first`: needs more generations \(4\) than input resolutions \(3\), and a "
                                         r"screening of every resolution's best \(2 finalists\)"):
        run_pipeline(tmp_path / "demo", quick=True, device="cpu", resolution_first=True)
    assert not (tmp_path / "demo").exists()  # refused before anything was written
    with pytest.raises(ValueError, match=r"`flops_prior`: expected a number >= 0 \(0: rank by mAP alone\), got -1"):
        run_pipeline(tmp_path / "demo", quick=True, device="cpu", flops_prior=-1)
    assert not (tmp_path / "demo" / "supernet").exists()


def test_a_finished_supernet_is_read_from_its_own_folder_after_a_move(tmp_path):
    from search.pipeline import _train_supernet

    moved = tmp_path / "moved" / "supernet"
    moved.mkdir(parents=True)
    (moved / "result.json").write_text(json.dumps({"checkpoint": "runs/elsewhere/supernet/last.pt", "eval": {"smallest": {"map": 0.1}}}))
    checkpoint, evaluation = _train_supernet(TrainConfig(out=str(moved)), SearchSpace.from_dict(SPACE))
    assert checkpoint == moved / "last.pt" and evaluation == {"smallest": {"map": 0.1}}


def test_the_report_says_how_the_searched_subnet_was_picked():
    from search.pipeline import _how_picked

    assert _how_picked({"hash": "a"}) == "after the screening below"
    assert _how_picked({"hash": "a", "focus_resolution": 128}).startswith("the best at 128 px, the resolution the screening below picked")


def test_neighbours_keep_resolution_and_head_and_are_scored_outside_the_history(trained, tmp_path):
    search = Search(config(trained, tmp_path / "s", stage="structural"))
    search.run()
    best = search.ranked()[0]
    exclude = [r.hash for r in search.ranked()[1:3]]
    near = search.neighbours(best.arch, 3, exclude=exclude)
    assert 1 <= len(near) <= 3 and len({a.hash() for a in near}) == len(near)
    assert all(a.resolution == best.arch.resolution and a.head.type == best.arch.head.type for a in near)
    assert not {a.hash() for a in near} & {best.hash, *exclude}
    assert all(search.table.predict(a) <= trained["budget"] for a in near)
    assert [a.hash() for a in search.neighbours(best.arch, 3, exclude=exclude)] == [a.hash() for a in near]  # seeded
    lines = len(read_history(tmp_path / "s"))
    records = search.inherited([*near, best.arch])
    assert [r.hash for r in records] == [a.hash() for a in near] + [best.hash] and records[-1] == best  # a known one is read back
    assert all(0 <= r.map <= 1 and r.latency_ms == pytest.approx(search.table.predict(r.arch)) for r in records)
    assert len(read_history(tmp_path / "s")) == lines  # kept out of the search's history and outputs


def test_the_pipelines_screening_searches_around_its_winner_and_the_control_screens_its_next_best(trained, tmp_path, monkeypatch):
    from search import pipeline

    def fake_screen(archs, space, config, out):  # a short training's mAP, without training: fixed per arch
        return sorted(({"hash": a.hash(), "arch": a.to_dict(), "map": int(a.hash(), 16) % 997 / 997} for a in archs),
                      key=lambda r: (-r["map"], r["hash"]))

    monkeypatch.setattr(pipeline, "screen", fake_screen)
    space, short = SearchSpace.from_dict(SPACE), TrainConfig(epochs=1)
    searcher = Search(config(trained, tmp_path / "search", stage="structural"))
    searcher.run()
    drawer = Search(config(trained, tmp_path / "random", stage="random"))
    drawer.run()
    for run, around in ((searcher, True), (drawer, False)):
        first = pipeline._screen(run, 2, space, short, tmp_path)
        more = pipeline._screen_more(run, first, 2, around, space, short, tmp_path)
        rows = more["screened"]
        assert len(first["screened"]) == 2 and len(rows) == 4
        assert [r["screen_map"] for r in rows] == sorted((r["screen_map"] for r in rows), reverse=True)
        assert more["pick"].hash == rows[0]["hash"] and more["pick"].map == rows[0]["inherited_map"]
        added = [r for r in rows if "chosen" in r]
        assert {r["hash"] for r in added} == {r["hash"] for r in rows} - {r["hash"] for r in first["screened"]}
        if around:  # mutants of the first screening's winner, at its resolution
            assert all(r["chosen"] == f"near `{first['pick'].hash}`" and r["resolution"] == first["pick"].arch.resolution for r in added)
        else:  # the control's next two by inherited score
            done = {r["hash"] for r in first["screened"]}
            nxt = sorted((r for r in run.ranked() if r.hash not in done), key=lambda r: (-r.map, r.latency_ms, r.hash))[:2]
            assert {r["hash"] for r in added} == {r.hash for r in nxt} and all(r["chosen"] == "next best" for r in added)


def test_screen_neighbours_needs_a_screening(tmp_path):
    from search.pipeline import QUICK, run_pipeline

    with pytest.raises(ValueError, match=r"`screen_neighbours`: searches around the screening's winner, so needs a screening "
                                         r"\(screen_finalists 1: at least 2, and screen_epochs or screen_steps\)"):
        run_pipeline(tmp_path / "demo", device="cpu", schedule=replace(QUICK, screen_neighbours=2, screen_finalists=1))
    assert not (tmp_path / "demo" / "supernet").exists()


@pytest.mark.parametrize("all_blocks", [False, True])
def test_all_blocks_trains_every_block_and_searches_both_stages_in_the_controls_budget(trained, tmp_path, monkeypatch, all_blocks):
    from search import pipeline

    class Stop(Exception):
        pass

    seen = {}

    class FakeSearch:
        def __init__(self, config, resume=False):
            seen["search"] = config

        def run(self):
            raise Stop

    def fake_supernet(train, space):
        seen["train"] = train
        return Path(trained["checkpoint"]), {}

    out = tmp_path / "demo"
    out.mkdir()
    monkeypatch.setattr(pipeline, "_train_supernet", fake_supernet)
    monkeypatch.setattr(pipeline, "_latency_table", lambda *a: trained["table"])
    monkeypatch.setattr(pipeline, "Search", FakeSearch)
    with pytest.raises(Stop):
        pipeline.run_pipeline(out, quick=True, device="cpu", all_blocks=all_blocks)
    generations = pipeline.QUICK.generations
    if all_blocks:  # every block trained; two stages of half the generations each (FULL: 4 + 4 of 12, the control's 96 draws)
        assert seen["train"].train_blocks is None
        assert (seen["search"].stage, seen["search"].generations) == ("both", generations // 2)
    else:  # stage-matched: one block, one stage
        assert seen["train"].train_blocks == (pipeline.STRUCTURAL_BLOCK,)
        assert (seen["search"].stage, seen["search"].generations) == ("structural", generations)


def test_stage_generations_and_all_blocks_without_resolution_first(tmp_path):
    from search.pipeline import run_pipeline, stage_generations

    assert [stage_generations("both", g) for g in (1, 2, 7, 8)] == [1, 1, 3, 4]
    assert stage_generations("structural", 7) == 7
    with pytest.raises(ValueError, match=r"^`resolution_first`: .* not with the modular stage \(`all_blocks`"):
        run_pipeline(tmp_path / "demo", quick=True, device="cpu", resolution_first=True, all_blocks=True)
    assert not (tmp_path / "demo").exists()  # refused before anything was written
