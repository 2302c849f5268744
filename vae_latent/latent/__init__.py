"""The latent space of a trained VAE: posterior codes, metrics, pictures and their drawing."""
