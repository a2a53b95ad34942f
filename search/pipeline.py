"""The whole pipeline in one call: data -> supernet -> latency table -> search -> retraining -> report.

What a newcomer runs first (`python end_to_end.py`, `make demo`): on the built-in shapes data and
the `tiny_one_stage` space (or the user's COCO-format data and any space), it trains the supernet, builds the latency table of this machine, searches under
a budget halfway between the fastest and the slowest subnet, retrains the best finalist and the
hand-designed baselines with one schedule, and writes `report.md` comparing them. Every step
writes into its own folder under `out` and is skipped (or resumed) when run again, so an
interrupted demo continues where it stopped.
"""
from __future__ import annotations

import logging
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from latency.measure import Settings
from latency.table import LatencyTable, build_table
from supernet.baselines import baselines
from supernet.cli import flag
from supernet.data import build_datasets
from supernet.distributed import init_distributed
from supernet.errors import TrainError
from supernet.io import atomic_json, atomic_write_bytes
from supernet.space import SearchSpace
from supernet.train_config import TrainConfig
from supernet.trainer import Trainer

from .nas import RANDOM, STRUCTURAL_BLOCK, Search, SearchConfig, search_started
from .records import SubnetRecord
from .retrain import retrain
from .screen import by_score, resolution_finalists, screen

SPACE = "tiny_one_stage"  # see the preset: at one time budget, more supernet steps instead of the two-stage head
# a baseline the table predicts this much over the budget is not retrained: the search could not pick it, and measured
# latencies would have to be off by twice the benchmark's slack for it to compete with what the search picked
BASELINE_OVER_BUDGET = 0.10
DATA_FIELDS = ("data", "train_ann", "train_images", "val_ann", "val_images")  # TrainConfig's: where the images come from

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Schedule:
    """How much of each step to run: `FULL` is the ~20 min CPU demo (quiet host), `QUICK` the ~3 min CI run."""

    supernet_epochs: int
    supernet_steps: int | None  # takes precedence over epochs
    batch_size: int
    lut_repeats: int
    lut_passes: int
    lut_calib: int
    population: int
    generations: int
    search_val_images: int
    calib_batches: int
    retrain_steps: int | None
    retrain_epochs: int
    search_stage: str  # structural | both (structural, a fine-tune on the structure found, modular)
    finetune_steps: int  # with "both": the supernet fine-tuned on the found structure before the modular stage
    screen_finalists: int  # the best subnet of each resolution (then the next best), up to this many (1: no screening), trained briefly ...
    screen_epochs: int  # ... for this many epochs; the best of them is retrained in full
    screen_steps: int | None  # takes precedence over screen_epochs
    # then the search's screening winner is searched around: this many of its mutants (resolution and head kept) are trained
    # with the same short schedule, and the control's next best by score as many; the best of all is retrained in full
    screen_neighbours: int = 0


FULL = Schedule(supernet_epochs=144, supernet_steps=None, batch_size=16, lut_repeats=20, lut_passes=2, lut_calib=20,
                population=12, generations=8, search_val_images=100, calib_batches=8, retrain_steps=None, retrain_epochs=12,
                search_stage="structural", finetune_steps=0, screen_finalists=2, screen_epochs=6, screen_steps=None)
QUICK = Schedule(supernet_epochs=1, supernet_steps=24, batch_size=8, lut_repeats=3, lut_passes=1, lut_calib=4,
                 population=6, generations=4, search_val_images=24, calib_batches=2, retrain_steps=20, retrain_epochs=1,
                 search_stage="structural", finetune_steps=0, screen_finalists=2, screen_epochs=1, screen_steps=8)


