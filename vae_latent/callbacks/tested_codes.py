"""The test split's posterior, captured by the test loop itself for the pictures and metrics."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from vae_latent.latent.codes import Codes


class TestCodes(L.Callback):
    """Keeps each test batch's posterior means and log-variances (``test_step``'s outputs).

    After a test, ``codes`` holds the whole split's codes in order, on the CPU: the latent
    pictures and metrics reuse them instead of encoding the test split again.
    """

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.codes: Codes | None = None
        self._parts: tuple[Tensor, Tensor, Tensor] | None = None
        self._filled = 0

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.codes, self._parts, self._filled = None, None, 0
        splits = getattr(trainer.datamodule, "splits", {})
        if "test" in splits:  # room for this rank's share (DistributedSampler pads evenly)
            # Tensors allocated once: per-batch outputs kept in a list fragment the heap.
            n = -(-len(splits["test"]) // trainer.world_size)
            dim, device = pl_module.hparams.latent_dim, pl_module.device
            self._parts = (
                torch.empty(n, dim, device=device),
                torch.empty(n, dim, device=device),
                torch.empty(n, dtype=torch.long, device=device),
            )

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._parts is None or not isinstance(outputs, dict):
            return
        end = self._filled + len(batch[1])
        for part, value in zip(
            self._parts, (outputs["mean"], outputs["logvar"], batch[1]), strict=True
        ):
            part[self._filled : end] = value
        self._filled = end

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The whole split in order, also when DDP gave each rank a shard.

        DistributedSampler (no shuffle) deals index i to rank i % world_size and pads the shards
        to equal length, so interleaving the gathered shards restores the order.
        """
        if self._parts is None:
            return
        n = len(trainer.datamodule.splits["test"])
        parts = [t[: self._filled] for t in self._parts]
        if trainer.world_size > 1:
            parts = [pl_module.all_gather(t).transpose(0, 1).flatten(0, 1)[:n] for t in parts]
        means, logvars, labels = parts
        self.codes = Codes(means.float().cpu(), logvars.float().cpu(), labels.cpu())
        self._parts = None


def last_test_codes(trainer: L.Trainer) -> Codes | None:
    """The codes the last test captured (None without a ``TestCodes`` callback, or before)."""
    found = (c for c in trainer.callbacks if isinstance(c, TestCodes))
    return next((c.codes for c in found), None)
