"""COCO-format detection data: an images folder plus an instances JSON, read with pycocotools.

Works with any tool's COCO export, not only COCO itself: category ids (which may have gaps, as
COCO's 1..90 do) become contiguous labels 0..num_classes-1 sorted by id, and back via `cat_ids`
for evaluation. Images are resized so their longer side is `max_size`; the model letterboxes each
batch to the step's resolution, which is then a no-op when it equals `max_size` and a cheap
downscale otherwise. Boxes are scaled per axis with the image, so evaluation can undo it exactly.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import random
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms.v2.functional import resize

DECODERS = ("torchcodec", "pil")
EXIF_ORIENTATION = 0x0112

Target = dict[str, Any]


class UnreadableImage(ValueError):
    """An image file listed in the annotations that Pillow cannot decode."""


@dataclass(frozen=True)
class Records:
    """Every image's file name, id, size and targets in seven flat numpy arrays. Forked loader
    workers read these without touching a Python object per image: a list of per-image objects
    gets its pages copied into every worker by refcount updates (pytorch/pytorch#13246), gigabytes
    for COCO train; detectron2 serialises its dataset list into numpy buffers for the same reason."""

    names: np.ndarray  # uint8: every file name (relative to the images folder), UTF-8, end to end
    name_ends: np.ndarray  # int64 [N + 1]: image i's name is names[name_ends[i]:name_ends[i + 1]]
    image_ids: np.ndarray  # int64 [N]
    sizes: np.ndarray  # int64 [N, 2]: (height, width) as the JSON states it
    boxes: np.ndarray  # float32 [M, 4]: xyxy in original pixels, clipped to the image
    labels: np.ndarray  # int64 [M]
    box_ends: np.ndarray  # int64 [N + 1]: image i's boxes are boxes[box_ends[i]:box_ends[i + 1]]

    @classmethod
    def pack(cls, names: Sequence[str], image_ids: Sequence[int], sizes: Sequence[tuple[int, int]],
             boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> "Records":
        encoded = [n.encode() for n in names]
        return cls(
            names=np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(),
            name_ends=np.concatenate([[0], np.cumsum([len(e) for e in encoded], dtype=np.int64)]).astype(np.int64),
            image_ids=np.array(image_ids, dtype=np.int64).reshape(-1),
            sizes=np.array(sizes, dtype=np.int64).reshape(-1, 2),
            boxes=np.concatenate([np.zeros((0, 4), np.float32), *boxes]).astype(np.float32),
            labels=np.concatenate([np.zeros(0, np.int64), *labels]).astype(np.int64),
            box_ends=np.concatenate([[0], np.cumsum([len(b) for b in boxes], dtype=np.int64)]).astype(np.int64),
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.names, self.name_ends, self.image_ids, self.sizes, self.boxes, self.labels, self.box_ends))

    def name(self, i: int) -> str:
        return self.names[self.name_ends[i]:self.name_ends[i + 1]].tobytes().decode()

    def size(self, i: int) -> tuple[int, int]:
        h, w = self.sizes[i]
        return int(h), int(w)

    def targets(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes [K, 4], labels [K]) of image i: copies, so no tensor made from them holds the whole buffer."""
        a, b = self.box_ends[i], self.box_ends[i + 1]
        return self.boxes[a:b].copy(), self.labels[a:b].copy()

    def select(self, keep: Sequence[int]) -> "Records":
        """The records at indices `keep`, in that order."""
        keep = list(keep)
        targets = [self.targets(i) for i in keep]
        return Records.pack([self.name(i) for i in keep], self.image_ids[keep], self.sizes[keep],
                            [boxes for boxes, _ in targets], [labels for _, labels in targets])


class CocoDetection(Dataset):
    """`dataset[i] -> (image, target)`: image a uint8 RGB tensor [3, H, W] with max(H, W) ==
    `max_size`; target {"boxes": float32 [K, 4] xyxy in that image's pixels, "labels": int64 [K],
    "image_id": the COCO id, "orig_size": (h, w), "scale": returned / original size}.

    Crowd annotations are left out of the targets (COCOeval still reads them from `coco`); images
    without annotations are kept; boxes of zero or negative size, or outside the image, are
    dropped with one warning. No augmentation happens here: training flips are chosen per step
    (`supernet.batches`), so a resumed run sees the same ones. Every problem with the inputs,
    including images listed but missing on disk, raises ValueError at construction.
    """

    def __init__(self, images_dir: str | Path, ann_file: str | Path, max_size: int, skip_unreadable: bool = False,
                 decoder: str | None = None):
        images_dir, ann_file = Path(images_dir), Path(ann_file)
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size: expected a positive integer, got {max_size!r}")
        self.decoder = decoder or default_decoder()
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder: expected one of {', '.join(DECODERS)}, got {decoder!r}")
        if self.decoder == "torchcodec" and not _has_torchcodec():
            raise ValueError("decoder: torchcodec is not installed (pip install torchcodec; it needs torch >= 2.11)")
        if not images_dir.is_dir():
            raise ValueError(f"{images_dir}: images folder not found")
        data = _load_instances(ann_file)
        self.images_dir, self.ann_file, self.max_size = images_dir, ann_file, max_size
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_ids: list[int] = [c["id"] for c in categories]
        self.class_names: list[str] = [str(c.get("name", c["id"])) for c in categories]
        self.num_classes = len(self.cat_ids)
        # label i <-> category: what a trained detector keeps so its outputs can be read back
        self.classes: list[dict] = [{"label": i, "id": c, "name": n} for i, (c, n) in enumerate(zip(self.cat_ids, self.class_names))]
        self.records, dropped = _records(data, ann_file, {cid: i for i, cid in enumerate(self.cat_ids)})
        del data  # the COCO index is built from the file again if evaluation asks for it (`coco`): training never does
        _check_files(self.records, images_dir, ann_file)
        self.skipped: list[Path] = []
        if skip_unreadable:  # decoded once up front, so every epoch, rank and resume sees the same images
            readable = _decodes([self.path(i) for i in range(len(self.records))], self.decoder)
            self.skipped = [self.path(i) for i, ok in enumerate(readable) if not ok]
            self.records = self.records.select([i for i, ok in enumerate(readable) if ok])
            if self.skipped:
                warnings.warn(f"{ann_file}: skipped {len(self.skipped)} unreadable image(s), e.g. {self.skipped[0]}", stacklevel=2)
        if dropped:
            warnings.warn(f"{ann_file}: dropped {dropped} degenerate box(es) (zero or negative size, or outside the image)", stacklevel=2)

    @cached_property
    def coco(self) -> COCO:
        """The pycocotools index of the annotation file, which COCOeval reads (crowd boxes included):
        built on first use, so a training set and its forked workers never hold it."""
        coco = COCO()
        coco.dataset = _load_instances(self.ann_file)
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def __len__(self) -> int:
        return len(self.records)

    def path(self, index: int) -> Path:
        return self.images_dir / self.records.name(index)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        path, image_id, size = self.path(index), int(self.records.image_ids[index]), self.records.size(index)
        try:
            image = decode(path, self.decoder)
        except (OSError, SyntaxError, ValueError) as e:  # not an image, truncated, corrupt
            raise UnreadableImage(f"{path} (image id {image_id} in {self.ann_file}): not a readable image ({e}); "
                                  "fix or remove it, or pass `skip_unreadable`") from None
        h, w = image.shape[-2:]
        if (h, w) != size:
            raise ValueError(f"{path}: image is {w}x{h} but {self.ann_file} lists it as {size[1]}x{size[0]}")
        scale = self.max_size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        if (nw, nh) != (w, h):
            image = resize(image, [nh, nw], antialias=True)  # bilinear, the filter widened when downscaling, as Pillow does
        boxes, labels = self.records.targets(index)
        target = {
            "boxes": torch.from_numpy(boxes) * torch.tensor([nw / w, nh / h, nw / w, nh / h]),
            "labels": torch.from_numpy(labels),
            "image_id": image_id,
            "orig_size": (h, w),
            "scale": scale,
        }
        return image, target


def _load_instances(ann_file: Path) -> dict:
    if not ann_file.is_file():
        raise ValueError(f"{ann_file}: annotation file not found")
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{ann_file}: not valid JSON ({e})") from None
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict):
        raise ValueError(f"{ann_file}: expected a JSON object with {list(keys)}, got {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{ann_file}: missing key(s) {missing}; a COCO instances file has {list(keys)}")
    for k in keys:
        if not isinstance(data[k], list):
            raise ValueError(f"{ann_file}: '{k}' must be a list, got {type(data[k]).__name__}")
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            raise ValueError(f"{ann_file}: categories[{i}] needs an integer 'id'")
    ids = [c["id"] for c in data["categories"]]
    if not ids:
        raise ValueError(f"{ann_file}: 'categories' is empty")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{ann_file}: categories: duplicate id {next(i for i in ids if ids.count(i) > 1)}")
    return data


