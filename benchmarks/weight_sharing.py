"""Which shared choice starves a subnet's inherited weights? One arch, many supernets.

    python benchmarks/weight_sharing.py                  # tiny space, shapes data, CPU: ~20 min
    python benchmarks/weight_sharing.py --rows standalone head head_paths

Takes one arch (the `tiny` space's smallest with the structural block) and trains, each with the
same schedule (the demo's retraining: 6 epochs), (a) that arch standalone, (b) the full supernet
on that arch's path only, and (c) the supernet with a sandwich over a sub-space that frees one
kind of choice at a time around the arch: widths, resolution, head type, neck type, blocks, all
but blocks (`structural`, what the demo trains; `structural_one_stage` without the two-stage
head), or everything. Each row is the arch's mAP on the first --eval-images validation images after BN
recalibration, so the ratio to (a) says how much that kind of sharing costs. Rows ending in
`_paths` average every gradient over all of a step's paths instead of over the paths that ran
each weight (`--grad-average paths`). Prints one JSON line; resumable (finished rows are kept in
--work and not trained again).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from supernet.data import build_datasets
from supernet.io import atomic_json, emit_result
from supernet.sampler import FixedSampler, SandwichSampler
from supernet.space import SearchSpace
from supernet.supernet import Detector
from supernet.train_config import TrainConfig
from supernet.trainer import Trainer

BLOCK = "ir_k3_e6"
ROWS = ("standalone", "supernet_fixed", "widths", "resolution", "head", "head_paths", "neck", "blocks", "structural",
        "structural_one_stage", "all")
ONE_STAGE_HEADS = ("fcos", "retinanet")


def sub_space(space: SearchSpace, row: str) -> SearchSpace:
    """The sandwich's sub-space of a row: the arch's structure with the row's kind of choice freed
    (widths are free in every sandwich row)."""
    arch = space.restrict(blocks=(BLOCK,)).smallest()
    sub = space.restrict(blocks=(BLOCK,), structure=arch)
    kind = row.removesuffix("_paths")
    if kind == "resolution":
        sub = replace(sub, resolutions=space.resolutions)
    elif kind == "head":
        sub = replace(sub, head=space.head)
    elif kind == "neck":
        sub = replace(sub, neck=space.neck)
    elif kind == "blocks":
        sub = space.restrict(structure=arch)
    elif kind == "structural":  # what the demo trains: the structural block, everything else free
        sub = space.restrict(blocks=(BLOCK,))
    elif kind == "structural_one_stage":
        sub = space.restrict(blocks=(BLOCK,))
        sub = replace(sub, head=replace(sub.head, types=ONE_STAGE_HEADS))
    elif kind == "all":
        sub = space
    return sub


def run_row(row: str, args: argparse.Namespace) -> dict:
    space = SearchSpace.preset("tiny")
    arch = space.restrict(blocks=(BLOCK,)).smallest()
    cfg = TrainConfig(space="tiny", out=str(Path(args.work) / row), epochs=args.epochs, batch_size=16, seed=args.seed, workers=2,
                      device=args.device, eval_images=args.eval_images, eval_random_archs=0,
                      grad_average="paths" if row.endswith("_paths") else "users")
    data = build_datasets(cfg, max(space.resolutions))
    trainer = Trainer(cfg, data, detector=Detector(arch, data[0].num_classes)) if row == "standalone" else Trainer(cfg, data)
    if row != "standalone":
        trainer.sampler = FixedSampler(arch) if row == "supernet_fixed" else SandwichSampler(sub_space(space, row), args.seed)
        trainer.eval_archs = {"arch": arch}
    result = trainer.run()
    return {"row": row, "map": round(result["eval"]["arch"]["map"], 5), "train_seconds": round(trainer.train_seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--eval-images", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", default="runs/weight_sharing")
    p.add_argument("--out", default="benchmarks/results/weight_sharing_cpu_tiny.json")
    args = p.parse_args()
    rows = []
    for row in args.rows:
        done = Path(args.work) / row / "row.json"
        if not done.is_file():
            print(f"== {row}", file=sys.stderr)
            atomic_json(run_row(row, args), done)
        rows.append(json.loads(done.read_text()))
    reference = next((r["map"] for r in rows if r["row"] == "standalone"), None)
    for r in rows:
        r["vs_standalone"] = round(r["map"] / reference, 3) if reference else None
    emit_result({"benchmark": "weight_sharing", "space": "tiny", "arch": "smallest, structural block", "epochs": args.epochs,
                 "seed": args.seed, "eval_images": args.eval_images, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
