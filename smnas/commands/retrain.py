"""Retrain searched or hand-designed architectures from scratch as standalone detectors.

    smnas retrain --arch runs/search/finalists.json                 # the best finalist, in runs/retrain
    smnas retrain --arch runs/search/finalists.json --all --out runs/retrain   # each in runs/retrain/<hash>/
    smnas retrain --arch baseline:mobilenetv2_fpn_fcos --export
    smnas retrain --arch arch.json --init inherited --supernet runs/supernet/last.pt
    torchrun --nproc_per_node 8 -m smnas retrain --arch ... --data /coco --space coco --epochs 24

Writes model.pt (weights, arch, class names), arch.json, config.yaml and metrics.json (COCO mAP on
the whole validation set, latency measured here with the latency table's settings and predicted
by it, FLOPs, params, training time, classes); --export adds model.torchscript.pt and model.onnx.
--resume continues.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Optional

from latency.table import LatencyTable
from search.retrain import RetrainJob, finished_metrics, load_archs, retrain
from supernet.checkpoint import load_supernet
from supernet.cli import CommandParser, log_to_stderr, add_config_arguments, add_config_file_argument, parse_with_config, write_config
from supernet.errors import TrainError
from supernet.export import missing_packages
from supernet.space import SearchSpace
from supernet.train_config import TrainConfig, train_config

from . import run_reporting

DATA_FIELDS = ("data", "train_ann", "train_images", "val_ann", "val_images")
DEFAULTS = {"out": "runs/retrain", "space": None, "eval_images": 0}  # space none: the supernet's, else tiny


def parse(argv: Optional[list[str]], prog: Optional[str] = None) -> tuple[RetrainJob, dict, bool]:
    """(job, the TrainConfig's fields as parsed, --resume)."""
    p = CommandParser(prog=prog, description=__doc__)
    add_config_file_argument(p)
    add_config_arguments(p, RetrainJob)
    add_config_arguments(p, TrainConfig, defaults=DEFAULTS)
    p.add_argument("--resume", action="store_true", help="continue the retraining in --out")
    args = vars(parse_with_config(p, argv))
    resume = args.pop("resume")
    args.pop("config")
    job = RetrainJob(**{f.name: args.pop(f.name) for f in fields(RetrainJob)})
    if job.arch is None:
        p.error("--arch: required (an Arch JSON, finalists.json, or baseline:NAME)")
    if job.all and job.index is not None:
        p.error("--index and --all: pick one (one record of the list, or every record)")
    return job, args, resume


def retrain_all(job: RetrainJob, args: dict, resume: bool) -> list[dict]:
    """Every arch `job` names, retrained with the settings `args` (checked before any training)."""
    if job.supernet:
        model, blob = load_supernet(job.supernet)
        if not any(args[k] for k in DATA_FIELDS):  # the data the supernet was trained on
            args.update({k: blob["config"].get(k) for k in DATA_FIELDS})
    if args["space"] is None and job.supernet:  # the space the supernet was trained on
        space = model.space
        args["space"] = f"supernet:{job.supernet}"  # recorded in the run's config
    else:
        args["space"] = args["space"] or "tiny"
        space = SearchSpace.resolve(args["space"])
    archs = load_archs(job.arch, space, job.index, job.all)
    config = train_config(args)
    # what would otherwise fail only after (or inside) the first retraining
    if job.init == "inherited" and not job.supernet:
        raise TrainError("--init inherited: needs --supernet (the checkpoint the arch inherits its weights from)")
    if job.export and (missing := missing_packages()):
        raise TrainError(f"--export: needs {' and '.join(missing)}, not installed (pip install 'smnas[export]'); nothing was trained")
    if job.lut:
        try:
            LatencyTable.load(job.lut)
        except ValueError as e:
            raise TrainError(f"--lut: {e}") from None
    try:
        Path(config.out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainError(f"--out {config.out}: {e.strerror}") from None
    write_config({**asdict(job), **asdict(config)}, Path(config.out) / "config.yaml")
    outs = [Path(config.out) / arch.hash() if job.all else Path(config.out) for _, arch in archs]
    for (_, arch), out in zip(archs, outs):
        if resume and (out / "metrics.json").is_file():
            finished_metrics(out / "metrics.json", arch)
    results = []
    for (name, arch), out in zip(archs, outs):
        print(f"retraining {name} ({arch.hash()}, {job.init}) in {out}", file=sys.stderr)
        metrics = retrain(arch, space, replace(config, out=str(out)), job.init, job.supernet, job.lut, job.export, resume)
        results.append({"name": name, "out": str(out), **metrics})
    return results


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    log_to_stderr()
    job, args, resume = parse(argv, prog)
    status, results = run_reporting(lambda: retrain_all(job, args, resume))
    if status:
        return status
    for r in results:
        if "map" in r:
            print(f"{r['name']}: mAP {r['map']:.4f}, latency {r['latency_ms']:.3f} ms measured"
                  + (f" / {r['latency_pred_ms']:.3f} predicted" if r.get("latency_pred_ms") is not None else "")
                  + f", {r['flops'] / 1e9:.3f} GFLOPs, {r['params'] / 1e6:.3f} M params -> {r['out']}", file=sys.stderr)
    print(json.dumps(results if job.all else results[0]))
    return 0
