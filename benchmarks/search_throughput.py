"""Search throughput: evaluations per minute, and where one evaluation's time goes.

    python benchmarks/search_throughput.py --supernet runs/supernet/last.pt --lut luts/cpu_tiny.json

Runs a short real search (`Search`, one structural generation) and splits each evaluation into BN
recalibration, inference, COCOeval and the rest (history bookkeeping, latency lookup, FLOPs and
params counts). Prints one JSON line. Target: everything beyond recalibration and inference
<= 15 % of an evaluation.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from search.nas import Search, SearchConfig
from supernet.io import emit_result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", default="runs/supernet/last.pt")
    p.add_argument("--lut", required=True)
    p.add_argument("--evaluations", type=int, default=12)
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SearchConfig(supernet=args.supernet, lut=args.lut, latency_budget=1e9, population=args.evaluations, generations=1,
                           stage="structural", val_images=args.val_images, calib_batches=args.calib_batches, device=args.device,
                           out=tmp, workers=0)
        search = Search(cfg, log=lambda m: print(m, file=sys.stderr))
        start = time.perf_counter()
        search.run()
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (Path(tmp) / "history.jsonl").read_text().splitlines()]
    per_eval = wall / len(records)
    split = {k: statistics.mean(r[k] for r in records) for k in ("recalibration_s", "inference_s", "cocoeval_s")}
    overhead = per_eval - split["recalibration_s"] - split["inference_s"]
    result = {
        "benchmark": "search_throughput", "device": search.table.meta["environment"]["device_name"], "space_resolutions": list(search.space.resolutions),
        "evaluations": len(records), "val_images": search.evaluator.val_images, "calib_batches": args.calib_batches,
        "evaluations_per_min": round(60 / per_eval, 2), "seconds_per_evaluation": round(per_eval, 4),
        **{k: round(v, 4) for k, v in split.items()},
        "overhead_s": round(overhead, 4), "overhead_fraction": round(overhead / per_eval, 4),
        "cocoeval_fraction": round(split["cocoeval_s"] / per_eval, 4),
    }
    emit_result(result, args.out)


if __name__ == "__main__":
    main()
