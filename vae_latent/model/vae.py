"""The study's convolutional VAE as a plain ``nn.Module``: encode, reparameterize, decode, ELBO."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

from vae_latent.model.elbo import KLEstimator, Likelihood, elbo_terms, pixel_distribution

# How the weights start (model.init): keras is the study's own model (Keras's defaults: glorot-
# uniform kernels, zero biases); torch is PyTorch's layer defaults (kaiming-uniform(a=√5)
# weights, uniform biases in ±1/√fan_in).
Init = Literal["keras", "torch"]
INITS: tuple[str, ...] = get_args(Init)

# log-variance is clamped here: exp(logvar) stays finite in float32 (docs/numerics.md).
LOGVAR_RANGE = (-30.0, 20.0)


def keras_init(module: nn.Module) -> None:
    """Keras's default initialisation: glorot-uniform kernels (±√(6 / (fan_in + fan_out))), zero
    biases. Keras computes fans from its own kernel layouts, which for a transposed conv swap
    fan_in and fan_out against PyTorch's; their sum, all the bound depends on, is the same."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def _blocks(conv: type[nn.Module], c: int, depth: int) -> list[nn.Module]:
    """``depth`` extra stride-1 3x3 "same" blocks of ``c`` channels (model.depth; 0: none)."""
    return [m for _ in range(depth) for m in (conv(c, c, 3, stride=1, padding=1), nn.ReLU())]


def encoder(
    channels: int, height: int, width: int, latent_dim: int, scale: int = 1, depth: int = 0
) -> nn.Sequential:
    """Two stride-2 valid convs (32, 64 channels, times ``scale``), ``depth`` extra blocks after
    each, and a dense layer to mean and log-variance."""
    h, w = height, width
    for _ in range(2):  # 3x3 kernel, stride 2, no padding
        h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    c1, c2 = 32 * scale, 64 * scale
    return nn.Sequential(
        nn.Conv2d(channels, c1, 3, stride=2),
        nn.ReLU(),
        *_blocks(nn.Conv2d, c1, depth),
        nn.Conv2d(c1, c2, 3, stride=2),
        nn.ReLU(),
        *_blocks(nn.Conv2d, c2, depth),
        nn.Flatten(),
        nn.Linear(c2 * h * w, 2 * latent_dim),
    )


def decoder(
    channels: int, height: int, width: int, latent_dim: int, scale: int = 1, depth: int = 0
) -> nn.Sequential:
    """Dense to (32, H/4, W/4), two stride-2 "same" transposed convs (64, 32), one to logits;
    channels times ``scale``, ``depth`` extra transposed-conv blocks after each stride-2 one."""
    h, w = height // 4, width // 4
    c0, c1, c2 = 32 * scale, 64 * scale, 32 * scale
    # padding=1 + output_padding=1 makes a stride-2 transposed conv exactly double the size,
    # which is what Keras calls padding="same".
    return nn.Sequential(
        nn.Linear(latent_dim, c0 * h * w),
        nn.ReLU(),
        nn.Unflatten(1, (c0, h, w)),
        nn.ConvTranspose2d(c0, c1, 3, stride=2, padding=1, output_padding=1),
        nn.ReLU(),
        *_blocks(nn.ConvTranspose2d, c1, depth),
        nn.ConvTranspose2d(c1, c2, 3, stride=2, padding=1, output_padding=1),
        nn.ReLU(),
        *_blocks(nn.ConvTranspose2d, c2, depth),
        nn.ConvTranspose2d(c2, channels, 3, stride=1, padding=1),
    )


class ConvVAE(nn.Module):
    """q(z|x) = N(mean, diag(exp(logvar))) from the encoder; p(x|z) from the decoder's logits.

    ``width`` multiplies every conv's channels and ``depth`` adds stride-1 blocks per stage;
    the defaults (1, 0) are the study's model exactly. ``init``: ``keras`` starts where the
    seed's Keras model does (``keras_init``), ``torch`` from PyTorch's layer defaults.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] | list[int] = (1, 28, 28),
        latent_dim: int = 2,
        likelihood: Likelihood = "bernoulli",
        kl: KLEstimator = "mc",
        init: Init = "keras",
        width: int = 1,
        depth: int = 0,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.latent_dim, self.likelihood, self.kl = int(latent_dim), likelihood, kl
        self.encoder = encoder(*self.image_shape, self.latent_dim, width, depth)
        self.decoder = decoder(*self.image_shape, self.latent_dim, width, depth)
        if init == "keras":
            keras_init(self)
        elif init != "torch":
            raise ValueError(f"unknown init {init!r}; use one of {', '.join(INITS)}")
        # NHWC convolutions: oneDNN's fast path on CPU; the same numbers.
        self.to(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x)."""
        mean, logvar = self.encoder(x.contiguous(memory_format=torch.channels_last)).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    @staticmethod
    def noise(like: Tensor) -> Tensor:
        """The reparameterization's N(0, I) draw, shaped like ``like``: every ELBO path draws
        here (the fused CPU step too), so a seed gives the same noise on each."""
        return torch.randn_like(like)

    @staticmethod
    def reparameterize(mean: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
        """z = mean + sigma * eps (fresh N(0, I) draws unless given): differentiable in both."""
        eps = ConvVAE.noise(mean) if eps is None else eps
        return mean + torch.exp(0.5 * logvar) * eps

    def decode(self, z: Tensor) -> Tensor:
        """The logits of p(x|z)."""
        return self.decoder(z)

    def mean_image(self, z: Tensor) -> Tensor:
        """The mean of p(x|z), an image in [0, 1] (sigmoid of the logits for the Bernoulli)."""
        if self.likelihood == "bernoulli":
            return torch.sigmoid(self.decoder(z))
        return pixel_distribution(self.decoder(z), self.likelihood).mean

    @torch.no_grad()
    def sample(
        self, n_or_eps: int | Tensor = 16, generator: torch.Generator | None = None
    ) -> Tensor:
        """Decode prior draws (``n`` fresh ones, or the given ``eps``) to images in [0, 1]."""
        if isinstance(n_or_eps, int):
            n_or_eps = torch.randn(n_or_eps, self.latent_dim, generator=generator)
        return self.mean_image(n_or_eps.to(self.device, next(self.parameters()).dtype))

    def elbo(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-image reconstruction NLL and KL term (one Monte Carlo z), and q(z|x)'s parameters."""
        mean, logvar = self.encode(x)
        z = self.reparameterize(mean, logvar)
        recon, kl_term = elbo_terms(x, self.decoder(z), z, mean, logvar, self.kl, self.likelihood)
        return recon, kl_term, mean, logvar

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-image reconstruction NLL and KL term for a batch: the loss is their mean sum."""
        return self.elbo(x)[:2]
