"""The study's conv VAE as a LightningModule: encoder, decoder, ELBO, encode/decode/sample."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import ContinuousBernoulli, Normal, kl_divergence

from vae_latent.errors import ConfigError

KL_MODES = ("mc", "analytic")
LIKELIHOODS = ("bernoulli", "continuous_bernoulli")
# log-variance is clamped here: exp(logvar) stays finite in float32 (see README, Numerics).
LOGVAR_RANGE = (-30.0, 20.0)


def encoder(channels: int, height: int, width: int, latent_dim: int) -> nn.Sequential:
    """Two stride-2 valid convs (32, 64) and a dense layer to mean and log-variance."""
    h, w = height, width
    for _ in range(2):  # 3x3 kernel, stride 2, no padding
        h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, stride=2),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * h * w, 2 * latent_dim),
    )


def decoder(channels: int, height: int, width: int, latent_dim: int) -> nn.Sequential:
    """Dense to (32, H/4, W/4), two stride-2 "same" transposed convs (64, 32), one to logits."""
    h, w = height // 4, width // 4
    # padding=1 + output_padding=1 makes a stride-2 transposed conv exactly double the size,
    # which is what Keras calls padding="same".
    return nn.Sequential(
        nn.Linear(latent_dim, 32 * h * w),
        nn.ReLU(),
        nn.Unflatten(1, (32, h, w)),
        nn.ConvTranspose2d(32, 64, 3, stride=2, padding=1, output_padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(32, channels, 3, stride=1, padding=1),
    )


def log_likelihood(x: Tensor, logits: Tensor, likelihood: str = "bernoulli") -> Tensor:
    """log p(x|z) per image, summed over pixels, in nats.

    ``bernoulli`` (the study's): minus BCE-with-logits; a normalized density only for binary x.
    ``continuous_bernoulli``: normalized on [0, 1] (Loaiza-Ganem & Cunningham, 2019).
    """
    if likelihood == "continuous_bernoulli":
        return ContinuousBernoulli(logits=logits, validate_args=False).log_prob(x).flatten(1).sum(1)
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def posterior(mean: Tensor, logvar: Tensor) -> Normal:
    """q(z|x) as a diagonal Normal."""
    return Normal(mean, torch.exp(0.5 * logvar), validate_args=False)


def kl_to_prior(mean: Tensor, logvar: Tensor) -> Tensor:
    """Closed-form KL(q(z|x) || N(0, I)) per latent dimension (same shape as ``mean``)."""
    return kl_divergence(posterior(mean, logvar), Normal(0.0, 1.0))


def log_prior_ratio(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log q(z|x) - log p(z) per image at the sampled z: the study's single-sample KL."""
    p = Normal(torch.zeros_like(mean), torch.ones_like(mean), validate_args=False)
    return (posterior(mean, logvar).log_prob(z) - p.log_prob(z)).sum(-1)


def elbo_terms(
    x: Tensor,
    logits: Tensor,
    z: Tensor,
    mean: Tensor,
    logvar: Tensor,
    kl: str = "mc",
    likelihood: str = "bernoulli",
) -> tuple[Tensor, Tensor]:
    """Per-image reconstruction NLL and KL in nats; the ELBO is ``-(recon + kl)``.

    recon = -log p(x|z); kl = log q(z|x) - log p(z) at the sampled z ("mc", the study's
    estimator) or the closed form ("analytic").
    """
    recon = -log_likelihood(x, logits, likelihood)
    if kl == "analytic":
        return recon, kl_to_prior(mean, logvar).sum(1)
    return recon, log_prior_ratio(z, mean, logvar)


class ConvVAE(L.LightningModule):
    """The study's CVAE; logs ELBO, reconstruction and KL (nats per image) per split."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] | list[int] = (1, 28, 28),
        latent_dim: int = 2,
        lr: float = 1e-4,
        kl: str = "mc",
        likelihood: str = "bernoulli",
    ) -> None:
        super().__init__()
        if kl not in KL_MODES:
            raise ConfigError(f"model.kl={kl!r} is unknown; use one of {', '.join(KL_MODES)}")
        if likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"model.likelihood={likelihood!r} is unknown; use one of {', '.join(LIKELIHOODS)}"
            )
        # Plain ints/floats/strings only: checkpoints must load with weights_only=True.
        image_shape = tuple(int(s) for s in image_shape)
        # The CLI logs the run's hyperparameters once, with the test metric (logger=False here).
        self.save_hyperparameters(
            {
                "image_shape": image_shape,
                "latent_dim": int(latent_dim),
                "lr": float(lr),
                "kl": kl,
                "likelihood": likelihood,
            },
            logger=False,
        )
        self.encoder = encoder(*image_shape, latent_dim)
        self.decoder = decoder(*image_shape, latent_dim)
        # NHWC convolutions: about 2x faster evaluation on CPU here (oneDNN), same numbers.
        self.to(memory_format=torch.channels_last)
        # Per split, this epoch's per-image (recon, kl) of every batch, detached.
        self._terms: dict[str, list[tuple[Tensor, Tensor]]] = {}

    # --- the API the callbacks and metrics use -------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x)."""
        mean, logvar = self.encoder(x.contiguous(memory_format=torch.channels_last)).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    @staticmethod
    def reparameterize(mean: Tensor, logvar: Tensor) -> Tensor:
        """z = mean + sigma * eps, differentiable in mean and logvar."""
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)

    def decode(self, z: Tensor, apply_sigmoid: bool = False) -> Tensor:
        """Logits of p(x|z), or with ``apply_sigmoid`` its mean image in [0, 1].

        For the Bernoulli the mean is sigmoid(logits); the continuous Bernoulli's mean differs.
        """
        logits = self.decoder(z)
        if not apply_sigmoid:
            return logits
        if self.hparams.likelihood == "continuous_bernoulli":
            return ContinuousBernoulli(logits=logits, validate_args=False).mean
        return torch.sigmoid(logits)

    @torch.no_grad()
    def sample(
        self, n_or_eps: int | Tensor = 16, generator: torch.Generator | None = None
    ) -> Tensor:
        """Decode prior draws (``n`` fresh ones, or the given ``eps``) to images in [0, 1]."""
        if isinstance(n_or_eps, int):
            eps = torch.randn(n_or_eps, self.hparams.latent_dim, generator=generator)
        else:
            eps = n_or_eps
        return self.decode(eps.to(self.device, self.dtype), apply_sigmoid=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-image reconstruction NLL and KL for a batch (one Monte Carlo sample of z)."""
        mean, logvar = self.encode(x)
        z = self.reparameterize(mean, logvar)
        hp = self.hparams
        return elbo_terms(x, self.decode(z), z, mean, logvar, hp.kl, hp.likelihood)

    # --- Lightning -----------------------------------------------------------------------
    # Epoch means are kept on the device and logged once per epoch: a `self.log` call costs
    # ~0.7 ms of host time on a 2-core CPU (~5% of a batch-32 step each), and `.item()` per step
    # would sync the GPU. A step keeps detached views of its per-image terms, reduced at epoch
    # end: no kernel launches beyond the plain loss (summing per step took 5 more).
    # Step-level training ELBO is logged only at the logger's interval.
    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        recon, kl = self(batch[0])
        self.last_step = (recon.detach(), kl.detach())  # read only when the loss is not finite
        self._terms.setdefault(split, []).append(self.last_step)
        return (recon + kl).mean()

    def _log_epoch(self, split: str) -> None:
        terms = self._terms.pop(split, None)
        if not terms:
            return
        recon, kl = (torch.cat(t).mean() for t in zip(*terms, strict=True))
        self.log_dict(
            {f"{split}/elbo": -(recon + kl), f"{split}/recon": recon, f"{split}/kl": kl},
            prog_bar=split == "val",
            sync_dist=True,
        )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log("train/elbo_step", -loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
