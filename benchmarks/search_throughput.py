"""Search throughput: evaluations per minute, and where one evaluation's time goes.

    python benchmarks/search_throughput.py --supernet runs/demo/supernet/last.pt --lut runs/demo/latency_cpu.json

Runs two real searches (`Search`) and splits each evaluation into BN recalibration, inference,
COCOeval and the rest (history bookkeeping, latency lookup, FLOPs and params counts):

- `cold`: one generation of `--cold` random subnets, the worst case: nearly every subnet brings
  ops whose FLOPs and params are not counted yet (each op is counted once, then cached).
- `search`: what `evolve.py` runs, both stages (structural, then modular) with evolve's population,
  top-k and mutation defaults, `--generations` per stage, under the budget halfway across the
  table's latency range (as the demo's).

Prints one JSON line. Target: everything beyond recalibration and inference <= 15 % of an
evaluation, in the `search` run.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from latency.cost import clear_cache
from latency.table import LatencyTable
from search.nas import Search, SearchConfig
from search.pipeline import halfway_budget
from supernet.cli import log_to_stderr
from supernet.io import emit_result


def timed_search(**overrides) -> tuple[dict, Search]:
    """Run one search in a temporary folder; its evaluation-time split."""
    with tempfile.TemporaryDirectory() as tmp:
        search = Search(SearchConfig(out=tmp, workers=0, **overrides))
        start = time.perf_counter()
        search.run()
        wall = time.perf_counter() - start
    evaluated = [r for r in search.history if not r.cached]
    per_eval = wall / len(evaluated)
    split = {k: statistics.mean(r.timings[k] for r in evaluated) for k in ("recalibration_s", "inference_s", "cocoeval_s")}
    overhead = per_eval - split["recalibration_s"] - split["inference_s"]
    return {
        "evaluations": len(evaluated), "evaluations_per_min": round(60 / per_eval, 2), "seconds_per_evaluation": round(per_eval, 4),
        **{k: round(v, 4) for k, v in split.items()},
        "overhead_s": round(overhead, 4), "overhead_fraction": round(overhead / per_eval, 4),
        "cocoeval_fraction": round(split["cocoeval_s"] / per_eval, 4),
    }, search


def main() -> None:
    log_to_stderr()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", default="runs/demo/supernet/last.pt")
    p.add_argument("--lut", default="runs/demo/latency_cpu.json")
    p.add_argument("--cold", type=int, default=40, help="random subnets of the cold run (0: skip it)")
    p.add_argument("--generations", type=int, default=5, help="per stage, in the search run")
    p.add_argument("--eval-images", type=int, default=100)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    common = dict(supernet=args.supernet, lut=args.lut, eval_images=args.eval_images, calib_batches=args.calib_batches, device=args.device)
    table = LatencyTable.load(args.lut)
    budget = halfway_budget(table)[0]
    defaults = SearchConfig()
    result: dict = {"benchmark": "search_throughput", "device": table.meta.device_name}
    if args.cold:
        cold, _ = timed_search(latency_budget=1e9, population=args.cold, generations=1, stage="structural", **common)
        result["cold"] = {"population": args.cold, **cold}
        clear_cache()  # the search run counts its FLOPs from cold too
    search, s = timed_search(latency_budget=budget, generations=args.generations, stage="both", **common)
    result.update({
        "space_resolutions": list(s.space.resolutions), "val_images": s.evaluator.val_images, "calib_batches": args.calib_batches,
        "search": {"latency_budget_ms": budget, "population": defaults.population, "generations_per_stage": args.generations,
                   "topk": defaults.topk, "mutation_prob": defaults.mutation_prob, **search},
    })
    emit_result(result, args.out)


if __name__ == "__main__":
    main()
