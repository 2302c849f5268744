"""Random states in every checkpoint: a resumed run draws what the uninterrupted one drew."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class RandomState(L.Callback):
    """The random states in every checkpoint, restored when a fit resumes from one.

    A resumed run then draws the batch order and the ELBO's noise that the uninterrupted run
    drew (Lightning's checkpoints hold no random state). Testing a checkpoint keeps the seed's.
    """

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng_states"] = states

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get("rng_states")
        if not states or trainer.state.fn != "fit":
            return
        torch.set_rng_state(states["torch"])
        cuda = states.get("cuda")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
