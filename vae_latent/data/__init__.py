"""The datasets, their in-memory splits and the LightningDataModule that serves them."""

from vae_latent.data.datamodule import VAEDataModule
from vae_latent.data.datasets import DATASETS, TIERS

__all__ = ["DATASETS", "TIERS", "VAEDataModule"]
