"""COCO box mAP of one path of a model on a COCO-format loader, scored by pycocotools' COCOeval.

Scoring against the dataset's own annotation file (crowd regions, area ranges and all) is what
makes numbers comparable with published COCO results; detections are therefore mapped back to
original image pixels and COCO category ids first.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import io
import time
import weakref
from typing import Optional, Sequence

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader
from tqdm import tqdm

from .data import to_model_input
from .space import Arch

METRICS = ("map", "ap50", "ap75", "aps", "apm", "apl")  # the first six of COCOeval.stats, in order


def evaluate(model: torch.nn.Module, arch: Optional[Arch], loader: DataLoader | "Batches", device: torch.device | str,
             max_images: Optional[int] = None, progress: bool = False, timings: Optional[dict[str, float]] = None) -> dict[str, float]:
    """{"map" (AP@[.5:.95]), "ap50", "ap75", "aps", "apm", "apl"} of `model(images, arch=arch)`.

    `model` is a `Supernet` (with the path `arch`) or a standalone `Detector` (`arch` None or its
    own); it runs in eval mode and its mode is restored afterwards. `loader` yields
    `CocoDetection` batches, evaluated in order, the first `max_images`
    of them if given. Values are in [0, 1]; COCOeval reports -1 for a size range (small, medium,
    large) with no ground truth among the evaluated images, and that is passed on as is.
    Run it on one process: with a DistributedSampler each rank would score only its shard.
    `timings`, if given, receives the seconds spent in "inference" and in "cocoeval".
    """
    start = time.perf_counter()
    detections, image_ids = detect(model, arch, loader, device, max_images, progress)
    inferred = time.perf_counter()
    metrics = coco_map(loader.dataset.coco, detections, image_ids)
    if timings is not None:
        timings.update(inference=inferred - start, cocoeval=time.perf_counter() - inferred)
    return metrics


@torch.no_grad()
def detect(model: torch.nn.Module, arch: Optional[Arch], loader: DataLoader | "Batches", device: torch.device | str,
           max_images: Optional[int] = None, progress: bool = False) -> tuple[list[dict], list[int]]:
    """The inference half of `evaluate`: (COCO result dicts in original pixels and category ids,
    the evaluated image ids), ready for `coco_map`. Split out so that scoring can overlap the
    next model's inference (the search does)."""
    dataset = loader.dataset
    if getattr(model, "num_classes", len(dataset.cat_ids)) != len(dataset.cat_ids):
        raise ValueError(f"model: predicts {model.num_classes} classes; the dataset {dataset.ann_file} has {len(dataset.cat_ids)}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images: expected a positive integer or None, got {max_images!r}")
    limit = len(dataset) if max_images is None else min(max_images, len(dataset))
    was_training = model.training
    model.eval()
    detections: list[dict] = []
    image_ids: list[int] = []
    try:
        with tqdm(total=limit, desc="eval", unit="img", disable=not progress, leave=False) as bar:
            for images, targets in loader:
                images, targets = images[: limit - len(image_ids)], targets[: limit - len(image_ids)]
                outputs = model(to_model_input(images, device), arch=arch)
                for image, target, out in zip(images, targets, outputs):
                    image_ids.append(target["image_id"])
                    detections.extend(to_coco(out, target, tuple(image.shape[-2:]), dataset.cat_ids))
                bar.update(len(images))
                if len(image_ids) >= limit:
                    break
    finally:
        model.train(was_training)
    return detections, image_ids


class Batches(list):
    """Decoded batches kept in memory with the dataset they came from, usable wherever `evaluate`
    or `recalibrate_bn` take a loader: a search scores hundreds of subnets on the same few
    hundred images, and decoding them once instead of per subnet is most of an evaluation's
    data cost."""

    def __init__(self, batches, dataset):
        super().__init__(batches)
        self.dataset = dataset

    @classmethod
    def first(cls, loader: DataLoader, images: int) -> "Batches":
        """The first batches of `loader` holding `images` images (the last one cut to fit)."""
        out, count = [], 0
        for imgs, targets in loader:
            take = min(len(imgs), images - count)
            out.append((imgs[:take], targets[:take]))
            count += take
            if count >= images:
                break
        return cls(out, loader.dataset)


def to_coco(output: dict[str, torch.Tensor], target: dict, image_size: tuple[int, int], cat_ids: Sequence[int]) -> list[dict]:
    """One image's detections as COCO result entries, in the original image's pixels.

    The scale is undone per axis from `image_size` (the loaded image's H, W) and
    `target["orig_size"]`: rounding makes the short side's factor differ slightly from
    `target["scale"]`, enough to cost AP75 on small objects."""
    (h, w), (oh, ow) = image_size, target["orig_size"]
    boxes = output["boxes"].detach().float().cpu() * torch.tensor([ow / w, oh / h, ow / w, oh / h])
    boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
    return [
        {"image_id": target["image_id"], "category_id": cat_ids[label], "bbox": box, "score": score}
        for box, label, score in zip(boxes.tolist(), output["labels"].tolist(), output["scores"].tolist())
    ]


def coco_map(coco_gt: COCO, detections: list[dict], image_ids: Sequence[int], backend: str = "auto") -> dict[str, float]:
    """COCOeval (bbox) of `detections` (COCO result dicts: image_id, category_id, bbox xywh,
    score) on the images `image_ids` of `coco_gt`; all zeros when there are no detections.

    `backend`: "pycocotools" (the reference), "faster" (faster-coco-eval's C++ COCOeval: the same
    numbers about five times faster, which matters when a search scores thousands of subnets), or
    "auto", faster when it is installed."""
    if not image_ids:
        raise ValueError("image_ids: no images to evaluate")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if not detections:
        return dict.fromkeys(METRICS, 0.0)
    if backend != "pycocotools" and _faster() is not None:
        return _faster_map(coco_gt, detections, image_ids)
    if backend == "faster":
        raise ImportError("backend faster: faster-coco-eval is not installed (pip install faster-coco-eval)")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the summary table
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])  # loadRes adds fields in place: keep the caller's intact
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = sorted(set(image_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(METRICS, ev.stats)}


BACKENDS = ("auto", "faster", "pycocotools")


@functools.lru_cache(maxsize=1)
def _faster():
    try:
        import faster_coco_eval
    except ImportError:
        return None
    return faster_coco_eval


_FASTER_GT: "weakref.WeakKeyDictionary[COCO, object]" = weakref.WeakKeyDictionary()


def _faster_map(coco_gt: COCO, detections: list[dict], image_ids: Sequence[int]) -> dict[str, float]:
    fce = _faster()
    gt = _FASTER_GT.get(coco_gt)
    if gt is None:  # its own index of a copy of the annotations, built once per dataset
        gt = _FASTER_GT[coco_gt] = fce.COCO(copy.deepcopy(coco_gt.dataset))
    with contextlib.redirect_stdout(io.StringIO()):
        # fresh dicts, which loadRes annotates in place; without use_deepcopy it does not deep-copy
        # them again (that copy was three quarters of a search's COCOeval time)
        ev = fce.COCOeval_faster(gt, gt.loadRes([dict(d) for d in detections]), "bbox", print_function=lambda *_, **__: None)
        ev.params.imgIds = sorted(set(image_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(METRICS, ev.stats)}
