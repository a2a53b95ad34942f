"""Can the supernet's ranking be trusted? Inherited-weight mAP against standalone-trained mAP.

    python benchmarks/ranking.py                       # the demo's supernet and table (runs/demo)
    python benchmarks/ranking.py --supernet runs/supernet/last.pt --lut luts/cpu_tiny.json -k 12 --epochs 6

Picks K archs spread evenly over the table's latency range (one random arch per latency bin),
scores each with inherited weights after BN recalibration (what the search sees) and after
training it from scratch with one short schedule (what a user gets), on the whole validation set,
and prints one JSON line with Kendall tau and Spearman rho between the two, plus a scatter plot.
Resumable: retrained archs are kept under --work and skipped when run again.
"""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

from latency.table import LatencyTable
from search.nas import SubnetEvaluator
from search.retrain import retrain
from supernet.io import atomic_json, atomic_save_figure, emit_result, pyplot
from supernet.space import Arch, SearchSpace
from supernet.trainer import TrainConfig, build_datasets, init_distributed, load_supernet

POOL = 3000  # random archs whose predicted latencies the K picks are drawn from


def spread_archs(space: SearchSpace, table: LatencyTable, k: int, seed: int) -> list[Arch]:
    """K distinct archs, one from each of K equal bins of predicted latency (empty bins are
    filled from the nearest non-empty ones)."""
    rng = random.Random(seed)
    pool = {a.hash(): a for a in (space.sample(rng) for _ in range(POOL))}
    timed = sorted((table.predict(a), h) for h, a in pool.items())
    lo, hi = timed[0][0], timed[-1][0]
    bins: list[list[str]] = [[] for _ in range(k)]
    for ms, h in timed:
        bins[min(k - 1, int((ms - lo) / (hi - lo) * k))].append(h)
    picks: list[str] = []
    for i in range(k):
        for j in sorted(range(k), key=lambda j: abs(j - i)):  # this bin, else the nearest with archs left
            left = [h for h in bins[j] if h not in picks]
            if left:
                picks.append(rng.choice(left))
                break
    return [pool[h] for h in picks]


def rank_agreement(inherited: list[float], standalone: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """Kendall tau and Spearman rho of the two mAP lists, with a 95 % bootstrap interval for tau
    (archs resampled with replacement): at K of 10-20 the interval is the honest answer to
    whether the supernet's order can be trusted."""
    if len(inherited) != len(standalone) or len(inherited) < 3:
        raise ValueError(f"rank_agreement: expected two equally long lists of at least 3 mAPs, got {len(inherited)} and {len(standalone)}")
    x, y = np.asarray(inherited, float), np.asarray(standalone, float)
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(resamples):
        i = rng.integers(0, len(x), len(x))
        if len(set(i)) > 2:
            t = kendalltau(x[i], y[i]).statistic
            if np.isfinite(t):
                taus.append(t)
    lo, hi = np.percentile(taus, [2.5, 97.5])
    return {"kendall_tau": round(float(kendalltau(x, y).statistic), 4), "kendall_tau_ci95": [round(float(lo), 3), round(float(hi), 3)],
            "spearman": round(float(spearmanr(x, y).statistic), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", default="runs/demo/supernet/last.pt")
    p.add_argument("--lut", default="runs/demo/latency_cpu.json")
    p.add_argument("-k", type=int, default=10, help="archs to compare (>= 10 for a meaningful tau)")
    p.add_argument("--epochs", type=int, default=6, help="standalone training schedule (the demo's retraining)")
    p.add_argument("--steps", type=int, help="instead of --epochs")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--work", default="runs/ranking", help="retrained archs (kept: a rerun skips them)")
    p.add_argument("--out", default="benchmarks/results/ranking_cpu_tiny.json", help="JSON result; the plot goes next to it")
    args = p.parse_args()
    if args.k < 3:
        sys.exit("error: -k: expected at least 3")
    _, device = init_distributed(args.device)
    model, blob = load_supernet(args.supernet, device)
    table = LatencyTable.load(args.lut)
    space = model.space
    # a supernet trained on a sub-space (stage-matched, --train-blocks) is ranked on the archs it trained
    archs = spread_archs(space.restrict(blocks=blob["config"].get("train_blocks")), table, args.k, args.seed)
    config = TrainConfig(**{k: blob["config"].get(k) for k in ("space", "data", "train_ann", "train_images", "val_ann", "val_images")},
                         epochs=args.epochs, steps=args.steps, batch_size=args.batch_size, seed=args.seed, device=str(device),
                         eval_images=0, workers=2)
    train_set, val_set = build_datasets(config, max(space.resolutions))
    evaluator = SubnetEvaluator(model, train_set, val_set, device, args.calib_batches, len(val_set), args.batch_size, 2, args.seed)
    points = []
    for i, arch in enumerate(archs):
        print(f"[{i + 1}/{len(archs)}] {arch.hash()} predicted {table.predict(arch):.2f} ms", file=sys.stderr)
        inherited = evaluator(arch)["map"]
        standalone = retrain(arch, space, replace(config, out=str(Path(args.work) / arch.hash())),
                             lut=args.lut, resume=True, log=lambda m: print(m, file=sys.stderr))
        points.append({"hash": arch.hash(), "latency_pred_ms": round(table.predict(arch), 4), "inherited_map": round(inherited, 5),
                       "standalone_map": round(standalone["map"], 5), "arch": arch.to_dict()})
    inh, sa = [q["inherited_map"] for q in points], [q["standalone_map"] for q in points]
    result = {
        "benchmark": "ranking", "device": table.meta["environment"]["device_name"], "k": len(points), **rank_agreement(inh, sa, seed=args.seed),
        "schedule": {"epochs": args.epochs, "steps": args.steps, "batch_size": args.batch_size},
        "supernet": args.supernet, "val_images": len(val_set),
    }
    out = Path(args.out)
    atomic_json({**result, "points": points}, out.with_suffix(".points.json"))
    _plot(points, result, out.with_suffix(".png"))
    emit_result(result, out)


def _plot(points: list[dict], result: dict, path: Path) -> None:
    lo, hi = result["kendall_tau_ci95"]
    fig, ax = pyplot().subplots(figsize=(5.5, 4.5), dpi=120)
    sc = ax.scatter([q["inherited_map"] for q in points], [q["standalone_map"] for q in points],
                    c=[q["latency_pred_ms"] for q in points], cmap="viridis")
    fig.colorbar(sc, label="predicted latency (ms)")
    ax.set(xlabel="mAP, inherited weights (BN recalibrated)", ylabel="mAP, trained standalone",
           title=f"K={result['k']}: Kendall tau {result['kendall_tau']:.2f} (95 % CI {lo:.2f} to {hi:.2f}), Spearman {result['spearman']:.2f}")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    atomic_save_figure(fig, path)


if __name__ == "__main__":
    main()
