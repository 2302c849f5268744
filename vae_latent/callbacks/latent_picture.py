"""The base of the latent pictures: drawn from the tested weights, and every N epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from vae_latent.callbacks.outputs import (
    epoch_done,
    run_label,
    tested_step,
    tested_weights,
    write_gif,
    write_picture,
)
from vae_latent.callbacks.tested_codes import last_test_codes
from vae_latent.latent import pictures
from vae_latent.latent.codes import Codes, encode_split


class LatentPicture(L.Callback):
    """``<name>.png`` after a test, from the tested weights and the test loop's codes; with
    ``every_n_epochs``, also ``latent/epoch_NNN_<name>.png`` after those epochs' validation.

    ``draw`` returns the picture, or (picture, animation frames) for a GIF beside it.
    """

    name = "latent"
    frame_ms = 150

    def __init__(self, every_n_epochs: int = 0) -> None:
        self.every_n_epochs = every_n_epochs

    def draw(self, view: pictures.LatentView) -> Any:
        raise NotImplementedError

    def _write(
        self, trainer: L.Trainer, pl_module: Any, codes: Codes, title: str, path: Path, step: int
    ) -> None:
        dm = trainer.datamodule
        view = pictures.LatentView(pl_module.vae, codes, dm.splits["test"], dm.classes, title)
        drawn = self.draw(view)
        if drawn is None:
            return
        image, frames = drawn if isinstance(drawn, tuple) else (drawn, None)
        write_picture(trainer, path, self.name, image, step)
        if frames is not None:
            write_gif(path.with_suffix(".gif"), frames, self.frame_ms)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        codes = last_test_codes(trainer)
        if not trainer.is_global_zero or codes is None:
            return
        title = f"{run_label(trainer, pl_module)} — {tested_weights(trainer, pl_module)}"
        path = Path(trainer.default_root_dir, f"{self.name}.png")
        self._write(trainer, pl_module, codes, title, path, tested_step(trainer, pl_module))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n, epoch = self.every_n_epochs, epoch_done(trainer)
        if not n or trainer.sanity_checking or epoch % n or not trainer.is_global_zero:
            return
        codes = encode_split(pl_module.vae, trainer.datamodule.splits["test"])
        title = f"{run_label(trainer, pl_module)} — epoch {epoch}"
        path = Path(trainer.default_root_dir, "latent", f"epoch_{epoch:03d}_{self.name}.png")
        self._write(trainer, pl_module, codes, title, path, epoch)
