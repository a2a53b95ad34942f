"""Latency table accuracy: build a table for a space on this machine, then validate it.

    python benchmarks/latency_table.py --space tiny --device cpu --threads 2 --samples 30
    python benchmarks/latency_table.py --space coco --device cuda:0 --dtype fp16 --batch-size 8 --samples 50
    python benchmarks/latency_table.py --space tiny --device cpu --threads 2 --backend onnxruntime

Builds the table (`latency.build_table`: every op, and among them `--calib` subnets end to end
for the correction) into `--lut-dir`, and times `--samples` other random subnets end to end against its
predictions (`latency.validate_table`). Prints one JSON line: the build (entries, seconds, the
correction fitted and kept) and the validation (MAPE and max error in percent, Kendall tau,
Spearman), with the error of each correction model on the validation archs, so a reader sees
what the per-op term bought; with another `--backend` than eager, the validation subnets timed in
eager too (`versus_eager`: Kendall tau between the runtimes, speed-up, same fastest subnet). Targets: CPU MAPE <= 10 %, max <= 30 %, tau >= 0.85; GPU (coco, fp16,
batch 1 and 8) MAPE <= 5 %, tau >= 0.9; a coco build on a GPU <= 10 min. `--out` also writes the
JSON, points included (the scatter plot lands next to the table).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from latency.measure import EXTRA_PASSES, Settings, measure_many
from latency.ops import arch_ops, detector_runner
from latency.table import Correction, LatencyTable, build_table
from latency.validate import error_stats, validate_table
from supernet.cli import log_to_stderr
from supernet.io import atomic_json, emit_result
from supernet.space import Arch, SearchSpace


def correction_models(table: LatencyTable, points: list[dict]) -> dict:
    """Validation MAPE of each correction model fitted on the table's calibration archs: what
    the kept one is chosen among, judged on archs none was fitted on."""
    calib = table.meta.calibration
    cal_archs = [Arch.from_dict(c["arch"]) for c in calib]
    cal_raw, cal_ms = [table.raw(a) for a in cal_archs], [c["measured_ms"] for c in calib]
    archs, measured = [Arch.from_dict(p["arch"]) for p in points], [p["measured_ms"] for p in points]
    fitted = Correction.models(cal_raw, cal_ms, [len(arch_ops(a)) for a in cal_archs])
    plain_sum = Correction(1.0, 0.0, float("nan"), next(iter(fitted.values())).loo_mape_raw if fitted else float("nan"), False)
    out = {}
    for name, corr in {"none": plain_sum, **fitted}.items():
        if name != "none":
            corr = dataclasses.replace(corr, kept=True)  # judged on the validation archs whether or not the build kept it
        predicted = [corr(table.raw(a), len(arch_ops(a))) for a in archs]
        out[name] = {"validation_mape": error_stats(predicted, measured)["mape"], "per_op_ms": round(corr.per_op, 5),
                     "calibration_loo_mape": round(corr.loo_mape, 2)}
    return out


def main(argv: list[str] | None = None) -> None:
    log_to_stderr()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="tiny", help="tiny, coco, or a .yaml/.json space file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, help="CPU threads (recorded)")
    p.add_argument("--num-classes", type=int, default=80)
    p.add_argument("--calib", type=int, default=20)
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--extra-passes", type=int, default=EXTRA_PASSES, help="more passes for entries whose passes disagree")
    p.add_argument("--warmup", type=int, default=Settings.warmup)
    p.add_argument("--repeats", type=int, default=Settings.repeats)
    p.add_argument("--statistic", default=Settings.statistic, help="of a measurement's repeats: p10, median or min")
    p.add_argument("--backend", default=Settings.backend, help="eager, onnxruntime or compile (latency.backends)")
    p.add_argument("--lut-dir", default="luts", help="where the table (and its .partial while building) is written")
    p.add_argument("--out", help="also write the JSON (with the validation points) here")
    args = p.parse_args(argv)
    try:
        space = SearchSpace.resolve(args.space)
        settings = Settings(args.device, args.dtype, args.batch_size, args.channels_last, args.threads, args.warmup, args.repeats,
                            args.statistic, args.backend)
    except ValueError as e:
        sys.exit(f"error: {e}")
    name = Path(args.space).stem if args.space not in ("tiny", "coco") else args.space
    tag = f"{settings.device.split(':')[0]}_{name}_{settings.dtype}_bs{settings.batch_size}" + ("_cl" if settings.channels_last else "") + \
        ("" if settings.backend == "eager" else f"_{settings.backend}")
    lut = Path(args.lut_dir) / f"{tag}.json"
    start = time.perf_counter()
    table = build_table(space, settings, lut, args.num_classes, args.passes, args.calib, extra_passes=args.extra_passes)
    seconds = time.perf_counter() - start
    validation = validate_table(table, args.samples, args.passes, plot=lut.with_suffix(".validation.png"),
                                extra_passes=args.extra_passes)
    points = validation.pop("points")
    corr = table.correction
    result = {
        "benchmark": "latency_table", "space": name, "lut": str(lut),
        "build": {"entries": len(table.entries), "seconds": round(seconds, 1), "device": table.meta.device_name,
                  "environment": table.meta.environment, "noise_spread": table.meta.noise["spread"],
                  "pass_summary": table.meta.pass_summary, "passes": args.passes, "extra_passes": args.extra_passes,
                  "calib": args.calib, "num_classes": args.num_classes, "correction": corr and corr.summary()},
        "validation": validation,
        "correction_models": correction_models(table, points) if corr else None,
        "versus_eager": versus_eager(table, points, args.passes) if settings.backend != "eager" else None,
    }
    emit_result(result)
    if args.out:
        atomic_json({**result, "points": points}, args.out)


def versus_eager(table: LatencyTable, points: list[dict], passes: int) -> dict:
    """The validation subnets timed end to end in eager PyTorch too (same settings, interleaved
    passes): how much the runtime changes which subnet is fast (Kendall tau between the two
    runtimes' measured latencies) and by how much it speeds each up."""
    eager = dataclasses.replace(table.settings, backend="eager")
    archs = [Arch.from_dict(p["arch"]) for p in points]
    factories = {a.hash(): (lambda a=a: detector_runner(a, table.context, eager)) for a in archs}
    times = measure_many(factories, eager, passes)
    runtime, base = [p["measured_ms"] for p in points], [times[a.hash()] for a in archs]
    ratios = sorted(r / b for r, b in zip(runtime, base))
    return {"kendall_tau": round(float(kendalltau(runtime, base).statistic), 4), "eager_ms": [round(b, 4) for b in base],
            "speedup_median": round(1 / ratios[len(ratios) // 2], 3), "speedup_range": [round(1 / ratios[-1], 3), round(1 / ratios[0], 3)],
            "same_fastest": int(np.argmin(runtime)) == int(np.argmin(base))}


if __name__ == "__main__":
    main()
