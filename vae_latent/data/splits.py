"""A split held in memory as one uint8 tensor: a batch is one gather, on the CPU or the GPU."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset


class InMemorySplit(Dataset):
    """A whole split as one uint8 tensor; a batch is one gather, not a per-sample collate."""

    def __init__(self, images: Tensor, labels: Tensor, binarize: bool) -> None:
        self.images, self.labels = images, labels
        # Binarized images are stored as 0/1 bytes, the rest as 0..255 bytes.
        self.scale = 1.0 if binarize else 1.0 / 255.0

    def __len__(self) -> int:
        return len(self.images)

    def take(self, idx: list[int] | Tensor, labels: bool = True) -> tuple[Tensor, Tensor | None]:
        """Images (float in [0, 1]) and labels (unless not wanted) at ``idx``: one gather each."""
        index = torch.as_tensor(idx, device=self.images.device)
        return self._floats(self.images[index]), self.labels[index] if labels else None

    def rows(self, start: int, stop: int, labels: bool = True) -> tuple[Tensor, Tensor | None]:
        """Images (float in [0, 1]) and labels (unless not wanted) ``start:stop``: no gather."""
        images = self.images[start:stop]
        return self._floats(images), self.labels[start:stop] if labels else None

    def _floats(self, images: Tensor) -> Tensor:
        x = images.float()
        return x if self.scale == 1.0 else x.mul_(self.scale)  # binarized bytes are 0/1 already

    def ordered(self, order: Tensor, labels: bool = True) -> InMemorySplit:
        """This split's images (and labels, if wanted) in ``order``: one gather of all of them."""
        moved = copy.copy(self)
        moved.images = self.images[order]
        moved.labels = self.labels[order] if labels else self.labels[:0]
        return moved

    # DataLoader hands a whole batch of indices to __getitems__ (torch >= 2.1).
    __getitems__ = take

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.take([i])
        return x[0], y[0]

    def to(self, device: torch.device) -> InMemorySplit:
        moved = copy.copy(self)
        moved.images, moved.labels = self.images.to(device), self.labels.to(device)
        return moved


def as_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The DataLoader's collate step: ``__getitems__`` already returned a batch."""
    return batch


class DeviceBatches:
    """Batches gathered on the split's device from an order drawn there: no host work per step.

    Kept beside DataLoader for one GPU: a sampler yields Python indices, and copying them to the
    GPU each step waits for it; here one ``randperm`` per epoch runs on the device, the split is
    gathered in that order once, and a batch is a slice of it (on the CPU too: 32 rows gathered
    from all over the split each step cost more than a slice of contiguous memory, docs/speed.md).
    """

    def __init__(
        self, split: InMemorySplit, batch_size: int, shuffle: bool, labels: bool = True
    ) -> None:
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.labels = labels  # training reads none: no gather of them per step

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        split = self.split
        n, device = len(split), split.images.device
        if self.shuffle:  # the device's generator: seeded, and resumed
            split = split.ordered(torch.randperm(n, device=device), labels=self.labels)
        for start in range(0, n, self.batch_size):
            yield split.rows(start, start + self.batch_size, labels=self.labels)
