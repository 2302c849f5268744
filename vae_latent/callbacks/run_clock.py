"""Time spent in training batches and images seen: ``train_seconds`` in metrics.json."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class RunClock(L.Callback):
    """Time spent in training batches (validation excluded) and images seen, for metrics.json."""

    def __init__(self) -> None:
        self.seconds, self.images = 0.0, 0
        self._start: float | None = None

    def _sync(self, trainer: L.Trainer) -> None:
        # Only at epoch/validation boundaries: CUDA work is asynchronous, so wait for it there.
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def _resume(self, trainer: L.Trainer) -> None:
        self._sync(trainer)
        self._start = time.perf_counter()

    def _pause(self, trainer: L.Trainer) -> None:
        if self._start is not None:
            self._sync(trainer)
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:  # first batch of an epoch, or after a validation inside one
            self._resume(trainer)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.images += len(batch[0])  # a shape, read on the host: no device sync

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(trainer)