def _records(data: dict, ann_file: Path, label_of: dict[int, int]) -> tuple[Records, int]:
    """One record per image (targets precomputed in original pixels) and the number of dropped boxes."""
    images = {}
    for i, im in enumerate(data["images"]):
        ok = isinstance(im, dict) and _is_int(im.get("id")) and isinstance(im.get("file_name"), str)
        if not ok or not all(_is_int(im.get(k)) and im[k] > 0 for k in ("width", "height")):
            raise ValueError(f"{ann_file}: images[{i}] needs an integer 'id', a 'file_name' and positive integer 'width' and 'height'")
        if im["id"] in images:
            raise ValueError(f"{ann_file}: images[{i}]: duplicate image id {im['id']}")
        images[im["id"]] = im
    boxes: dict[int, list] = {k: [] for k in images}
    labels: dict[int, list] = {k: [] for k in images}
    dropped = 0
    for i, a in enumerate(data["annotations"]):
        bbox = a.get("bbox") if isinstance(a, dict) else None
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise ValueError(f"{ann_file}: annotations[{i}].bbox: expected [x, y, width, height]")
        if a.get("image_id") not in images:
            raise ValueError(f"{ann_file}: annotations[{i}].image_id {a.get('image_id')!r} is not in 'images'")
        if a.get("category_id") not in label_of:
            raise ValueError(f"{ann_file}: annotations[{i}].category_id {a.get('category_id')!r} is not in 'categories'")
        if a.get("iscrowd", 0):
            continue
        im = images[a["image_id"]]
        x, y, w, h = bbox
        x1, y1 = min(max(x, 0), im["width"]), min(max(y, 0), im["height"])
        x2, y2 = min(max(x + w, 0), im["width"]), min(max(y + h, 0), im["height"])
        if w <= 0 or h <= 0 or x2 <= x1 or y2 <= y1:
            dropped += 1
            continue
        boxes[a["image_id"]].append((x1, y1, x2, y2))
        labels[a["image_id"]].append(label_of[a["category_id"]])
    records = Records.pack(
        [im["file_name"] for im in images.values()], list(images), [(im["height"], im["width"]) for im in images.values()],
        [np.array(boxes[k], dtype=np.float32).reshape(-1, 4) for k in images], [np.array(labels[k], dtype=np.int64) for k in images])
    return records, dropped


