"""Do forked loader workers copy the dataset's records? COCO-train-sized annotations, indexed by 4 workers.

    python benchmarks/dataset_memory.py                         # 118,287 images, 860,001 boxes: ~3 min, ~3 GB
    python benchmarks/dataset_memory.py --images 5000 --boxes 36000 --out /tmp/m.json   # a smoke run

Writes a synthetic instances file the size of COCO 2017 train (boxes, no segmentations) with an
empty file per image (only parsing and indexing are measured, nothing is decoded), builds
`CocoDetection` on it (parse seconds, the main process's memory, the records' bytes), then runs
one epoch of a 4-worker DataLoader whose items read each image's path and targets, as
`__getitem__` does before decoding. Per worker it reports the growth, from its start to the end of
the epoch, of its unique memory (USS: pages no other process shares, so copies made by
copy-on-write) and of its RSS; Linux counts a page copied on write in RSS before and after, so the
copies show in USS only. The same epoch over the layout the records had before (a Python list of
per-image objects, kept here only as the reference) shows what the flat arrays save, and an
epoch that reads nothing (`none`) the workers' own growth (the loader's machinery, Python's
allocator), which the other two are read against. Target: per-worker USS growth above the
`none` epoch's at most 10 % of the records' size.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from supernet.data import CocoDetection
from supernet.io import emit_result

COCO_TRAIN_IMAGES, COCO_TRAIN_BOXES = 118_287, 860_001
WORKERS = 4
_START: dict[str, int] = {}  # this worker's memory when it started


def memory(pid: int | str = "self") -> dict[str, int]:
    """{"rss", "uss", "pss"} in bytes, from /proc/PID/smaps_rollup (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value, *_ = line.split()
        fields[key.rstrip(":")] = int(value) * 1024
    return {"rss": fields["Rss"], "uss": fields["Private_Clean"] + fields["Private_Dirty"], "pss": fields["Pss"]}


def write_annotations(root: Path, images: int, boxes: int, seed: int) -> tuple[Path, Path]:
    """COCO-like sizes and category ids (80 of 1..90), boxes spread over the images like COCO's."""
    rng = np.random.default_rng(seed)
    folder = root / "train2017"
    folder.mkdir()
    cat_ids = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    heights, widths = rng.integers(240, 641, images), rng.integers(240, 641, images)
    names = [f"{i:012d}.jpg" for i in range(1, images + 1)]
    for name in names:
        (folder / name).touch()
    owner = rng.integers(0, images, boxes)
    x, y = rng.uniform(0, 0.8, boxes), rng.uniform(0, 0.8, boxes)
    w, h = rng.uniform(0.02, 0.2, boxes), rng.uniform(0.02, 0.2, boxes)
    cats = rng.choice(cat_ids, boxes)
    ann = {
        "images": [{"id": i + 1, "file_name": n, "height": int(heights[i]), "width": int(widths[i])} for i, n in enumerate(names)],
        "annotations": [{"id": k + 1, "image_id": int(owner[k]) + 1, "category_id": int(cats[k]), "iscrowd": 0, "area": 1.0,
                         "bbox": [round(float(x[k] * widths[owner[k]]), 2), round(float(y[k] * heights[owner[k]]), 2),
                                  round(float(w[k] * widths[owner[k]]), 2), round(float(h[k] * heights[owner[k]]), 2)]}
                        for k in range(boxes)],
        "categories": [{"id": c, "name": f"class{c}"} for c in cat_ids],
    }
    ann_file = root / "instances_train2017.json"
    ann_file.write_text(json.dumps(ann))
    return folder, ann_file


class Indexing(Dataset):
    """Item i: image i's path and targets read as `CocoDetection.__getitem__` reads them (no decoding);
    returns (worker pid, the worker's memory at its start)."""

    def __init__(self, dataset: CocoDetection, layout: str):
        self.dataset, self.layout = dataset, layout
        if layout == "list":  # the reference: one Python object per image
            records = dataset.records
            self.items = [(dataset.path(i), int(records.image_ids[i]), records.size(i), *records.targets(i)) for i in range(len(records))]
            dataset.records = None  # only the list is left to read

        self.length = len(dataset.records) if layout != "list" else len(self.items)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[int, dict]:
        if self.layout == "arrays":
            path, size, (boxes, labels) = self.dataset.path(i), self.dataset.records.size(i), self.dataset.records.targets(i)
            assert path.name and size[0] > 0 and boxes.shape[0] == labels.shape[0]
        elif self.layout == "list":
            path, _, size, boxes, labels = self.items[i]
            assert path.name and size[0] > 0 and boxes.shape[0] == labels.shape[0]
        return os.getpid(), _START


def _started(_: int) -> None:
    _START.update(memory())


def run(layout: str, dataset: CocoDetection, batch_size: int) -> dict:
    data = Indexing(dataset, layout)
    loader = DataLoader(data, batch_size=batch_size, num_workers=WORKERS, worker_init_fn=_started, persistent_workers=True,
                        collate_fn=lambda items: items, multiprocessing_context="fork")
    start = time.perf_counter()
    starts = {}
    for batch in loader:
        for pid, mem in batch:
            starts.setdefault(pid, mem)
    seconds = time.perf_counter() - start
    ends = {pid: memory(pid) for pid in starts}  # the workers idle, alive (persistent), after the epoch
    del loader
    growth = {k: [ends[p][k] - starts[p][k] for p in starts] for k in ("uss", "rss")}
    return {"layout": layout, "epoch_s": round(seconds, 2), "workers": len(starts),
            "worker_uss_growth_mb": [round(g / 2**20, 1) for g in growth["uss"]],
            "worker_rss_growth_mb": [round(g / 2**20, 1) for g in growth["rss"]],
            "median_uss_growth_mb": round(statistics.median(growth["uss"]) / 2**20, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=COCO_TRAIN_IMAGES)
    p.add_argument("--boxes", type=int, default=COCO_TRAIN_BOXES)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/dataset_memory_cpu.json")
    args = p.parse_args()
    if not Path("/proc/self/smaps_rollup").is_file():
        sys.exit("dataset_memory: needs Linux's /proc/PID/smaps_rollup to read each worker's memory")
    if args.images < WORKERS or args.boxes < 0:
        p.error(f"--images: at least {WORKERS} (one per worker), --boxes: at least 0")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder, ann_file = write_annotations(Path(tmp), args.images, args.boxes, args.seed)
        written = time.perf_counter() - start
        before = memory()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropped boxes: none expected, and not what is measured
            dataset = CocoDetection(folder, ann_file, max_size=640)
        parse = time.perf_counter() - start
        after = memory()
        records_mb, boxes = dataset.records.nbytes / 2**20, len(dataset.records.boxes)
        runs = [run(layout, dataset, args.batch_size) for layout in ("none", "arrays", "list")]  # "list" last: it drops the arrays
        own = runs[0]["median_uss_growth_mb"]
        for r in runs[1:]:
            r["median_uss_growth_over_none_mb"] = round(r["median_uss_growth_mb"] - own, 1)
            r["over_none_vs_records"] = round((max(r["worker_uss_growth_mb"]) - own) / records_mb, 3)
        result = {
            "benchmark": "dataset_memory", "images": args.images, "boxes": boxes,
            "annotation_file_mb": round(ann_file.stat().st_size / 2**20, 1), "write_s": round(written, 1), "parse_s": round(parse, 2),
            "main_rss_growth_mb": round((after["rss"] - before["rss"]) / 2**20, 1), "records_mb": round(records_mb, 2),
            "target": "the largest per-worker USS growth above the none epoch's median <= 10 % of records_mb (layout arrays)",
            "runs": runs, "target_met": runs[1]["over_none_vs_records"] <= 0.1,
        }
    emit_result(result, args.out)


if __name__ == "__main__":
    main()
