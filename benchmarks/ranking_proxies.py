"""Is the inherited score noisy or biased? Variants of it against the ranking benchmark's truth.

    python benchmarks/ranking_proxies.py --supernet s0=runs/a/seed0/supernet/last.pt s1=... \
        --truth benchmarks/results/ranking_cpu_tiny_one_stage_e12_ablation.points.json

On the archs and 12-epoch truth of an earlier `ranking.py` run (--truth), each supernet scores
every arch several ways: its mAP as the search scores it (BN recalibrated on the first batches of
one shuffle of the training set, 100 validation images), the same after a second shuffle's
batches, on --val-images validation images of the built-in shapes data (image i is the same
whatever the count, so the first 100 are the truth's), its AP50, and its validation loss (the
training loss on the validation images, BN as recalibrated). If the second calibration or the
larger validation set ranked the archs differently from the first, the score would be noisy and
averaging would help; if they agree with it and still not with the truth, it is biased. Prints
one JSON line: per supernet and variant, Kendall tau against the truth (bootstrap 95 % interval)
and, for the variants of the same score, against the search's score; the per-arch scores go in
the points file next to --out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from scipy.stats import kendalltau
from torch.nn.modules.batchnorm import _BatchNorm

from ranking import CALIB_BATCHES, data_config, load_truth, parse_supernets, rank_agreement
from search.nas import SubnetEvaluator
from supernet.checkpoint import load_supernet
from supernet.cli import log_to_stderr
from supernet.data import build_datasets
from supernet.data.coco import CocoDetection, to_model_input
from supernet.io import atomic_json, emit_result
from supernet.data.sources import DEFAULT_DATA
from supernet.shapes import MARKER, generate_shapes
from supernet.space import Arch

SAME_SCORE = ("map_calib2", "map_more_images")  # the search's score, measured again: its noise


@torch.no_grad()
def validation_loss(model: torch.nn.Module, arch: Arch, batches) -> dict[str, float]:
    """The training losses of `arch` on `batches`, its BN layers as recalibrated (eval mode)."""
    was = model.training
    model.train()
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
    totals: dict[str, float] = {}
    count = 0
    try:
        for images, targets in batches:
            labelled = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
            for k, v in model(to_model_input(images, "cpu"), labelled, arch=arch).items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(images)
            count += len(images)
    finally:
        model.train(was)
    return {k: v / count for k, v in totals.items()}


def proxy_scores(model, archs: list[Arch], datasets: tuple, more_val, batch_size: int, seed: int) -> dict[str, list[float]]:
    """Each arch's score under every variant (the search's own first: `map`)."""
    train_set, val_set = datasets
    make = lambda val, calib_seed: SubnetEvaluator(model, train_set, val, "cpu", CALIB_BATCHES, len(val), batch_size, 2, calib_seed)  # noqa: E731
    first, second, more = make(val_set, seed), make(val_set, seed + 1), make(more_val, seed)
    scores: dict[str, list[float]] = {k: [] for k in ("map", "ap50", "map_calib2", "map_more_images", "neg_classification_loss")}
    for arch in archs:
        again, larger = second(arch), more(arch)
        own = first(arch)  # last: the model's BN statistics are this calibration's for the loss below
        scores["map"].append(own["map"])
        scores["ap50"].append(own["ap50"])
        scores["map_calib2"].append(again["map"])
        scores["map_more_images"].append(larger["map"])
        scores["neg_classification_loss"].append(-validation_loss(model, arch, first.val)["classification"])
    return scores


def summarize(scores: dict[str, list[float]], truth: list[float], seed: int = 0) -> dict:
    """Per variant: agreement with the truth; for re-measurements of the search's score, with it."""
    rows = {}
    for name, values in scores.items():
        row = {k: v for k, v in rank_agreement(values, truth, seed=seed).items() if k.startswith("kendall")}
        if name in SAME_SCORE:
            row["kendall_tau_vs_map"] = round(float(kendalltau(values, scores["map"])[0]), 4)
        rows[name] = row
    return rows


def main() -> None:
    log_to_stderr()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", nargs="+", required=True, help="checkpoint(s), each PATH or NAME=PATH")
    p.add_argument("--truth", required=True, help="a ranking.py points file: its archs and truth")
    p.add_argument("--val-images", type=int, default=600, help="validation images of the larger set (the shapes data's first ones)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/ranking_proxies", help="where the larger validation set is written")
    p.add_argument("--out", default="benchmarks/results/ranking_cpu_tiny_one_stage_e12_proxies.json")
    args = p.parse_args()
    try:
        supernets, stored = parse_supernets(args.supernet), load_truth(args.truth)
    except ValueError as e:
        sys.exit(f"error: {e}")
    archs, truth = stored["archs"], [stored["truth"][a.hash()] for a in stored["archs"]]
    if args.val_images <= stored["val_images"]:
        sys.exit(f"error: --val-images: expected more than the truth's {stored['val_images']} images, got {args.val_images}")
    torch.set_num_threads(2)
    rows, points = {}, {a.hash(): {"standalone_map": t} for a, t in zip(archs, truth)}
    for name, path in supernets.items():
        model, blob = load_supernet(path, "cpu")
        config = data_config(blob, args, torch.device("cpu"))
        if config.data or config.val_ann:
            sys.exit(f"error: --supernet {path}: trained on other data than the built-in shapes; the larger validation set is theirs")
        datasets = build_datasets(config, max(model.space.resolutions))
        shapes = json.loads((DEFAULT_DATA / MARKER).read_text())["params"]  # the data the supernet was trained and scored on
        root = generate_shapes(Path(args.work) / f"shapes_val{args.val_images}", **{**shapes, "val": args.val_images})
        more_val = CocoDetection(root / "val2017", root / "annotations" / "instances_val2017.json", max(model.space.resolutions), False)
        scores = proxy_scores(model, archs, datasets, more_val, args.batch_size, args.seed)
        rows[name] = {"supernet": path, **summarize(scores, truth, args.seed)}
        for i, a in enumerate(archs):
            points[a.hash()][name] = {k: round(v[i], 5) for k, v in scores.items()}
    result = {"benchmark": "ranking_proxies", "truth": args.truth, "k": len(archs), "val_images": stored["val_images"],
              "more_val_images": args.val_images, "calib_batches": CALIB_BATCHES, "rows": rows}
    out = Path(args.out)
    atomic_json({**result, "points": points}, out.with_suffix(".points.json"))
    emit_result(result, out)


if __name__ == "__main__":
    main()
