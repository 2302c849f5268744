"""vae_latent: a convolutional VAE's latent space across datasets, channels and latent sizes."""

__version__ = "0.1.0"
