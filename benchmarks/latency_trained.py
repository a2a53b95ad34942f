"""Does the latency table predict trained detectors on real images, or only the untrained ones it times?

    python benchmarks/latency_trained.py --supernet runs/demo/supernet/last.pt --lut luts/cpu.json \
        --archs 16 --out benchmarks/results/latency_trained_cpu_tiny.json

A table is built and validated on untrained detectors fed the mean colour (every feature zero,
every score tied: `latency.ops.detector_runner`). What a user deploys is a trained detector on
images, whose post-processing (NMS above all) filters the candidates it finds there. For random
subnets of the supernet's space, with the supernet's weights (trained, as a search scores them),
this times side by side, interleaved, in the table's runtime and settings: the untrained detector
as the table times it; the trained one on a random batch (what `retrain.py` timed before); and the
trained one on each of several batches of validation images (what `retrain.py` times now, their
mean). Prints one JSON line: per ratio, the median and range over subnets, and the table's error
(MAPE, max, Kendall tau) against both the untrained and the trained detectors on images.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys

import numpy as np
import torch
from scipy.stats import kendalltau

from latency.measure import measure_many
from latency.ops import detector_runner, iter_archs
from latency.table import LatencyTable
from search.retrain import TIMING_IMAGES, image_batches, timing_images
from supernet.checkpoint import load_supernet, trained_space
from supernet.cli import log_to_stderr
from supernet.data import build_datasets
from supernet.io import atomic_json, emit_result
from supernet.train_config import recorded_config


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def errors(pred: list[float], measured: list[float]) -> dict:
    """The table's own validation figures, against `measured`."""
    p, m = np.array(pred), np.array(measured)
    rel = np.abs(p - m) / m
    return {"mape_pct": round(100 * float(rel.mean()), 1), "max_pct": round(100 * float(rel.max()), 1),
            "kendall_tau": round(float(kendalltau(p, m)[0]), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", required=True, help="supernet checkpoint: its space, weights and data")
    p.add_argument("--lut", required=True, help="latency table: its runtime, settings and predictions")
    p.add_argument("--archs", type=int, default=16, help="random subnets of the supernet's space")
    p.add_argument("--batches", type=int, default=4, help="batches of validation images per trained detector")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args(argv)
    log_to_stderr()
    log = logging.getLogger("latency_trained")
    table = LatencyTable.load(args.lut)
    settings, ctx = table.settings, table.context
    model, blob = load_supernet(args.supernet)
    space = trained_space(model, blob)
    if model.num_classes != ctx.num_classes:
        raise SystemExit(f"--lut {args.lut}: built for {ctx.num_classes} classes; --supernet predicts {model.num_classes}")
    archs = list(iter_archs(space, args.archs, args.seed))
    _, val_set = build_datasets(recorded_config(blob["config"]), max(a.resolution for a in archs))
    batches = image_batches(timing_images(val_set), settings.batch_size, args.batches)
    factories = {}
    for i, arch in enumerate(archs):
        state = model.extract(arch).state_dict()
        factories[(i, "untrained")] = lambda a=arch: detector_runner(a, ctx, settings)
        factories[(i, "random")] = lambda a=arch, s=state: detector_runner(a, ctx, settings, s)
        for k, batch in enumerate(batches):
            factories[(i, k)] = lambda a=arch, s=state, b=batch: detector_runner(a, ctx, settings, s, images=b)
    log.info(f"{len(factories)} detectors x {args.passes} passes, {settings.backend}")
    times = measure_many(factories, settings, args.passes)
    points = []
    for i, arch in enumerate(archs):
        on_images = [times[(i, k)] for k in range(len(batches))]
        points.append({"hash": arch.hash(), "resolution": arch.resolution, "head": arch.head.type, "arch": arch.to_dict(),
                       "pred_ms": round(table.predict(arch), 4), "untrained_ms": round(times[(i, "untrained")], 4),
                       "trained_random_ms": round(times[(i, "random")], 4), "trained_images_ms": [round(t, 4) for t in on_images]})
    mean_images = [statistics.mean(pt["trained_images_ms"]) for pt in points]
    untrained = [pt["untrained_ms"] for pt in points]
    pred = [pt["pred_ms"] for pt in points]
    summary = {
        "trained_images_over_untrained": spread([t / u for t, u in zip(mean_images, untrained)]),
        "trained_random_over_untrained": spread([pt["trained_random_ms"] / u for pt, u in zip(points, untrained)]),
        "batch_over_mean_of_batches": spread([t / statistics.mean(pt["trained_images_ms"]) for pt in points for t in pt["trained_images_ms"]]),
        "table_vs_untrained": errors(pred, untrained),
        "table_vs_trained_on_images": errors(pred, mean_images),
    }
    result = {"benchmark": "latency_trained", "backend": settings.backend, "device": table.meta.device_name, "lut": args.lut,
              "supernet": args.supernet, "archs": len(points), "batches": len(batches), "images": TIMING_IMAGES,
              "batch_size": settings.batch_size, "passes": args.passes, "summary": summary, "points": points}
    if args.out:
        atomic_json(result, args.out)
    emit_result({k: v for k, v in result.items() if k != "points"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