def run_pipeline(out: str | Path = "runs/demo", quick: bool = False, device: str = "auto", seed: int = 0, workers: int = 2,
                 extremes: bool = False, smooth: bool = False, space: str = SPACE, data: Optional[dict[str, str]] = None,
                 per_resolution: bool = True, resolution_first: bool = False, flops_prior: float = 0.0,
                 schedule: Optional[Schedule] = None, all_blocks: bool = False) -> dict:
    """Run (or continue) every step in `out`; returns the report's data (also in report.json).

    `space`: a preset name or a space JSON file. `data`: where the images come from, as
    `TrainConfig`'s fields (`data`, a COCO 2017 layout root, and/or `train_ann`, `train_images`,
    `val_ann`, `val_images`); none: the built-in shapes data.

    `extremes`: also retrain the smallest and largest subnets the supernet trained, so that their
    inherited mAP can be set against their retrained mAP (the benchmarks do). `smooth`: the
    search and its random control rank subnets by smoothed scores (`SearchConfig.smooth`);
    `per_resolution`: one evolution per input resolution (`SearchConfig.per_resolution`), so
    that the screening compares each resolution's evolved best: one evolution over all of them
    spends most of its evaluations where inherited scores over-rate (96 px in `tiny`) and leaves
    the others' finalists to chance.
    `resolution_first`: structure before modules, as SM-NAS: one generation per input resolution,
    the screening of their bests picks the resolution, and the remaining generations evolve at that
    resolution only (in OUT/search_focus); the pick is the best score there. Inherited scores
    rank subnets of one resolution and head far better than across resolutions, and the search
    otherwise spends most of its evaluations where they over-rate (a lower resolution). The
    control and the screening's cost stay as they are.
    `flops_prior`: the search and its control rank subnets by inherited mAP x GFLOPs^flops_prior
    (`SearchConfig.flops_prior`).
    `schedule`: instead of `FULL` (or `QUICK`), e.g. longer trainings for a small real dataset.
    `all_blocks`: the supernet trains every block type of the space, not the structural stage's
    alone, and the search runs both stages (structural, then modular: blocks and widths on the
    structure found); the control draws from all of it. A space far larger than uniform draws
    cover: where a search has the most room over chance."""
    s = schedule or (QUICK if quick else FULL)
    stage = search_stage(s, all_blocks)
    space_name = space
    try:
        space = SearchSpace.resolve(space_name)
    except ValueError as e:
        raise TrainError(str(e)) from None
    check_options(space, s, all_blocks, resolution_first, flops_prior, data)
    first = first_generations(space, stage, s.generations, resolution_first)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info, dev = init_distributed(device)
    if info.world > 1:
        raise ValueError("end_to_end: runs as a single process; use smnas train / search / retrain under torchrun")
    timings: dict[str, float] = {}

    def step(name: str, fn: Callable[[], object]):
        logger.info(f"== {name}")
        start = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - start, 1)
        return result

    train = TrainConfig(space=space_name, **(data or {}), out=str(out / "supernet"), epochs=s.supernet_epochs, steps=s.supernet_steps, batch_size=s.batch_size,
                        seed=seed, workers=workers, device=str(dev), calib_batches=s.calib_batches, eval_images=s.search_val_images,
                        train_blocks=None if all_blocks else (STRUCTURAL_BLOCK,))  # else stage-matched: the structural stage's block everywhere
    supernet, supernet_eval = step("supernet training", lambda: _train_supernet(train, space))
    lut = out / f"latency_{dev.type}.json"
    classes = _num_classes(supernet)
    table = step("latency table", lambda: _latency_table(space, dev, s, lut, seed, classes))
    budget, fastest, slowest = halfway_budget(table)
    logger.info(f"latency budget: {budget:g} ms, halfway between the fastest ({fastest:.3f} ms) and the slowest ({slowest:.3f} ms) subnet")
    search = SearchConfig(supernet=str(supernet), latency_budget=budget, lut=str(lut), population=s.population, generations=first,
                          topk=max(2, s.population // 4), calib_batches=s.calib_batches, eval_images=s.search_val_images,
                          batch_size=s.batch_size, seed=seed, out=str(out / "search"), device=str(dev), workers=workers,
                          stage=stage, finetune_steps=s.finetune_steps, smooth=smooth, per_resolution=per_resolution or resolution_first,
                          flops_prior=flops_prior)
    searcher = Search(search, resume=search_started(out / "search"))
    summary = step("search", searcher.run)
    # the control: as many subnets as the search's budget (at least as many as it evaluated), drawn uniformly under the
    # latency budget, scored the same way
    control_cfg = replace(search, stage=RANDOM, population=s.population * s.generations, generations=1, finetune_steps=0,
                          per_resolution=False, out=str(out / "random"))
    drawer = Search(control_cfg, resume=search_started(out / "random"))
    control = step("random-search control", drawer.run)
    screen_cfg = replace(train, epochs=s.screen_epochs, steps=s.screen_steps, eval_images=0)
    screened = {name: step(f"screening {name}", lambda name=name, run=run: _screen(run, s.screen_finalists, space, screen_cfg, out / "screen" / name))
                for name, run in (("searched", searcher), ("random", drawer))}
    if s.screen_neighbours:
        screened = {name: step(f"screening around {name}", lambda name=name, run=run: _screen_more(
            run, screened[name], s.screen_neighbours, name == "searched", space, screen_cfg, out / "screen" / name))
            for name, run in (("searched", searcher), ("random", drawer))}
    finalist, pick = screened["searched"]["pick"], screened["random"]["pick"]
    if resolution_first:
        finalist, evaluated = step("search at the screened resolution", lambda: _focus(searcher, finalist.arch.resolution, s.generations - first))
        summary = {**summary, "evaluated": summary["evaluated"] + evaluated}
    candidates = {"searched": finalist.arch, "random": pick.arch}
    inherited = {"searched": finalist.map, "random": pick.map}
    if extremes:
        trained = space.restrict(blocks=train.train_blocks)
        candidates.update(smallest=trained.smallest(), largest=trained.largest())
        inherited.update(smallest=supernet_eval["smallest"]["map"], largest=supernet_eval["largest"]["map"])
    over_budget = {}
    for name, arch in baselines(space).items():
        predicted = table.predict(arch)
        if predicted > budget * (1 + BASELINE_OVER_BUDGET):
            over_budget[name] = round(predicted, 3)
            logger.info(f"{name}: predicted {predicted:.3f} ms, more than {BASELINE_OVER_BUDGET:.0%} over the budget; not retrained")
        else:
            candidates[name] = arch
    retrain_cfg = replace(train, epochs=s.retrain_epochs, steps=s.retrain_steps, eval_images=0)
    results = {}
    for name, arch in candidates.items():
        cfg = replace(retrain_cfg, out=str(out / "retrain" / name))
        results[name] = step(f"retraining {name}", lambda cfg=cfg, arch=arch: retrain(
            arch, space, cfg, lut=str(lut), resume=True))
    report = {
        "device": table.meta.device_name, "space": space_name, "quick": quick, "data": data or {}, "latency_budget_ms": budget,
        "latency_range_ms": [round(fastest, 3), round(slowest, 3)], "schedule": asdict(s),
        "all_blocks": all_blocks, "search_stage": stage,
        "searched": {"hash": finalist.hash, "inherited_map": finalist.map, "predicted_ms": finalist.latency_ms,
                     "evaluated": summary["evaluated"], "screened": screened["searched"]["screened"],
                     **({"focus_resolution": finalist.arch.resolution} if resolution_first else {})},
        "random": {"hash": pick.hash, "inherited_map": pick.map, "predicted_ms": pick.latency_ms,
                   "evaluated": control["evaluated"], "screened": screened["random"]["screened"]},
        "models": {name: {"arch": candidates[name].to_dict(), "inherited_map": inherited.get(name), **r} for name, r in results.items()},
        "baselines_over_budget": over_budget,  # name: predicted ms
        "seconds": timings,
    }
    shutil.copyfile(out / "search" / "pareto.png", out / "pareto.png")
    atomic_json(report, out / "report.json")
    atomic_write_bytes(out / "report.md", render_report(report).encode())
    return report


def check_options(space: SearchSpace, s: Schedule, all_blocks: bool = False, resolution_first: bool = False, flops_prior: float = 0.0,
                  data: Optional[dict[str, str]] = None) -> None:
    """`run_pipeline`'s options checked together before anything runs or is written (the search's
    own config is made only after the supernet trains); ValueError naming the option."""
    stage = search_stage(s, all_blocks)
    if resolution_first and stage == "both":
        raise ValueError("`resolution_first`: evolves the structure, then more of it at one resolution; not with the modular stage "
                         "(`all_blocks`, or the schedule's search_stage 'both')")
    first = first_generations(space, stage, s.generations, resolution_first)
    if resolution_first and (s.generations <= first or s.screen_finalists < first or not (s.screen_steps or s.screen_epochs)):
        raise ValueError(f"`resolution_first`: needs more generations ({s.generations}) than input resolutions ({first}), and a "
                         f"screening of every resolution's best ({s.screen_finalists} finalists)")
    if s.screen_neighbours and (s.screen_finalists < 2 or not (s.screen_steps or s.screen_epochs)):
        raise ValueError(f"`screen_neighbours`: searches around the screening's winner, so needs a screening (screen_finalists "
                         f"{s.screen_finalists}: at least 2, and screen_epochs or screen_steps)")
    if flops_prior < 0:
        raise ValueError(f"`flops_prior`: expected a number >= 0 (0: rank by mAP alone), got {flops_prior}")
    unknown = sorted(set(data or {}) - set(DATA_FIELDS))
    if unknown:
        raise ValueError(f"`data`: unknown source field(s) {unknown}; expected some of {list(DATA_FIELDS)}")


def search_stage(s: Schedule, all_blocks: bool) -> str:
    """The search's stages: both (structural, then modular) when the supernet trained every block
    type, else the schedule's."""
    return "both" if all_blocks else s.search_stage


def first_generations(space: SearchSpace, stage: str, generations: int, resolution_first: bool) -> int:
    """Generations of the search's first evolution: one per input resolution with
    `resolution_first` (before the resolution is picked), else those of its first stage."""
    return len(space.resolutions) if resolution_first else stage_generations(stage, generations)


def stage_generations(stage: str, generations: int) -> int:
    """Generations of each search stage when the search gets `generations` in all: both stages
    (structural, then modular) share them, so that the search and its control evaluate alike."""
    return max(1, generations // 2) if stage == "both" else generations


def _focus(first: Search, resolution: int, generations: int) -> tuple[SubnetRecord, int]:
    """(the best subnet at `resolution`, subnets evaluated): `generations` more of `first`'s
    search at that resolution only, in OUT/search_focus next to it; `first`'s own subnets at that
    resolution compete too."""
    c = first.config
    out = Path(c.out).parent / "search_focus"
    focus = Search(replace(c, per_resolution=False, resolution=resolution, generations=generations, out=str(out)), resume=search_started(out))
    summary = focus.run()
    records = [r for r in first.ranked() if r.arch.resolution == resolution] + focus.ranked()
    return min(records, key=lambda r: (-r.score(first.score_key), r.latency_ms, r.hash)), summary["evaluated"]


def _screen(search: Search, count: int, space: SearchSpace, config: TrainConfig, out: Path) -> dict:
    """{"pick": the search record to retrain, "screened": one row per finalist trained briefly}.
    With one finalist or a 0-epoch schedule nothing is trained: the pick is the best by score."""
    finalists = resolution_finalists(search.ranked(), count, search.score_key)
    if count <= 1 or not (config.steps or config.epochs):
        return {"pick": finalists[0], "screened": []}
    return _screened(finalists, screen([r.arch for r in finalists], space, config, out))


def _screen_more(search: Search, first: dict, count: int, around: bool, space: SearchSpace, config: TrainConfig, out: Path) -> dict:
    """`_screen`'s result with `count` more subnets trained briefly: with `around` (the search), mutants
    of the screening's winner (`Search.neighbours`), scored with inherited weights for the report
    only; else (the control, which draws without looking) its next best by score. Either way both
    sides train as many; the pick is the best short training of all."""
    done = [row["hash"] for row in first["screened"]]
    ranked = search.ranked()
    if around:
        more = search.inherited(search.neighbours(first["pick"].arch, count, exclude=done))
    else:
        more = [r for r in by_score(ranked, search.score_key) if r.hash not in done][:count]
    records = {r.hash: r for r in ranked if r.hash in done} | {r.hash: r for r in more}
    results = screen([records[h].arch for h in done] + [r.arch for r in more], space, config, out)  # the first ones read back
    chosen = f"near `{first['pick'].hash}`" if around else "next best"
    return _screened(list(records.values()), results, {r.hash: chosen for r in more})


def _screened(records: list[SubnetRecord], results: list[dict], chosen: Optional[dict[str, str]] = None) -> dict:
    """{"pick", "screened"} of short-training `results` (best first) of search `records`; `chosen`:
    how the subnets added after the first finalists were chosen (hash -> words), in their rows."""
    by_hash = {r.hash: r for r in records}
    rows = [{"hash": r["hash"], "resolution": r["arch"]["resolution"], "inherited_map": by_hash[r["hash"]].map,
             "screen_map": r["map"], "latency_pred_ms": by_hash[r["hash"]].latency_ms,
             **({"chosen": chosen[r["hash"]]} if chosen and r["hash"] in chosen else {})} for r in results]
    return {"pick": by_hash[results[0]["hash"]], "screened": rows}


def halfway_budget(table: LatencyTable) -> tuple[float, float, float]:
    """(budget, fastest, slowest) in ms: the demo's budget, halfway across the space's exact latency range."""
    fastest, slowest = table.extreme(fastest=True)[1], table.extreme(fastest=False)[1]
    return round((fastest + slowest) / 2, 3), fastest, slowest


def _train_supernet(config: TrainConfig, space: SearchSpace) -> tuple[Path, dict]:
    """(checkpoint, the final evaluation of its smallest, largest and random paths)."""
    done = Path(config.out) / "result.json"
    if done.is_file():
        logger.info(f"{done.parent}: trained already")
        result = json.loads(done.read_text())
    else:
        trainer = Trainer(config, build_datasets(config, max(space.resolutions)), resume=(Path(config.out) / "last.pt").is_file())
        result = trainer.run()
        atomic_json(result, done)
    return Path(config.out) / Path(result["checkpoint"]).name, result["eval"]  # the folder's own: a moved run folder still works


def _num_classes(checkpoint: Path) -> int:
    """The classes the supernet predicts: the head and NMS cost the latency table times depend on them."""
    import torch

    return int(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["num_classes"])  # mmap: no tensor is read


def _latency_table(space: SearchSpace, device, s: Schedule, path: Path, seed: int, classes: int) -> LatencyTable:
    if path.is_file():
        logger.info(f"{path}: built already")
        return LatencyTable.load(path)
    settings = Settings(str(device), repeats=s.lut_repeats, warmup=min(5, s.lut_repeats))
    return build_table(space, settings, path, classes, s.lut_passes, s.lut_calib, seed)


COLUMNS = (("model", "{}"), ("mAP", "{:.4f}"), ("AP50", "{:.4f}"), ("inherited mAP", "{}"), ("latency measured (ms)", "{:.3f}"),
           ("latency predicted (ms)", "{:.3f}"), ("under budget", "{}"), ("GFLOPs", "{:.4f}"), ("params (M)", "{:.3f}"),
           ("train (s)", "{:.0f}"))


def report_rows(report: dict) -> list[list[str]]:
    rows = []
    budget = report["latency_budget_ms"]
    for name, m in report["models"].items():
        pred = m["latency_pred_ms"]
        inherited = m.get("inherited_map")  # only subnets of the supernet have one
        values = [name, m["map"], m["ap50"], "-" if inherited is None else f"{inherited:.4f}", m["latency_ms"], pred,
                  "yes" if pred <= budget else "no",
                  m["flops"] / 1e9, m["params"] / 1e6, m["train_seconds"]]
        rows.append([fmt.format(v) for (_, fmt), v in zip(COLUMNS, values)])
    return rows


def render_table(report: dict) -> str:
    """The comparison as a Markdown table (what the report and the terminal show)."""
    header = [c for c, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in report_rows(report)]
    return "\n".join(lines)


def render_over_budget(report: dict) -> list[str]:
    """The line on the baselines left out (report.md lines)."""
    over = report.get("baselines_over_budget")
    if not over:
        return []
    names = ", ".join(f"`{name}` ({ms:g} ms)" for name, ms in over.items())
    return [f"Not retrained, predicted more than {BASELINE_OVER_BUDGET:.0%} over the budget: {names}.", ""]


def render_screening(report: dict) -> list[str]:
    """The screening's rows (report.md lines): which finalists were trained briefly, and what they scored."""
    rows = [(name, r) for name in ("searched", "random") for r in report[name].get("screened", [])]
    if not rows:
        return []
    more = report["schedule"].get("screen_neighbours", 0)
    around = (f" Then {more} subnets near the search's best short training (a few choices changed at random, its resolution and "
              f"head kept) and the control's next {more} by inherited score were trained the same way (`chosen`).") if more else ""
    text = ["Screening: before the full retraining, the best subnet of each input resolution (then the next best) of the search "
            f"and of the control was trained from scratch for {_short_schedule(report['schedule'])}.{around} The best of each "
            "(first of its group) is the one retrained above.", "",
            "| from | subnet | resolution | inherited mAP | screening mAP | latency predicted (ms) |" + (" chosen |" if more else ""),
            "|---|---|---|---|---|---|" + ("---|" if more else "")]
    text += [f"| {name} | `{r['hash']}` | {r['resolution']} | {r['inherited_map']:.4f} | {r['screen_map']:.4f} | {r['latency_pred_ms']:.3f} |"
             + (f" {r.get('chosen', 'finalist')} |" if more else "") for name, r in rows]
    return text + [""]


def _short_schedule(schedule: dict) -> str:
    steps = schedule["screen_steps"]
    return f"{steps} steps" if steps else f"{schedule['screen_epochs']} epochs"


def _describe(data: Optional[dict]) -> str:
    if not data:
        return "the built-in shapes data"
    return ", ".join(f"{flag(k)} {v}" for k, v in data.items())


def _how_picked(searched: dict) -> str:
    if "focus_resolution" in searched:
        return (f"the best at {searched['focus_resolution']} px, the resolution the screening below picked, where the search's "
                "later generations evolved")
    return "after the screening below"


def render_report(report: dict) -> str:
    searched = report["searched"]
    lo, hi = report["latency_range_ms"]
    text = [
        "# smnas end-to-end report", "",
        f"Device: {report['device']}; space `{report['space']}`{' (quick schedule)' if report['quick'] else ''}; data: "
        f"{_describe(report.get('data'))}.",
        f"Latency budget **{report['latency_budget_ms']:g} ms** (predicted), halfway between the fastest ({lo:g} ms) and the "
        f"slowest ({hi:g} ms) subnet of the space.", "",
        *([f"The supernet trained every block type of the space, and the search ran both stages: the structure with every "
           f"block `{STRUCTURAL_BLOCK}`, then blocks and widths on the structure found.", ""] if report.get("all_blocks") else []),
        f"The search evaluated {searched['evaluated']} subnets with inherited weights; its pick under the budget "
        f"(`{searched['hash']}`, {_how_picked(searched)}) had mAP {searched['inherited_map']:.4f} with inherited weights. The "
        f"random-search control drew {report['random']['evaluated']} subnets uniformly under the same budget and scored and "
        f"screened them the same way; its pick (`{report['random']['hash']}`, row `random`) had {report['random']['inherited_map']:.4f}. Below, these two and the hand-designed "
        "baselines (`supernet/baselines.py`), each trained from scratch with the same schedule and scored on the whole "
        "validation set (`inherited mAP`: the same subnet's score with the supernet's weights, where it has one). Latency is measured end to end on this machine with the latency table's settings, next to the "
        "table's prediction.", "",
        render_table(report), "",
        *render_over_budget(report),
        *render_screening(report),
        "![Pareto front of the search](pareto.png)", "",
        "Seconds per step: " + ", ".join(f"{k} {v:g}" for k, v in report["seconds"].items()) + ".", "",
    ]
    return "\n".join(text)
