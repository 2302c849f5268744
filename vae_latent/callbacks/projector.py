"""TensorBoard's Embedding Projector: the test split's latent means with class labels."""

from __future__ import annotations

import lightning as L

from vae_latent.callbacks.outputs import tensorboard, tested_step
from vae_latent.callbacks.tested_codes import last_test_codes
from vae_latent.latent import pictures


class TensorBoardProjector(L.Callback):
    """After a test: the test split's latent means, labels and thumbnails in the PROJECTOR tab."""

    def __init__(self, max_points: int = 2_000) -> None:
        self.max_points = max_points  # the sprite sheet of thumbnails dominates the cost

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer, codes = tensorboard(trainer), last_test_codes(trainer)
        if writer is None or not trainer.is_global_zero or codes is None:
            return
        dm = trainer.datamodule
        view = pictures.LatentView(pl_module.vae, codes, dm.splits["test"], dm.classes, "")
        pictures.projector(writer, view, self.max_points, tested_step(trainer, pl_module))
