"""Does the search beat hand design and chance? The whole demo pipeline, once per seed.

    python benchmarks/search_vs_baselines.py                    # 3 seeds, the demo's space and data, CPU: ~1.5 h
    python benchmarks/search_vs_baselines.py --seeds 0 1 --quick

Each seed runs `end_to_end.py`'s pipeline in --work/seedN (supernet, search, random-search
control, the screening of each one's finalists by a short training, retraining of the searched
subnet, the control's pick, the smallest and largest trained subnets and every baseline with one
schedule). The latency table is built once, in the first
seed's folder, and copied to the others: it describes the device, not a seed, and so every seed
searches under the same budget. Per seed the JSON holds each model's mAP, measured and predicted
latency, and whether the searched subnet beats the control and every baseline whose measured
latency is at most --latency-slack above its own (every model of a seed timed again side by side,
interleaved, for this comparison); across seeds, the mean margin over the best such
baseline and the inherited / retrained mAP ratios. With --retrain-seeds K, the models compared
(the searched subnet, the control's pick and the baselines within the slack) are each retrained
with K seeds and compared by their mean mAP: two trainings of one arch differ by about as much as
the picks do. With --retrain-epochs E those K trainings all run anew at E epochs (the recipe
otherwise unchanged): does the verdict hold for detectors trained longer? Resumable: a seed that
finished is read back, an interrupted one continues.
"""
from __future__ import annotations

import argparse
import logging
import json
import shutil
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from search.pipeline import FULL, QUICK, SPACE, check_options, run_pipeline
from search.retrain import measure_latencies, retrain, timing_images
from supernet.baselines import RECIPES
from supernet.data import build_datasets
from supernet.distributed import init_distributed
from supernet.cli import CommandParser, log_to_stderr
from supernet.io import atomic_json, emit_result
from supernet.space import Arch, SearchSpace
from supernet.supernet import Detector
from supernet.train_config import recorded_config

EXTREMES = ("searched", "smallest", "largest")
SIDE_BY_SIDE_PASSES = 5
SIDE_BY_SIDE = "latency_side_by_side.json"

logger = logging.getLogger(__name__)


def side_by_side(out: Path, report: dict, device: str, passes: int = SIDE_BY_SIDE_PASSES) -> dict[str, float]:
    """Each retrained model's latency (ms), all timed in one interleaved run on the validation
    images (as `retrain` times them) and kept in OUT/latency_side_by_side.json: each retraining
    timed its model when it finished, minutes apart on a host whose speed drifts, which can move
    a baseline across the slack."""
    path = out / SIDE_BY_SIDE
    if not path.is_file():
        models = {name: Detector.load(out / "retrain" / name / "model.pt") for name in report["models"]}
        lut = next(out.glob("latency_*.json"))
        _, dev = init_distributed(device)
        config = recorded_config(torch.load(out / "retrain" / "searched" / "last.pt", map_location="cpu", weights_only=True)["config"])
        _, val_set = build_datasets(config, max(m.arch.resolution for m in models.values()))
        measured = measure_latencies(models, dev, str(lut), SearchSpace.resolve(report["space"]), passes, timing_images(val_set))
        atomic_json({name: m["latency_ms"] for name, m in measured.items()}, path)
    return json.loads(path.read_text())


def near_baselines(report: dict, slack: float, latency: dict[str, float]) -> list[str]:
    """The baselines whose latency (measured side by side) is at most `slack` above the searched subnet's."""
    limit = latency["searched"] * (1 + slack)
    return sorted(n for n in report["models"] if n in RECIPES and latency[n] <= limit)