def _check_files(records: Records, images_dir: Path, ann_file: Path) -> None:
    on_disk = set(os.listdir(images_dir))  # one listing instead of a stat per image (COCO train has 118k)
    names = (records.name(i) for i in range(len(records)))
    missing = [images_dir / n for n in names if n not in on_disk and not (images_dir / n).is_file()]
    if missing:
        raise ValueError(f"{missing[0]}: listed in {ann_file} but not found ({len(missing)} of {len(records)} images missing)")


def default_decoder() -> str:
    return "torchcodec" if _has_torchcodec() else "pil"


def _has_torchcodec() -> bool:
    try:
        importlib.import_module("torchcodec.decoders")
    except (ImportError, OSError, RuntimeError):  # not installed, or built for another torch
        return False
    return True


def decode(path: Path, decoder: str = "pil") -> Tensor:
    """The file's pixels as uint8 RGB [3, H, W], as stored (no EXIF rotation: COCO boxes refer to
    the stored pixels); grayscale, palette and CMYK become RGB, alpha is dropped. "torchcodec":
    TorchCodec's decoders (JPEG, PNG, WebP, GIF, AVIF, HEIC) straight into a tensor, and Pillow for
    what they do not read (BMP, TIFF, ...) and for files with an EXIF orientation, which TorchCodec
    would apply; "pil": Pillow only. Raises OSError or ValueError for a file that is not a
    readable image."""
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as img:  # reads the header only, unless Pillow decodes below
        if decoder == "torchcodec" and img.getexif().get(EXIF_ORIENTATION, 1) == 1:
            from torchcodec.decoders import decode_image

            try:
                image = decode_image(data, mode="RGB")
                return image[0] if image.ndim == 4 else image  # an animation: its first frame, as Pillow gives
            except (RuntimeError, ValueError):
                pass  # a format TorchCodec does not decode, or a broken file: Pillow decides
        return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous()


