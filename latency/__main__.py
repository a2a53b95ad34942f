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
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

from supernet.cli import CommandParser, add_config_arguments, check_number, error_message, log_to_stderr, option
from supernet.io import atomic_json, check_writable
from supernet.space import SearchSpace

from .measure import EXTRA_PASSES, Settings
from .table import LatencyTable, build_table
from .validate import validate_table


@dataclass
class Passes:
    """How often every entry is timed: shared by build and validate."""
    passes: int = option(2, "passes over all entries in shuffled order; the lowest pass is kept")
    extra_passes: int = option(EXTRA_PASSES, "at most this many more passes for entries whose two lowest passes differ by over 10 %")

    def __post_init__(self) -> None:
        check_number(ValueError, "passes", self.passes, 1, integer=True)
        check_number(ValueError, "extra_passes", self.extra_passes, 0, integer=True)


@dataclass
class BuildJob(Passes):
    """What `latency build` measures, besides the timing `Settings`."""
    space: str = option("tiny", "tiny, coco, or a .yaml/.json space file")
    num_classes: int = option(80, "classes of the detectors the table is for (head and NMS cost)")
    calib: int = option(20, "random subnets timed end to end to fit the correction (0: none)")
    seed: int = option(0, "seed of the calibration subnets and of the noise check's reference arch")
    out: Optional[str] = option(None, "table JSON to write (resumes from OUT.partial if interrupted); required")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(ValueError, "num_classes", self.num_classes, 1, integer=True)
        check_number(ValueError, "calib", self.calib, 0, integer=True)


@dataclass
class ValidateJob(Passes):
    """What `latency validate` compares; warm-up and repeats as in `Settings`, the rest the table's."""
    lut: Optional[str] = option(None, "table JSON written by build; required")
    samples: int = option(50, "random subnets to time end to end")
    device: Optional[str] = option(None, "run on this device instead of the table's (needs --force if it differs)")
    seed: Optional[int] = option(None, "arch sampling seed (none: the build seed + 1000)")
    force: bool = option(False, "validate even on another device or settings than the table's")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(ValueError, "samples", self.samples, 2, integer=True)


TIMING_REPEATS = ("warmup", "repeats")  # the Settings fields validate takes; the rest are the table's


def parse(argv: list[str] | None, prog: str = "python -m latency") -> argparse.Namespace:
    p = CommandParser(prog=prog, description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="measure every op of a space and write a table", description=__doc__)
    add_config_arguments(b, BuildJob)
    add_config_arguments(b, Settings)
    b.add_argument("--overwrite", action="store_true", help="rebuild over an existing table at --out")
    v = sub.add_parser("validate", help="compare a table's predictions with measured end-to-end latency", description=__doc__)
    add_config_arguments(v, ValidateJob)
    add_config_arguments(v, Settings, skip=[f.name for f in fields(Settings) if f.name not in TIMING_REPEATS])
    args = p.parse_args(argv)
    needed = "out" if args.command == "build" else "lut"
    if getattr(args, needed) is None:
        (b if args.command == "build" else v).error(f"--{needed}: required")
    return args


def _pick(cls: type, args: argparse.Namespace):
    """The dataclass `cls` from the parsed flags of its fields."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def main(argv: list[str] | None = None, prog: str = "python -m latency") -> int:
    args = parse(argv, prog)
    log_to_stderr()
    try:
        if args.command == "build":
            return _build(_pick(BuildJob, args), _pick(Settings, args), args.overwrite)
        return _validate(_pick(ValidateJob, args), args.warmup, args.repeats)
    except (ValueError, OSError) as e:
        print(error_message(e), file=sys.stderr)
        return 2


def _build(job: BuildJob, settings: Settings, overwrite: bool) -> int:
    space = SearchSpace.resolve(job.space)
    out = Path(job.out)
    if out.is_file() and not overwrite:
        raise ValueError(f"`out` {out}: a table is there already; pass `overwrite` to rebuild it, or choose another `out`")
    check_writable(out, "`out`")  # before the measuring, not after it
    start = time.perf_counter()
    table = build_table(space, settings, out, job.num_classes, job.passes, job.calib, job.seed, extra_passes=job.extra_passes)
    corr = table.correction
    summary = {
        "out": str(out), "entries": len(table.entries), "seconds": round(time.perf_counter() - start, 1),
        "device": table.meta.device_name, "noise_spread": table.meta.noise["spread"], "pass_summary": table.meta.pass_summary,
        "correction": corr and corr.summary(),
    }
    print(f"{summary['entries']} entries measured in {summary['seconds']} s on {summary['device']}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


def _validate(job: ValidateJob, warmup: int, repeats: int) -> int:
    table = LatencyTable.load(job.lut)
    base = table.settings
    settings = dataclasses.replace(base, device=job.device or base.device, warmup=warmup, repeats=repeats)
    table.check(settings, job.force)
    stem = Path(job.lut).with_suffix("")
    result = validate_table(table, job.samples, job.passes, job.seed, settings, plot=f"{stem}.validation.png",
                            extra_passes=job.extra_passes)
    atomic_json(result, f"{stem}.validation.json")
    drift = result["reference_time_vs_build"]
    if drift and max(abs(r - 1) for r in drift.values()) > 0.1:
        print(f"warning: the build's reference detector now takes {drift['before']:.2f}x / {drift['after']:.2f}x "
              f"(before / after measuring) its time at build: the machine's speed changed, and the errors show it", file=sys.stderr)
    print(json.dumps({k: result[k] for k in ("n", "mape", "max_ape", "kendall_tau", "spearman", "device")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