def retrain_seeds(out: Path, report: dict, names: list[str], seeds: int, epochs: int | None = None) -> dict[str, list[float]]:
    """mAP of each of `names` over `seeds` trainings: the pipeline's own first, then the same
    schedule (its recorded config) with seeds +1000, +2000, ... in OUT/retrain_seedK/NAME.
    With `epochs`, every training (seeds +0, +1000, ...) is the same recipe run that many epochs,
    in OUT/retrain_eEPOCHS/NAME, then OUT/retrain_eEPOCHS_seedK/NAME; untimed, as the verdict
    takes the side-by-side latency."""
    space = SearchSpace.resolve(report["space"])
    folder = "retrain" if epochs is None else f"retrain_e{epochs}"
    maps = {}
    for name in names:
        config = recorded_config(torch.load(out / "retrain" / name / "last.pt", map_location="cpu", weights_only=True)["config"])
        if epochs is not None:
            config = replace(config, epochs=epochs, steps=None)
        arch = Arch.from_dict(report["models"][name]["arch"])
        maps[name] = [report["models"][name]["map"]] if epochs is None else []
        for k in range(len(maps[name]), seeds):
            logger.info(f"== retraining {name}, seed {config.seed + 1000 * k}, {config.epochs} epochs")
            cfg = replace(config, seed=config.seed + 1000 * k, out=str(out / (f"{folder}_seed{k}" if k else folder) / name))
            maps[name].append(retrain(arch, space, cfg, resume=True, timed=epochs is None)["map"])
    return maps


def compare(report: dict, slack: float, latency: dict[str, float], maps: dict[str, list[float]] | None = None) -> dict:
    """One seed's verdict: the searched subnet against the control and the baselines near its
    latency (`latency`: measured side by side), by the mean of `maps` where given (several
    retraining seeds), else by the one retraining's mAP."""
    maps = {n: maps[n] if maps and n in maps else [m["map"]] for n, m in report["models"].items()}
    score = {n: statistics.mean(v) for n, v in maps.items()}
    models = report["models"]
    near = near_baselines(report, slack, latency)
    best = max(near, key=lambda n: score[n]) if near else None
    return {
        "models": {n: {"map": round(score[n], 5), **({"maps": maps[n], "map_sd": round(statistics.stdev(maps[n]), 5)} if len(maps[n]) > 1 else {}),
                       "inherited_map": m.get("inherited_map"), "latency_ms": latency[n],
                       "latency_at_retraining_ms": m["latency_ms"], "latency_pred_ms": m["latency_pred_ms"]} for n, m in models.items()},
        "latency_budget_ms": report["latency_budget_ms"],
        "baselines_within_slack": near,
        "best_baseline": best,
        "margin_over_best_baseline": round(score["searched"] - score[best], 5) if best else None,
        "beats_baselines": all(score["searched"] > score[n] for n in near) if near else None,  # None: none competes
        "beats_random": score["searched"] > score["random"],
        "inherited_ratio": {n: round(models[n]["inherited_map"] / score[n], 3)
                            for n in EXTREMES if n in models and score[n] > 0},
        "screened": {n: report.get(n, {}).get("screened", []) for n in ("searched", "random")},  # none before the screening
    }


def margin_interval(seeds: dict[int, dict], against: str, resamples: int = 10000, seed: int = 0,
                    over_seeds: bool = False) -> list[float] | None:
    """95 % bootstrap interval of the searched subnet's mean margin (over the seeds) against the
    control (`against="random"`) or each seed's best baseline within the slack. Each model's
    trainings are resampled within its seed: the retraining noise under these seeds' picks. With
    `over_seeds` the seeds are resampled too (then the trainings within each), so the interval
    also holds the pipeline's own variation (supernet, search, control), which is what says whether
    the search beats its opponent in general and not only in these seeds. None where no model of a
    compared pair was trained more than once; over seeds, None with fewer than 2 seeds."""
    pairs = []
    for s in seeds.values():
        other = s["best_baseline"] if against == "best_baseline" else against
        if other is not None:
            pairs.append([np.asarray(s["models"][n].get("maps", [s["models"][n]["map"]]), float) for n in ("searched", other)])
    if len(pairs) < (2 if over_seeds else 1) or (not over_seeds and all(len(a) == 1 and len(b) == 1 for a, b in pairs)):
        return None
    rng = np.random.default_rng(seed)
    # one resample: a draw of each model's trainings per seed -> its mean margin per seed
    margins = np.stack([rng.choice(a, (resamples, len(a))).mean(1) - rng.choice(b, (resamples, len(b))).mean(1) for a, b in pairs], 1)
    if over_seeds:
        margins = np.take_along_axis(margins, rng.integers(0, len(pairs), margins.shape), 1)
    return [round(float(q), 4) for q in np.percentile(margins.mean(1), [2.5, 97.5])]


