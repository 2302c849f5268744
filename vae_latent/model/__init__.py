"""The VAE (a plain ``nn.Module``), its ELBO, and the LightningModule that trains it."""

from vae_latent.model.lit_vae import LitVAE
from vae_latent.model.vae import ConvVAE

__all__ = ["ConvVAE", "LitVAE"]
