"""Random states in every checkpoint: a resumed run draws what the uninterrupted one drew."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

log = logging.getLogger("vae_latent")


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
        if not states or trainer.state.fn != "fit" or rng_states_problem(states):
            return  # a damaged state is refused before the fit (run/checkpoints.py)
        if states.get("torch") is not None:
            torch.set_rng_state(states["torch"])
        cuda = states.get("cuda")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            try:
                torch.cuda.set_rng_state_all(cuda)
            except RuntimeError as e:  # another GPU's generator layout: the seed's stays
                log.warning("CUDA random states not restored: %s", str(e).splitlines()[0])


def rng_states_problem(states: Any) -> str | None:
    """Why a checkpoint's ``rng_states`` is not what torch takes back, or None (absent is fine).

    Checked before a resume starts: torch would refuse a wrong state only mid-fit.
    """
    if states is None:
        return None
    if not isinstance(states, dict) or not set(states) <= {"torch", "cuda"}:
        return "is not a mapping of 'torch' and 'cuda' states"
    cpu = states.get("torch")
    if cpu is not None:
        if not _byte_vector(cpu):
            return "'torch' is not a byte tensor"
        try:
            torch.Generator().set_state(cpu)  # a throwaway generator: torch's own check
        except (RuntimeError, TypeError, ValueError):
            return "'torch' is not a CPU generator state (torch refuses it)"
    cuda = states.get("cuda")
    if cuda is not None and not (
        isinstance(cuda, (list, tuple)) and all(_byte_vector(s) for s in cuda)
    ):
        return "'cuda' is not a list of byte tensors"
    return None


def _byte_vector(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.ndim == 1