def summarize(seeds: dict[int, dict]) -> dict:
    margins = [s["margin_over_best_baseline"] for s in seeds.values() if s["margin_over_best_baseline"] is not None]
    ratios = {n: [s["inherited_ratio"][n] for s in seeds.values() if n in s["inherited_ratio"]] for n in EXTREMES}
    screened = {n: [rows for s in seeds.values() if (rows := s.get("screened", {}).get(n))] for n in ("searched", "random")}
    return {
        "seeds": len(seeds),
        "seeds_with_a_baseline_within_slack": sum(s["beats_baselines"] is not None for s in seeds.values()),
        "searched_beats_baselines": sum(bool(s["beats_baselines"]) for s in seeds.values()),
        "searched_beats_random": sum(s["beats_random"] for s in seeds.values()),
        "mean_margin_over_best_baseline": round(statistics.mean(margins), 5) if margins else None,
        "margin_over_best_baseline_ci95": margin_interval(seeds, "best_baseline"),
        "margin_over_best_baseline_ci95_over_seeds": margin_interval(seeds, "best_baseline", over_seeds=True),
        "margins": margins,
        "mean_margin_over_random": round(statistics.mean(
            s["models"]["searched"]["map"] - s["models"]["random"]["map"] for s in seeds.values()), 5),
        "margin_over_random_ci95": margin_interval(seeds, "random"),
        "margin_over_random_ci95_over_seeds": margin_interval(seeds, "random", over_seeds=True),
        "inherited_ratio_mean": {n: round(statistics.mean(v), 3) for n, v in ratios.items() if v},
        # seeds where the short trainings picked another subnet than the best inherited score would have (none: no screening)
        "screening_changed_pick": {n: sum(rows[0]["hash"] != max(rows, key=lambda r: r["inherited_map"])["hash"] for rows in screened[n])
                                   for n in ("searched", "random")} if any(screened.values()) else None,
    }