def _decodes(paths: list[Path], decoder: str) -> list[bool]:
    """Whether each image decodes completely (threads: both decoders release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    def ok(path: Path) -> bool:
        try:
            decode(path, decoder)
            return True
        except (OSError, SyntaxError, ValueError):
            return False

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(ok, paths))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def to_model_input(images: list[Tensor], device: torch.device | str) -> list[Tensor]:
    """uint8 [3, H, W] images as the models take them: float in [0, 1] on `device`."""
    return [img.to(device, non_blocking=True).float().div_(255) for img in images]


def collate(batch: list[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """Lists, not stacked tensors: images differ in size and targets in box count."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def _seed_worker(worker_id: int) -> None:
    # torch already seeds each worker from the loader's generator; numpy and random follow it
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


PREFETCH_FACTOR = 2  # torch's default: batches each loader worker holds ready


def loader_memory(dataset: CocoDetection, batch_size: int, workers: int) -> tuple[str, bool]:
    """(one line on what the loader will hold, whether it exceeds the memory available now). Each
    worker holds PREFETCH_FACTOR decoded batches (uint8, longer side `max_size`); the annotations
    are shared numpy arrays, read by every worker and copied by none. Printed at start, so a
    dataset too large for the worker count is seen before it swaps."""
    per_worker = PREFETCH_FACTOR * batch_size * 3 * dataset.max_size ** 2
    held = max(workers, 1) * per_worker + dataset.records.nbytes
    available = _available_memory()
    line = (f"data: {len(dataset)} images, annotations {dataset.records.nbytes / 2**20:.1f} MB (shared by the workers, not copied); "
            f"{workers} loader workers x up to {per_worker / 2**20:.1f} MB of decoded batches ({PREFETCH_FACTOR} x {batch_size} images "
            f"at {dataset.max_size} px)" + (f"; {available / 2**20:.0f} MB of memory available" if available else ""))
    return line, available is not None and held > available


def _available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (Linux); None elsewhere."""
    try:
        for row in Path("/proc/meminfo").read_text().splitlines():
            if row.startswith("MemAvailable:"):
                return int(row.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def build_loader(dataset: Dataset, batch_size: int, shuffle: bool, workers: int, seed: int,
                 distributed: bool = False, drop_last: bool = False) -> DataLoader:
    """A DataLoader whose order follows from `seed` (shuffling and each worker's RNG come from a
    generator seeded with it). With `distributed=True` a seeded DistributedSampler shards the data across ranks: call
    `loader.sampler.set_epoch(epoch)` every epoch so the shuffle changes.
    """
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last) if distributed else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0,
        drop_last=drop_last,
    )


def coco_paths(root: str | Path) -> dict[str, Path]:
    """The COCO 2017 layout under `root`: {"train_images", "train_ann", "val_images", "val_ann"}."""
    root = Path(root)
    paths = {
        "train_images": root / "train2017",
        "train_ann": root / "annotations" / "instances_train2017.json",
        "val_images": root / "val2017",
        "val_ann": root / "annotations" / "instances_val2017.json",
    }
    if not root.is_dir():
        raise ValueError(f"{root}: data folder not found (expected train2017/, val2017/ and annotations/instances_{{train,val}}2017.json)")
    missing = [str(p.relative_to(root)) for k, p in paths.items() if not (p.is_dir() if k.endswith("images") else p.is_file())]
    if missing:
        raise ValueError(f"{root}: not the COCO 2017 layout; missing {', '.join(missing)}")
    return paths
