"""Synthetic shapes: a small, real COCO-format dataset written to disk, the default training data.

`python -m supernet.shapes --out DIR --train N --val M --size S --seed K` writes DIR/train2017/,
DIR/val2017/ and DIR/annotations/instances_{train,val}2017.json, the COCO 2017 layout that
`--data` reads, so the default run exercises exactly the code path of real data. Each S x S image
holds 1-4 circles, squares and triangles (category ids 1, 2, 3) of 20-50% of S, random colour and
rotation, partly overlapping, on a noisy, textured background. The sizes and the moderate noise are
chosen so that the default CPU run (the tiny space at 64-128 px, ~10 minutes) learns detectors with
clearly non-zero mAP: a shape of 10% of S is 6 px at 64 px input, below what stride-8 features
resolve after a few hundred steps. A box is tight around the pixels of
its shape that stay visible after later shapes are drawn over it; no shape is hidden by more than
40%. Images are PNG: lossless, so a box is exactly the extent of the pixels in the file (JPEG
would smear edges by a pixel or two, which matters at 128 px); they stay small at these sizes.

Every image comes from its own generator seeded by (seed, split, index), so the output is
deterministic and image i is the same whatever the number of images asked for.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
SPLITS = ("train2017", "val2017")
MARKER = ".shapes.json"  # {"params": ..., "version": int, "complete": bool}; "complete" is written last
MAX_SHAPES = 4
SIDE_RANGE = (0.2, 0.5)  # shape side (diameter) as a fraction of the image side
MAX_HIDDEN = 0.4  # largest fraction of a shape that later shapes may cover
PLACEMENT_TRIES = 20
VERSION = 2  # of the drawing rules; data written by another version is regenerated


def generate_shapes(out_dir: str | Path, train: int = 500, val: int = 100, size: int = 128, seed: int = 0) -> Path:
    """Write the dataset to `out_dir` and return it; if a complete dataset with the same arguments
    is already there, do nothing (scripts call this on every run)."""
    out = Path(out_dir)
    params = {"train": train, "val": val, "size": size, "seed": seed}
    for name, value, low in (("train", train, 1), ("val", val, 1), ("size", size, 32)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    if is_complete(out, params):
        return out
    _prepare(out, params)
    for split_index, (split, count) in enumerate(zip(SPLITS, (train, val))):
        images, annotations = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            image, objects = _draw_image(rng, size)
            file_name = f"{i + 1:06d}.png"
            image.save(out / split / file_name)
            images.append({"id": i + 1, "file_name": file_name, "width": size, "height": size})
            for category_id, mask in objects:
                annotations.append(_annotation(len(annotations) + 1, i + 1, category_id, mask))
        coco = {
            "info": {"description": "smnas synthetic shapes", "version": str(VERSION), **params},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": CATEGORIES,
        }
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    (out / MARKER).write_text(json.dumps({"params": params, "version": VERSION, "complete": True}))
    return out


def is_complete(out_dir: str | Path, params: dict) -> bool:
    """True if `out_dir` holds a finished dataset generated with exactly `params` by this VERSION."""
    try:
        marker = json.loads((Path(out_dir) / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return marker == {"params": params, "version": VERSION, "complete": True}


def _prepare(out: Path, params: dict) -> None:
    """Empty a previous shapes dataset in `out` (never anything this module did not write)."""
    ours = (out / MARKER).is_file()
    if not ours and any((out / "annotations" / f"instances_{s}.json").exists() for s in SPLITS):
        raise ValueError(f"{out}: already holds a COCO dataset not written by supernet.shapes; choose another `out`")
    if ours:
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
    for sub in (*SPLITS, "annotations"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"params": params, "version": VERSION, "complete": False}))


def _draw_image(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[tuple[int, np.ndarray]]]:
    """One image and its objects as (category id, visible-pixel mask [size, size] bool)."""
    canvas = _background(rng, size)
    objects: list[tuple[int, np.ndarray]] = []  # visible masks, in drawing order
    areas: list[int] = []  # full areas
    for _ in range(int(rng.integers(1, MAX_SHAPES + 1))):
        for _ in range(PLACEMENT_TRIES):
            category_id = int(rng.integers(1, len(CATEGORIES) + 1))
            mask = _shape_mask(rng, category_id, size)
            if all((seen & ~mask).sum() >= (1 - MAX_HIDDEN) * area for (_, seen), area in zip(objects, areas)):
                break
        else:
            continue  # no placement keeps the others visible enough: fewer shapes on this image
        canvas[mask] = _colour(rng, canvas[mask].mean(0))
        objects = [(c, seen & ~mask) for c, seen in objects] + [(category_id, mask)]
        areas.append(int(mask.sum()))
    canvas += rng.normal(0, rng.uniform(2, 6), canvas.shape)
    return Image.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8)), objects


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour field + an oriented sinusoidal texture, float [size, size, 3]."""
    grid = int(rng.integers(2, 9))
    coarse = Image.fromarray(rng.integers(0, 256, (grid, grid, 3), dtype=np.uint8))
    field = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size]
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, size / 2)
    wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + rng.uniform(0, 2 * np.pi))
    return field * rng.uniform(0.5, 1.0) + (wave * rng.uniform(0, 30))[..., None] + rng.uniform(0, 60)


def _shape_mask(rng: np.random.Generator, category_id: int, size: int) -> np.ndarray:
    """A circle, square or triangle of side (diameter) in SIDE_RANGE of `size`, rotated, inside the image."""
    side = rng.uniform(*SIDE_RANGE) * size
    radius = {1: side / 2, 2: side / np.sqrt(2), 3: side / np.sqrt(3)}[category_id]  # circumradius
    cx, cy = rng.uniform(radius, size - radius, 2)
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if category_id == 1:
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        corners = 4 if category_id == 2 else 3
        start = rng.uniform(0, 2 * np.pi)
        angles = start + 2 * np.pi * np.arange(corners) / corners
        draw.polygon([(cx + radius * np.cos(a), cy + radius * np.sin(a)) for a in angles], fill=255)
    return np.asarray(mask) > 0


def _colour(rng: np.random.Generator, behind: np.ndarray) -> np.ndarray:
    """The most contrasting of a few random colours against the mean colour behind the shape."""
    candidates = rng.uniform(0, 255, (8, 3))
    return candidates[np.abs(candidates - behind).sum(1).argmax()]


def _annotation(ann_id: int, image_id: int, category_id: int, mask: np.ndarray) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],  # pixel edges: tight around the mask
        "area": int(mask.sum()),
        "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
        "iscrowd": 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supernet.shapes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/shapes", help="output folder (COCO 2017 layout)")
    parser.add_argument("--train", type=int, default=500, help="number of training images")
    parser.add_argument("--val", type=int, default=100, help="number of validation images")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    params = {"train": args.train, "val": args.val, "size": args.size, "seed": args.seed}
    if is_complete(args.out, params):
        print(f"shapes: {args.out} is already complete")
        return 0
    start = time.perf_counter()
    try:
        out = generate_shapes(args.out, **params)
    except ValueError as e:
        parser.error(str(e))  # exit code 2, one line
    counts = [len(json.loads((out / "annotations" / f"instances_{s}.json").read_text())["annotations"]) for s in SPLITS]
    print(f"shapes: {args.train} train + {args.val} val images ({counts[0]} + {counts[1]} objects), "
          f"{args.size} px, in {out} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