def main() -> None:
    log_to_stderr()
    p = CommandParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="the CI-sized schedule (a smoke run, not a result)")
    p.add_argument("--latency-slack", type=float, default=0.05,
                   help="baselines whose measured latency is at most this fraction above the searched subnet's compete")
    p.add_argument("--retrain-seeds", type=int, default=3,
                   help="retrain the searched subnet, the control's pick and the baselines within the slack with this many seeds each; compare means")
    p.add_argument("--smooth", action="store_true", help="the search and the control rank subnets by smoothed scores (evolve.py --smooth)")
    p.add_argument("--per-resolution", action=argparse.BooleanOptionalAction, default=True,
                   help="one evolution per input resolution (evolve.py --per-resolution; the demo's default)")
    p.add_argument("--resolution-first", action="store_true",
                   help="one generation per input resolution, the screening picks the resolution, the rest evolve there (SM-NAS's structure first)")
    p.add_argument("--flops-prior", type=float, default=0.0, metavar="ALPHA",
                   help="the search and the control rank subnets by inherited mAP x GFLOPs^ALPHA (evolve.py --flops-prior)")
    p.add_argument("--screen-neighbours", type=int, default=None, metavar="N",
                   help="after the screening, N mutants of the search's best short training and the control's next N are trained "
                        "briefly too (the pipeline's Schedule.screen_neighbours); default: the schedule's")
    p.add_argument("--retrain-epochs", type=int, default=None, metavar="E",
                   help="compare the models retrained with E epochs (the pipeline's recipe otherwise; all --retrain-seeds trainings run "
                        "anew in WORK/seedN/retrain_eE*): does the verdict hold when the detectors train longer?")
    p.add_argument("--all-blocks", action="store_true",
                   help="the supernet trains every block type and the search runs both stages (structural, then modular); the "
                        "control draws from all of it: a space far larger than uniform draws cover")
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", default="runs/search_vs_baselines")
    p.add_argument("--out", default="benchmarks/results/search_vs_baselines_cpu_tiny.json")
    p.add_argument("--summarize", metavar="RESULT", help="recompute the summary of a finished result JSON from its per-seed verdicts (in place) and stop")
    args = p.parse_args()
    if args.summarize:
        try:
            result = json.loads(Path(args.summarize).read_text())
            result["summary"] = summarize({int(k): v for k, v in result["per_seed"].items()})
        except (OSError, ValueError, KeyError, TypeError) as e:
            p.error(f"--summarize {args.summarize}: not a search_vs_baselines result ({type(e).__name__}: {e})")
        emit_result(result, args.summarize)
        return
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds: {args.seeds} repeats a seed")
    if args.screen_neighbours is not None and args.screen_neighbours < 0:
        p.error(f"--screen-neighbours: expected an integer >= 0, got {args.screen_neighbours}")
    schedule = QUICK if args.quick else FULL
    if args.screen_neighbours is not None:
        schedule = replace(schedule, screen_neighbours=args.screen_neighbours)
    try:  # the pipeline's own checks, before the first seed's folder is made
        check_options(SearchSpace.resolve(SPACE), schedule, args.all_blocks, args.resolution_first, args.flops_prior)
    except ValueError as e:
        p.error(str(e))
    if args.retrain_seeds < 1:
        p.error(f"--retrain-seeds: expected an integer >= 1, got {args.retrain_seeds}")
    if args.retrain_epochs is not None and args.retrain_epochs < 1:
        p.error(f"--retrain-epochs: expected an integer >= 1, got {args.retrain_epochs}")
    if not 0 <= args.latency_slack < 1:
        p.error(f"--latency-slack: expected a fraction in [0, 1), got {args.latency_slack}")
    work = Path(args.work)
    seeds, table = {}, None
    for seed in args.seeds:
        out = work / f"seed{seed}"
        out.mkdir(parents=True, exist_ok=True)
        if table is not None and not any(out.glob("latency_*.json")):
            shutil.copyfile(table, out / table.name)
        print(f"== seed {seed}: {out}", file=sys.stderr)
        report = run_pipeline(out, quick=args.quick, device=args.device, seed=seed, extremes=True, smooth=args.smooth,
                              per_resolution=args.per_resolution, resolution_first=args.resolution_first, flops_prior=args.flops_prior,
                              schedule=schedule, all_blocks=args.all_blocks)
        table = table or next(out.glob("latency_*.json"))
        latency = side_by_side(out, report, args.device)
        compared = ["searched", "random", *near_baselines(report, args.latency_slack, latency)]
        maps = retrain_seeds(out, report, compared, args.retrain_seeds, args.retrain_epochs)
        if args.retrain_epochs is not None:  # the others were not trained at this schedule: leave them out
            report = {**report, "models": {n: report["models"][n] for n in compared}}
        seeds[seed] = compare(report, args.latency_slack, latency, maps)
    emit_result({"benchmark": "search_vs_baselines", "space": report["space"], "quick": args.quick, "device": report["device"],
                 "latency_slack": args.latency_slack, "retrain_seeds": args.retrain_seeds,
                 "retrain_epochs": args.retrain_epochs, "smooth": args.smooth, "per_resolution": args.per_resolution,
                 "resolution_first": args.resolution_first, "flops_prior": args.flops_prior, "screen_neighbours": schedule.screen_neighbours,
                 "all_blocks": args.all_blocks,
                 "summary": summarize(seeds), "per_seed": seeds}, args.out)


if __name__ == "__main__":
    main()
