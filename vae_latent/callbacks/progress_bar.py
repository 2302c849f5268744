"""The progress bar, showing the training ELBO without reading the GPU after every batch."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from vae_latent.callbacks.non_finite_guard import NonFiniteGuard


class ProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar; its ``elbo`` is the last loss the divergence guard read on the host
    (every step on the CPU, once per logging interval on a GPU). A value logged with
    ``prog_bar=True`` would instead be read by Lightning after every batch: a host sync."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        guard = next((c for c in trainer.callbacks if isinstance(c, NonFiniteGuard)), None)
        if guard is not None and guard.last_read is not None and trainer.training:
            items["elbo"] = f"{-guard.last_read:.1f}"
        return items
