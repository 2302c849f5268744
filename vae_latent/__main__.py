"""``python -m vae_latent``: the same Hydra app as the ``vae-latent`` command."""

from vae_latent.cli import train_main

if __name__ == "__main__":
    train_main()
