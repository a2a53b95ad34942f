"""Step-indexed batches: which images (and flips) step k trains on is a function of (seed, k).

That makes a resumed run see exactly the batches an uninterrupted one would, without replaying
the loader, and lets each DDP rank take its own shard of the same global batch.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler


class StepBatchSampler(Sampler[list[tuple[int, bool]]]):
    """Yields, for steps `start` .. `stop - 1`, this rank's share of the global batch as
    (index, horizontal flip) pairs. Each epoch is a fresh permutation seeded by (seed, epoch);
    the last incomplete global batch of an epoch is dropped."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1, flip: bool = True):
        self.global_batch = batch_size * world
        if num_items < self.global_batch:
            raise ValueError(f"dataset: {num_items} images is fewer than one global batch ({batch_size} x {world} ranks)")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.stop, self.rank, self.flip = start, stop, rank, flip
        self.steps_per_epoch = num_items // self.global_batch
        self._epoch_cache: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.num_items, generator=g)
            flips = torch.rand(self.num_items, generator=g) < 0.5 if self.flip else torch.zeros(self.num_items, dtype=torch.bool)
            self._epoch_cache = (epoch, order, flips)
        return self._epoch_cache[1], self._epoch_cache[2]

    def batch(self, step: int) -> list[tuple[int, bool]]:
        epoch, position = divmod(step, self.steps_per_epoch)
        order, flips = self._epoch(epoch)
        first = position * self.global_batch + self.rank * self.batch_size
        idx = order[first: first + self.batch_size]
        return [(int(i), bool(flips[i])) for i in idx]

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for step in range(self.start, self.stop):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class FlipDataset(Dataset):
    """Wraps a detection dataset of (uint8 image [3, H, W], target) so that item (i, flip) is
    item i, horizontally flipped when `flip` (boxes mirrored)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, bool]):
        index, flip = key
        image, target = self.dataset[index]
        if flip:
            image = image.flip(-1)
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = image.shape[-1] - target["boxes"][:, [2, 0]]
            target = {**target, "boxes": boxes}
        return image, target
