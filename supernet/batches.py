"""Step-indexed batches: which images, flips and augmentations step k trains on is a function of
(seed, k).

That makes a resumed run see exactly the batches an uninterrupted one would, without replaying
the loader or depending on which worker decodes an item, and lets each DDP rank take its own
shard of the same global batch.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2

Key = tuple[int, bool, int]  # (index, horizontal flip, augmentation seed)
AUGMENTS = ("none", "flip", "scale_crop")
_MEAN_FILL = (124, 116, 104)  # the ImageNet mean in uint8: zoomed-out borders look like the letterbox padding


class StepBatchSampler(Sampler[list[Key]]):
    """Yields, for steps `start` .. `stop - 1`, this rank's share of the global batch as
    (index, horizontal flip, augmentation seed) keys. Each epoch is a fresh permutation seeded
    by (seed, epoch); the last incomplete global batch of an epoch is dropped."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1, flip: bool = True):
        self.global_batch = batch_size * world
        if num_items < self.global_batch:
            raise ValueError(f"dataset: {num_items} images is fewer than one global batch ({batch_size} x {world} ranks)")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.stop, self.rank, self.flip = start, stop, rank, flip
        self.steps_per_epoch = num_items // self.global_batch
        self._epoch_cache: tuple[int, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.num_items, generator=g)
            flips = torch.rand(self.num_items, generator=g) < 0.5
            if not self.flip:
                flips = torch.zeros_like(flips)
            seeds = torch.randint(0, 2**31 - 1, (self.num_items,), generator=g)
            self._epoch_cache = (epoch, order, flips, seeds)
        return self._epoch_cache[1:]

    def batch(self, step: int) -> list[Key]:
        epoch, position = divmod(step, self.steps_per_epoch)
        order, flips, seeds = self._epoch(epoch)
        first = position * self.global_batch + self.rank * self.batch_size
        idx = order[first: first + self.batch_size]
        return [(int(i), bool(flips[i]), int(seeds[i])) for i in idx]

    def __iter__(self) -> Iterator[list[Key]]:
        for step in range(self.start, self.stop):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class AugmentedDataset(Dataset):
    """Wraps a detection dataset of (uint8 image [3, H, W], target) so that item (i, flip, seed)
    is item i, horizontally flipped when `flip` (boxes mirrored), then, with `augment`
    "scale_crop", zoomed out and cropped by torchvision's `transforms.v2` (SSD's RandomZoomOut and
    RandomIoUCrop, boxes sanitised) with their randomness drawn from `seed` alone. "none" and
    "flip" leave the image as the key's flip makes it (the sampler draws no flips for "none")."""

    def __init__(self, dataset: Dataset, augment: str = "flip"):
        if augment not in AUGMENTS:
            raise ValueError(f"`augment`: expected one of {list(AUGMENTS)}, got {augment!r}")
        self.dataset = dataset
        self.scale_crop = v2.Compose([
            v2.RandomZoomOut(fill={tv_tensors.Image: _MEAN_FILL, "others": 0}, side_range=(1.0, 2.0), p=0.5),
            v2.RandomIoUCrop(),
            v2.SanitizeBoundingBoxes(),
        ]) if augment == "scale_crop" else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Key):
        index, flip, seed = key
        image, target = self.dataset[index]
        if flip:
            image = image.flip(-1)
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = image.shape[-1] - target["boxes"][:, [2, 0]]
            target = {**target, "boxes": boxes}
        if self.scale_crop is not None:
            image, target = self._scale_crop(image, target, seed)
        return image, target

    def _scale_crop(self, image, target: dict, seed: int):
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:]))
        with torch.random.fork_rng(devices=[]):  # the key's seed alone decides: exact under --resume, any worker
            torch.manual_seed(seed)
            out, kept = self.scale_crop(tv_tensors.Image(image), {"boxes": boxes, "labels": target["labels"]})
        return out.as_subclass(torch.Tensor), {**target, "boxes": kept["boxes"].as_subclass(torch.Tensor), "labels": kept["labels"]}
