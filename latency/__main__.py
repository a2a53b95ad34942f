"""Build and validate latency lookup tables on this machine.

    python -m latency build --space coco --device cuda:0 --dtype fp16 --batch-size 1 --out luts/h100_fp16_bs1.json
    python -m latency validate --lut luts/h100_fp16_bs1.json --samples 50
    python -m latency build --space tiny --device cpu --threads 2 --num-classes 3 --out luts/cpu.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from supernet.cli import CommandParser, error_message, log_to_stderr
from supernet.io import atomic_json, check_writable
from supernet.space import SearchSpace

from .backends import BACKENDS
from .measure import EXTRA_PASSES, STATISTICS, Settings
from .table import LatencyTable, build_table
from .validate import validate_table


def _settings_args(p: argparse.ArgumentParser) -> None:
    d = Settings()
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed runs before timing each entry")
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed runs per entry and pass (their --statistic is kept)")
    p.add_argument("--passes", type=int, default=2, help="passes over all entries in shuffled order; the lowest pass is kept")
    p.add_argument("--extra-passes", type=int, default=EXTRA_PASSES,
                   help="at most this many more passes for entries whose two lowest passes differ by over 10 %%")


def parse(argv: list[str] | None, prog: str = "python -m latency") -> argparse.Namespace:
    p = CommandParser(prog=prog, description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="measure every op of a space and write a table")
    b.add_argument("--space", default="tiny", help="tiny, coco, or a .yaml/.json space file")
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    b.add_argument("--dtype", default="fp32", help="fp32, fp16 (CUDA) or bf16")
    b.add_argument("--batch-size", type=int, default=1)
    b.add_argument("--channels-last", action="store_true")
    b.add_argument("--backend", default=Settings.backend, choices=BACKENDS,
                   help="the runtime to time in: eager PyTorch, onnxruntime (CPU provider; pip install 'smnas[export]') or "
                        "compile (torch.compile); a table is only used with its own backend")
    b.add_argument("--statistic", default=Settings.statistic, choices=sorted(STATISTICS),
                   help="what a measurement keeps of its repeats (validation uses the table's)")
    b.add_argument("--threads", type=int, help="CPU threads (default: torch's current setting, recorded)")
    b.add_argument("--num-classes", type=int, default=80, help="classes of the detectors the table is for (head and NMS cost)")
    b.add_argument("--calib", type=int, default=20, help="random subnets timed end to end to fit the correction (0: none)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", required=True, help="table JSON to write (resumes from OUT.partial if interrupted)")
    b.add_argument("--overwrite", action="store_true", help="rebuild over an existing table at --out")
    _settings_args(b)
    v = sub.add_parser("validate", help="compare a table's predictions with measured end-to-end latency")
    v.add_argument("--lut", required=True, help="table JSON written by build")
    v.add_argument("--samples", type=int, default=50, help="random subnets to time end to end")
    v.add_argument("--force", action="store_true", help="validate even on another device or settings than the table's")
    v.add_argument("--device", help="run on this device instead of the table's (needs --force if it differs)")
    v.add_argument("--seed", type=int, help="arch sampling seed (default: the build seed + 1000)")
    _settings_args(v)
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str = "python -m latency") -> int:
    args = parse(argv, prog)
    log_to_stderr()
    try:
        for flag, value, least in (("--passes", args.passes, 1), ("--extra-passes", args.extra_passes, 0)):
            if value < least:
                raise ValueError(f"{flag}: expected {'a positive integer' if least else '0 or more'}, got {value}")
        if args.command == "build":
            return _build(args)
        return _validate(args)
    except (ValueError, OSError) as e:
        print(error_message(e), file=sys.stderr)
        return 2


def _build(args: argparse.Namespace) -> int:
    space = SearchSpace.resolve(args.space)
    settings = Settings(args.device, args.dtype, args.batch_size, args.channels_last, args.threads, args.warmup, args.repeats,
                        args.statistic, args.backend)
    if args.num_classes < 1:
        raise ValueError(f"--num-classes: expected a positive integer, got {args.num_classes}")
    if args.calib < 0:
        raise ValueError(f"--calib: expected 0 or more, got {args.calib}")
    out = Path(args.out)
    if out.is_file() and not args.overwrite:
        raise ValueError(f"--out {out}: a table is there already; pass --overwrite to rebuild it, or choose another --out")
    check_writable(out, "--out")  # before the measuring, not after it
    start = time.perf_counter()
    table = build_table(space, settings, args.out, args.num_classes, args.passes, args.calib, args.seed,
                        extra_passes=args.extra_passes)
    corr = table.correction
    summary = {
        "out": str(args.out), "entries": len(table.entries), "seconds": round(time.perf_counter() - start, 1),
        "device": table.meta.device_name, "noise_spread": table.meta.noise["spread"], "pass_summary": table.meta.pass_summary,
        "correction": corr and corr.summary(),
    }
    print(f"{summary['entries']} entries measured in {summary['seconds']} s on {summary['device']}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


def _validate(args: argparse.Namespace) -> int:
    table = LatencyTable.load(args.lut)
    base = table.settings
    settings = dataclasses.replace(base, device=args.device or base.device, warmup=args.warmup, repeats=args.repeats)
    table.check(settings, args.force)
    if args.samples < 2:
        raise ValueError(f"--samples: expected at least 2, got {args.samples}")
    stem = Path(args.lut).with_suffix("")
    result = validate_table(table, args.samples, args.passes, args.seed, settings, plot=f"{stem}.validation.png",
                            extra_passes=args.extra_passes)
    atomic_json(result, f"{stem}.validation.json")
    drift = result["reference_time_vs_build"]
    if drift and max(abs(r - 1) for r in drift.values()) > 0.1:
        print(f"warning: the build's reference detector now takes {drift['before']:.2f}x / {drift['after']:.2f}x "
              f"(before / after measuring) its time at build: the machine's speed changed, and the errors show it", file=sys.stderr)
    print(json.dumps({k: result[k] for k in ("n", "mape", "max_ape", "kendall_tau", "spearman", "device")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
