"""Where a run's images come from: a COCO-layout root, explicit files, or the built-in shapes data."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch.distributed as dist

from ..errors import TrainError

if TYPE_CHECKING:
    from ..train_config import TrainConfig


DEFAULT_DATA = Path("data/shapes")


def _generate_once(root: Path) -> Path:
    """The shapes data, written by rank 0 only while the other ranks wait (call after
    `init_distributed`)."""
    from ..shapes import generate_shapes

    first = not dist.is_initialized() or dist.get_rank() == 0
    if first:
        generate_shapes(root)
    if dist.is_initialized():
        dist.barrier()
    return root if first else generate_shapes(root)  # complete by now: only checks


def build_datasets(config: TrainConfig, max_size: int) -> tuple:
    """Train and val datasets from `--data` (COCO 2017 layout), the four override flags, or, with
    neither, the built-in shapes data generated once under data/shapes."""
    from .coco import CocoDetection, coco_paths

    overrides = {k: getattr(config, k) for k in ("train_ann", "train_images", "val_ann", "val_images")}
    try:
        if config.data:
            paths = coco_paths(config.data)
        elif any(overrides.values()):
            paths = {}
        else:
            paths = coco_paths(_generate_once(DEFAULT_DATA))
        paths.update({k: Path(v) for k, v in overrides.items() if v})
        missing = [f"`{k}`" for k in overrides if k not in paths]
        if missing:
            raise ValueError(f"{', '.join(missing)}: needed when `data` is not given")
        train = CocoDetection(paths["train_images"], paths["train_ann"], max_size, config.skip_unreadable)
        val = CocoDetection(paths["val_images"], paths["val_ann"], max_size, config.skip_unreadable)
    except ValueError as e:
        raise TrainError(str(e)) from None
    if train.cat_ids != val.cat_ids:
        raise TrainError(f"{paths['val_ann']}: its categories differ from the training set's ({paths['train_ann']})")
    return train, val
