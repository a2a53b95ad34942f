"""How large a win over the random control would show in every seed? Reads finished
`search_vs_baselines.py` results (no training) and prints, per run and pooled, the searched
subnet's margin over the control seed by seed, its spread between seeds, and the true mean margin
a search would need for P(it wins every one of N seeds) = --power, the margins taken as normal
with the pooled spread.

    python benchmarks/search_vs_random.py                       # every committed full-size run
    python benchmarks/search_vs_random.py benchmarks/results/search_vs_baselines_cpu_tiny_e144.json

A seed is known by its picks' first trainings (the searched and the control's mAP): a run whose
seeds all lie in another run given, with more seeds or more trainings a model, is left out (the
per-resolution run's first three seeds are also the six-seed run's; a `--retrain-seeds 3` rerun
holds its first run), so no seed counts twice. Runs of one session often share supernets and
controls, so the pooled win count is not a count of independent trials; the pooled spread is what
the needed margin rests on.
"""
from __future__ import annotations

import argparse
import glob
import json
import statistics
from pathlib import Path

from supernet.io import emit_result

DEFAULT_GLOB = "benchmarks/results/search_vs_baselines_cpu_tiny*.json"


def seed_margins(result: dict) -> list[tuple[tuple[float, float], float]]:
    """One entry a seed: the first training's mAP of the searched subnet and of the control's pick
    (which identifies the seed's picks and that training across runs), and the margin by the
    mean of the seed's trainings."""
    out = []
    for s in result["per_seed"].values():
        a, b = (s["models"][n] for n in ("searched", "random"))
        out.append(((a.get("maps", [a["map"]])[0], b.get("maps", [b["map"]])[0]), round(a["map"] - b["map"], 5)))
    return out


def same_seed(x: tuple[float, float], y: tuple[float, float]) -> bool:
    return all(abs(p - q) < 1e-4 for p, q in zip(x, y))  # some runs wrote their mAPs rounded to 5 places


def distinct_runs(runs: dict[str, dict]) -> dict[str, list[float]]:
    """Each run's seed margins, less every run whose seeds all appear in another run with more
    seeds, or as many and more trainings a model (then the earlier name)."""
    seeds = {name: seed_margins(r) for name, r in runs.items()}
    rank = {name: (len(seeds[name]), runs[name].get("retrain_seeds", 1), -i) for i, name in enumerate(sorted(runs))}

    def within(small: str, large: str) -> bool:
        return all(any(same_seed(k, o) for o, _ in seeds[large]) for k, _ in seeds[small])

    return {name: [m for _, m in v] for name, v in seeds.items()
            if not any(other != name and rank[other] > rank[name] and within(name, other) for other in seeds)}


def margin_to_win_every_seed(seeds: int, sd: float, power: float) -> float:
    """The mean margin at which a normal margin of this SD is positive in all `seeds` seeds with probability `power`."""
    return statistics.NormalDist().inv_cdf(power ** (1 / seeds)) * sd


def analyse(runs: dict[str, dict], power: float = 0.8, seed_counts: tuple[int, ...] = (3, 6)) -> dict:
    kept = distinct_runs(runs)
    rows = {}
    for name, v in kept.items():
        rows[name] = {"seeds": len(v), "searched_beats_random": sum(x > 0 for x in v), "margins": v,
                      "mean_margin": round(statistics.mean(v), 4), "sd_over_seeds": round(statistics.stdev(v), 4) if len(v) > 1 else None}
    spread = [(r["seeds"] - 1, r["sd_over_seeds"] ** 2) for r in rows.values() if r["sd_over_seeds"] is not None]
    if not spread:
        raise ValueError("no run with two or more seeds: the spread between seeds is unknown")
    pooled_sd = (sum(d * v for d, v in spread) / sum(d for d, _ in spread)) ** 0.5
    return {
        "benchmark": "search_vs_random", "power": power, "runs": rows, "left_out": sorted(set(runs) - set(kept)),
        "seeds": sum(r["seeds"] for r in rows.values()),
        "searched_beats_random": sum(r["searched_beats_random"] for r in rows.values()),
        "best_mean_margin_of_a_run_with_6_or_more_seeds": max((r["mean_margin"] for r in rows.values() if r["seeds"] >= 6), default=None),
        "pooled_sd_over_seeds": round(pooled_sd, 4),
        "margin_to_win_every_seed": {str(n): round(margin_to_win_every_seed(n, pooled_sd, power), 4) for n in seed_counts},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="*", help=f"search_vs_baselines result JSONs (default: the full-size ones of {DEFAULT_GLOB})")
    p.add_argument("--power", type=float, default=0.8, help="probability of winning every seed to size the margin for")
    p.add_argument("--out", default="benchmarks/results/search_vs_random_cpu_tiny.json")
    args = p.parse_args()
    if not 0 < args.power < 1:
        p.error(f"--power: expected a probability in (0, 1), got {args.power}")
    runs = {}
    for f in args.results or sorted(glob.glob(DEFAULT_GLOB)):
        try:
            r = json.loads(Path(f).read_text())
            if r.get("benchmark") != "search_vs_baselines":
                raise ValueError("its 'benchmark' is not search_vs_baselines")
            seed_margins(r)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            p.error(f"{f}: not a search_vs_baselines result ({type(e).__name__}: {e})")
        if args.results or not r.get("quick"):
            runs[Path(f).name] = r
    try:
        result = analyse(runs, args.power)
    except ValueError as e:
        p.error(str(e))
    emit_result(result, args.out)


if __name__ == "__main__":
    main()
