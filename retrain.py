"""Retrain searched or hand-designed architectures from scratch as standalone detectors.

    python retrain.py --arch runs/search/finalists.json                 # the best finalist, in runs/retrain
    python retrain.py --arch runs/search/finalists.json --all --out runs/retrain   # each in runs/retrain/<hash>/
    python retrain.py --arch baseline:mobilenetv2_fpn_fcos --export
    python retrain.py --arch arch.json --init inherited --supernet runs/supernet/last.pt
    torchrun --nproc_per_node 8 retrain.py --arch ... --data /coco --space coco --epochs 24

Writes model.pt (weights + arch), arch.json and metrics.json (COCO mAP on the whole validation
set, latency measured here with the latency table's settings and predicted by it, FLOPs, params,
training time); --export adds model.torchscript.pt and model.onnx. --resume continues.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from search.retrain import INITS, finished_metrics, load_archs, retrain
from supernet.baselines import RECIPES
from latency.table import LatencyTable
from supernet.checkpoint import load_supernet
from supernet.cli import CommandParser, add_train_arguments
from supernet.errors import Interrupted, TrainError
from supernet.export import missing_packages
from supernet.io import error_line
from supernet.space import SearchSpace
from supernet.train_config import train_config

DATA_FLAGS = ("data", "train_ann", "train_images", "val_ann", "val_images")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = CommandParser(description=__doc__)
    p.add_argument("--arch", required=True,
                   help=f"an Arch JSON, finalists.json / pareto.json (with --index or --all), or baseline:NAME ({', '.join(RECIPES)})")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, help="which record of a list file (default 0, the best finalist)")
    which.add_argument("--all", action="store_true", help="every record of a list file, each in OUT/<arch hash>/")
    p.add_argument("--init", choices=INITS, default="scratch", help="inherited: start from the supernet's weights")
    p.add_argument("--supernet", help="supernet checkpoint (needed by --init inherited; also gives the default --space)")
    p.add_argument("--lut", help="latency table whose settings time the model (default: one in luts/ for this device and space)")
    p.add_argument("--export", action="store_true", help="also write model.torchscript.pt and model.onnx")
    add_train_arguments(p)
    p.set_defaults(out="runs/retrain", space=None)
    p.add_argument("--eval-images", type=int, default=0, help="validation images for the final mAP (0: all)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        if args.supernet:
            model, blob = load_supernet(args.supernet)
            if not any(getattr(args, k) for k in DATA_FLAGS):  # the data the supernet was trained on
                for k in DATA_FLAGS:
                    setattr(args, k, blob["config"].get(k))
        if args.space is None and args.supernet:  # the space the supernet was trained on
            space = model.space
            args.space = f"supernet:{args.supernet}"  # recorded in the run's config
        else:
            args.space = args.space or "tiny"
            space = SearchSpace.resolve(args.space)
        archs = load_archs(args.arch, space, args.index, args.all)
        config = train_config(vars(args))
        # what would otherwise fail only after (or inside) the first retraining
        if args.init == "inherited" and not args.supernet:
            raise TrainError("--init inherited: needs --supernet (the checkpoint the arch inherits its weights from)")
        if args.export and (missing := missing_packages()):
            raise TrainError(f"--export: needs {' and '.join(missing)}, not installed (pip install 'smnas[export]'); nothing was trained")
        if args.lut:
            try:
                LatencyTable.load(args.lut)
            except ValueError as e:
                raise TrainError(f"--lut: {e}") from None
        try:
            Path(args.out).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainError(f"--out {args.out}: {e.strerror}") from None
        outs = [Path(args.out) / arch.hash() if args.all else Path(args.out) for _, arch in archs]
        for (_, arch), out in zip(archs, outs):
            if args.resume and (out / "metrics.json").is_file():
                finished_metrics(out / "metrics.json", arch)
        results = []
        for (name, arch), out in zip(archs, outs):
            print(f"retraining {name} ({arch.hash()}, {args.init}) in {out}", file=sys.stderr)
            metrics = retrain(arch, space, replace(config, out=str(out)), args.init, args.supernet, args.lut, args.export, args.resume,
                              log=lambda m: print(m, file=sys.stderr))
            results.append({"name": name, "out": str(out), **metrics})
    except Interrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 130
    except (TrainError, ValueError, OSError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    for r in results:
        if "map" in r:
            print(f"{r['name']}: mAP {r['map']:.4f}, latency {r['latency_ms']:.3f} ms measured"
                  + (f" / {r['latency_pred_ms']:.3f} predicted" if r.get("latency_pred_ms") is not None else "")
                  + f", {r['flops'] / 1e9:.3f} GFLOPs, {r['params'] / 1e6:.3f} M params -> {r['out']}", file=sys.stderr)
    print(json.dumps(results if args.all else results[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
