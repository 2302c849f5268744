"""``training.gif``: the epoch grids in order, one frame each, looping."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from vae_latent.callbacks.outputs import write_gif
from vae_latent.files import read_image
from vae_latent.latent import drawing


class TrainingGif(L.Callback):
    """At fit end: ``training.gif`` from ``epochs/epoch_*.png`` (written by ``EpochGrid``)."""

    def __init__(self, duration_ms: int = 600) -> None:
        self.duration_ms = duration_ms

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        frames = sorted(Path(trainer.default_root_dir, "epochs").glob("epoch_*.png"))
        if not trainer.is_global_zero or not frames:
            return
        # A title can widen one epoch's grid ("epoch 10/10", "-100.2"): pad, do not stack.
        stack = drawing.same_size([read_image(f) for f in frames])
        write_gif(Path(trainer.default_root_dir, "training.gif"), stack, self.duration_ms)
