"""Loader throughput by image decoder: TorchCodec against Pillow, real COCO JPEGs at 640 px.

    python benchmarks/decode_throughput.py                      # coco128, 2 workers, 5 rounds: ~2 min
    python benchmarks/decode_throughput.py --images ROOT/val2017 --ann ROOT/annotations/instances_val2017.json

Each round runs one epoch of a `CocoDetection` loader (batch 16, `--workers` workers) per decoder,
in alternating order, so a host whose speed drifts slows both alike; reported are each decoder's
images/s per round, their medians and the median of the per-round ratios. The loader does all
`__getitem__` does (read, decode, resize to `--max-size`, targets), nothing else.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from supernet.data import CocoDetection, build_loader
from supernet.data.coco import default_decoder
from supernet.io import emit_result

COCO128 = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128"


def epoch_rate(dataset: CocoDetection, workers: int, batch_size: int) -> float:
    """Images/s over one epoch of a fresh loader (its workers' start-up included, as each epoch of a run pays it once)."""
    loader = build_loader(dataset, batch_size, shuffle=False, workers=workers, seed=0)
    start, seen = time.perf_counter(), 0
    for images, _ in loader:
        seen += len(images)
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", default=str(COCO128 / "images"))
    p.add_argument("--ann", default=str(COCO128 / "instances.json"))
    p.add_argument("--max-size", type=int, default=640)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/decode_throughput_cpu.json")
    args = p.parse_args()
    if default_decoder() != "torchcodec":
        sys.exit("decode_throughput: torchcodec is not installed (pip install 'smnas[decode]')")
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the annotations' dropped boxes are not what is measured
        datasets = {d: CocoDetection(args.images, args.ann, args.max_size, decoder=d) for d in ("torchcodec", "pil")}
    epoch_rate(datasets["pil"], args.workers, args.batch_size)  # warm-up: the files into the page cache
    rates: dict[str, list[float]] = {d: [] for d in datasets}
    for r in range(args.rounds):
        for d in (("torchcodec", "pil") if r % 2 == 0 else ("pil", "torchcodec")):
            rates[d].append(epoch_rate(datasets[d], args.workers, args.batch_size))
    ratios = [a / b for a, b in zip(rates["torchcodec"], rates["pil"])]
    emit_result({
        "benchmark": "decode_throughput", "images": len(datasets["pil"]), "max_size": args.max_size, "workers": args.workers,
        "batch_size": args.batch_size, "rounds": args.rounds,
        "images_per_s": {d: [round(x, 1) for x in v] for d, v in rates.items()},
        "median_images_per_s": {d: round(statistics.median(v), 1) for d, v in rates.items()},
        "median_ratio_torchcodec_over_pil": round(statistics.median(ratios), 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
    }, args.out)


if __name__ == "__main__":
    main()
