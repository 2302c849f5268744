"""vae_latent: a convolutional VAE's latent space across datasets, channels and latent sizes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and Lightning load only when a model is asked for
    from pathlib import Path

    from vae_latent.model import ConvVAE

__version__ = "0.1.0"


def load(path: str | Path) -> ConvVAE:
    """A trained ConvVAE in eval mode from a checkpoint file alone (weights-only loading)."""
    from vae_latent.cli import check_checkpoint
    from vae_latent.model import ConvVAE

    check_checkpoint(path)
    return ConvVAE.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()
