"""``epochs/epoch_NNN.png`` after each validation and ``grid.png`` after a test."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from PIL import Image

from vae_latent.callbacks.outputs import (
    epoch_done,
    run_label,
    tested_step,
    tested_weights,
    write_picture,
)
from vae_latent.latent import pictures


class EpochGrid(L.Callback):
    """A fixed test batch, its reconstructions and fixed prior samples.

    After each validation: ``epochs/epoch_NNN.png``. After a test: ``grid.png``, from the
    tested weights. Reconstructions decode the posterior mean, so changes between epochs come
    from the model, not from sampling noise.
    """

    def __init__(self, n_images: int = 16, seed: int = 0, scale: int = 3) -> None:
        self.n_images, self.seed, self.scale = n_images, seed, scale

    def render(self, trainer: L.Trainer, pl_module: L.LightningModule, title: str) -> Image.Image:
        test = trainer.datamodule.splits["test"]
        return pictures.epoch_grid(pl_module.vae, test, self.n_images, self.seed, title, self.scale)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        epoch = epoch_done(trainer)
        # "|", not a dash: PIL's built-in font has no em dash.
        title = f"{run_label(trainer, pl_module)}  |  epoch {epoch}/{trainer.max_epochs}"
        name = getattr(trainer.datamodule, "val_name", "val")
        if (elbo := trainer.callback_metrics.get(f"{name}/elbo")) is not None:
            title += f"  |  {name} ELBO {float(elbo):.1f} nats"
        path = Path(trainer.default_root_dir, "epochs", f"epoch_{epoch:03d}.png")
        write_picture(trainer, path, "epoch_grid", self.render(trainer, pl_module, title), epoch)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        title = f"{run_label(trainer, pl_module)}  |  {tested_weights(trainer, pl_module)}"
        if (elbo := trainer.callback_metrics.get("test/elbo")) is not None:
            title += f"  |  test ELBO {float(elbo):.1f} nats"
        image = self.render(trainer, pl_module, title)
        path = Path(trainer.default_root_dir, "grid.png")
        write_picture(trainer, path, "tested_grid", image, tested_step(trainer, pl_module))
