"""Does the search beat hand design and chance? The whole demo pipeline, once per seed.

    python benchmarks/search_vs_baselines.py                    # 3 seeds, the demo's space and data, CPU: ~45 min
    python benchmarks/search_vs_baselines.py --seeds 0 1 --quick

Each seed runs `end_to_end.py`'s pipeline in --work/seedN (supernet, search, random-search
control, retraining of the searched subnet, the control's best, the smallest and largest trained
subnets and every baseline with one schedule). The latency table is built once, in the first
seed's folder, and copied to the others: it describes the device, not a seed, and so every seed
searches under the same budget. Per seed the JSON holds each model's mAP, measured and predicted
latency, and whether the searched subnet beats the control and every baseline whose measured
latency is at most --latency-slack above its own (every model of a seed timed again side by side,
interleaved, for this comparison); across seeds, the mean margin over the best such
baseline and the inherited / retrained mAP ratios. Resumable: a seed that finished is read back,
an interrupted one continues.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

from search.pipeline import run_pipeline
from search.retrain import measure_latencies
from supernet.baselines import RECIPES
from supernet.io import atomic_json, emit_result
from supernet.space import SearchSpace
from supernet.supernet import Detector
from supernet.trainer import init_distributed

EXTREMES = ("searched", "smallest", "largest")
SIDE_BY_SIDE_PASSES = 5


def side_by_side(out: Path, report: dict, device: str, passes: int = SIDE_BY_SIDE_PASSES) -> dict[str, float]:
    """Each retrained model's latency (ms), all timed in one interleaved run and kept in
    OUT/latency_side_by_side.json: each retraining timed its model when it finished, minutes
    apart on a host whose speed drifts, which can move a baseline across the slack."""
    path = out / "latency_side_by_side.json"
    if not path.is_file():
        models = {name: Detector.load(out / "retrain" / name / "model.pt") for name in report["models"]}
        lut = next(out.glob("latency_*.json"))
        _, dev = init_distributed(device)
        measured = measure_latencies(models, dev, str(lut), SearchSpace.preset(report["space"]), passes)
        atomic_json({name: m["latency_ms"] for name, m in measured.items()}, path)
    return json.loads(path.read_text())


def compare(report: dict, slack: float, latency: dict[str, float]) -> dict:
    """One seed's verdict: the searched subnet against the control and the baselines near its
    latency (`latency`: measured side by side)."""
    models = report["models"]
    searched = models["searched"]
    limit = latency["searched"] * (1 + slack)
    baselines = {n: m for n, m in models.items() if n in RECIPES}
    near = {n: m for n, m in baselines.items() if latency[n] <= limit}
    best = max(near, key=lambda n: near[n]["map"]) if near else None
    return {
        "models": {n: {"map": m["map"], "inherited_map": m.get("inherited_map"), "latency_ms": latency[n],
                       "latency_at_retraining_ms": m["latency_ms"], "latency_pred_ms": m["latency_pred_ms"]} for n, m in models.items()},
        "latency_budget_ms": report["latency_budget_ms"],
        "baselines_within_slack": sorted(near),
        "best_baseline": best,
        "margin_over_best_baseline": round(searched["map"] - near[best]["map"], 5) if best else None,
        "beats_baselines": all(searched["map"] > m["map"] for m in near.values()) if near else None,  # None: none competes
        "beats_random": searched["map"] > models["random"]["map"],
        "inherited_ratio": {n: round(models[n]["inherited_map"] / models[n]["map"], 3)
                            for n in EXTREMES if n in models and models[n]["map"] > 0},
    }


def summarize(seeds: dict[int, dict]) -> dict:
    margins = [s["margin_over_best_baseline"] for s in seeds.values() if s["margin_over_best_baseline"] is not None]
    ratios = {n: [s["inherited_ratio"][n] for s in seeds.values() if n in s["inherited_ratio"]] for n in EXTREMES}
    return {
        "seeds": len(seeds),
        "seeds_with_a_baseline_within_slack": sum(s["beats_baselines"] is not None for s in seeds.values()),
        "searched_beats_baselines": sum(bool(s["beats_baselines"]) for s in seeds.values()),
        "searched_beats_random": sum(s["beats_random"] for s in seeds.values()),
        "mean_margin_over_best_baseline": round(statistics.mean(margins), 5) if margins else None,
        "margins": margins,
        "mean_margin_over_random": round(statistics.mean(
            s["models"]["searched"]["map"] - s["models"]["random"]["map"] for s in seeds.values()), 5),
        "inherited_ratio_mean": {n: round(statistics.mean(v), 3) for n, v in ratios.items() if v},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="the CI-sized schedule (a smoke run, not a result)")
    p.add_argument("--latency-slack", type=float, default=0.05,
                   help="baselines whose measured latency is at most this fraction above the searched subnet's compete")
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", default="runs/search_vs_baselines")
    p.add_argument("--out", default="benchmarks/results/search_vs_baselines_cpu_tiny.json")
    args = p.parse_args()
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds: {args.seeds} repeats a seed")
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
        report = run_pipeline(out, quick=args.quick, device=args.device, seed=seed, extremes=True,
                              log=lambda m: print(m, file=sys.stderr))
        table = table or next(out.glob("latency_*.json"))
        seeds[seed] = compare(report, args.latency_slack, side_by_side(out, report, args.device))
    emit_result({"benchmark": "search_vs_baselines", "space": report["space"], "quick": args.quick, "device": report["device"],
                 "latency_slack": args.latency_slack, "summary": summarize(seeds), "per_seed": seeds}, args.out)


if __name__ == "__main__":
    main()
