"""Stop a run whose loss became NaN/inf or diverged, before a bad epoch is checkpointed."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from vae_latent.errors import NonFiniteLoss


class NonFiniteGuard(L.Callback):
    """Stop at once when the training loss is NaN/inf or has diverged past ``max_loss`` nats.

    The logvar clamp keeps a diverging model finite (lr=1e3 reaches ~1e33 nats, not inf), so
    a loss no image could have counts too. The loss is read on the host every step on CPU
    (free) and on the logged batches on an accelerator (no sync in between); the epoch's sums are
    read before every validation and at epoch end, so a loss that went bad between two reads
    stops the run before ModelCheckpoint saves. The weights at the stop (those of the last
    update; with ``model.step=fused`` the bad step's own update) become checkpoints/last.ckpt
    only if no earlier last.ckpt exists and they are finite.
    """

    def __init__(self, max_loss: float = 1e10, every_step_on_cpu: bool = True) -> None:
        self.max_loss, self.every_step_on_cpu = max_loss, every_step_on_cpu
        self.last_read: float | None = None  # the last loss read on the host (progress bar)

    def _bad(self, value: float) -> bool:
        return not math.isfinite(value) or abs(value) > self.max_loss

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        every_step = self.every_step_on_cpu and pl_module.device.type == "cpu"
        # Otherwise on the batches Lightning logs: one host read per logging interval.
        if not every_step and (trainer.global_step + 1) % trainer.log_every_n_steps:
            return
        value = self.last_read = float(loss.detach())
        if self._bad(value):
            self._stop(trainer, pl_module, value, *pl_module.last_step_means())

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._check_epoch(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_epoch(trainer, pl_module)  # runs before ModelCheckpoint's (Lightning's order)

    def _check_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        means = pl_module.epoch_means()
        if means is not None and self._bad(sum(means)):
            self._stop(trainer, pl_module, sum(means), *means)

    def _stop(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        value: float,
        recon: float,
        kl: float,
    ) -> None:
        last = Path(trainer.default_root_dir, "checkpoints", "last.ckpt")
        if not last.is_file() and all(torch.isfinite(p).all() for p in pl_module.parameters()):
            trainer.save_checkpoint(last)
        why = "NaN/inf" if not math.isfinite(value) else f"diverged past {self.max_loss:.0e} nats"
        kept = f"kept {last}" if last.is_file() else "no usable checkpoint"
        raise NonFiniteLoss(
            f"non-finite loss at epoch {trainer.current_epoch + 1}, step {trainer.global_step} "
            f"({why}): reconstruction {recon:.4g}, KL {kl:.4g} nats per image; {kept}; "
            "lower model.lr or check the data"
        )
