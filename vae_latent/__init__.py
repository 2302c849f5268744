"""vae_latent: a convolutional VAE's latent space across datasets, channels and latent sizes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and Lightning load only when a model is asked for
    from pathlib import Path

    from vae_latent.model.vae import ConvVAE

__version__ = "0.1.0"


def load(path: str | Path) -> ConvVAE:
    """A trained ConvVAE in eval mode from a checkpoint file alone (weights-only, checked)."""
    from vae_latent.run.checkpoints import load as load_checkpoint

    return load_checkpoint(path)
