"""The study's conv VAE as a LightningModule: encoder, decoder, ELBO, encode/decode/sample."""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import ContinuousBernoulli

from vae_latent.codes import Codes, kl_to_prior
from vae_latent.errors import ConfigError

KL_ESTIMATORS = ("mc", "analytic")
KL_MODES = KL_ESTIMATORS  # the config key is model.kl
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


def log_normal(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mean, exp(logvar)) summed over the last dimension."""
    return -0.5 * ((z - mean).square() * torch.exp(-logvar) + logvar + math.log(2 * math.pi)).sum(
        -1
    )


def log_prior_ratio(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log q(z|x) - log p(z) per image at the sampled z: the study's single-sample KL."""
    return log_normal(z, mean, logvar) - log_normal(z, torch.zeros_like(z), torch.zeros_like(z))


def elbo_terms(
    x: Tensor,
    logits: Tensor,
    z: Tensor,
    mean: Tensor,
    logvar: Tensor,
    kl: str = "mc",
    likelihood: str = "bernoulli",
) -> tuple[Tensor, Tensor]:
    """Per-image reconstruction NLL and KL term in nats; the ELBO is ``-(recon + kl_term)``.

    recon = -log p(x|z); the KL term is log q(z|x) - log p(z) at the sampled z (``kl="mc"``, the
    study's estimator) or the closed form (``kl="analytic"``).
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
        if kl not in KL_ESTIMATORS:
            raise ConfigError(f"model.kl={kl!r} is unknown; use one of {', '.join(KL_ESTIMATORS)}")
        if likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"model.likelihood={likelihood!r} is unknown; use one of {', '.join(LIKELIHOODS)}"
            )
        # Plain ints/floats/strings only: checkpoints must load with weights_only=True.
        image_shape = tuple(int(s) for s in image_shape)
        # The app logs the run's hyperparameters once, with the test metric (logger=False here).
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
        # NHWC convolutions: oneDNN's fast path on CPU; the same numbers.
        self.to(memory_format=torch.channels_last)
        # Per split, this epoch's per-image (recon, kl_term) of every batch, detached.
        self._epoch_terms: dict[str, list[tuple[Tensor, Tensor]]] = {}
        self._test_codes: list[tuple[Tensor, Tensor, Tensor]] = []
        self.test_codes: Codes | None = None  # the test split's posterior, from the last test
        self.checkpoint_epoch: int | None = None  # epochs trained by the checkpoint last loaded

    # --- the API the pictures and metrics use -------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x)."""
        mean, logvar = self.encoder(x.contiguous(memory_format=torch.channels_last)).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    @staticmethod
    def reparameterize(mean: Tensor, logvar: Tensor) -> Tensor:
        """z = mean + sigma * eps, differentiable in mean and logvar."""
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)

    def decode(self, z: Tensor, apply_sigmoid: bool | None = None) -> Tensor:
        """Logits of p(x|z). (``apply_sigmoid=True`` is the old spelling of ``mean_image``.)"""
        if apply_sigmoid is not None:
            warnings.warn(
                "decode(z, apply_sigmoid=True) is deprecated: use mean_image(z)",
                DeprecationWarning,
                stacklevel=2,
            )
            if apply_sigmoid:
                return self.mean_image(z)
        return self.decoder(z)

    def mean_image(self, z: Tensor) -> Tensor:
        """The mean of p(x|z), an image in [0, 1]: sigmoid(logits) for the Bernoulli."""
        logits = self.decoder(z)
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
        return self.mean_image(eps.to(self.device, self.dtype))

    def elbo(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-image reconstruction NLL and KL term (one Monte Carlo z), and q(z|x)'s parameters."""
        mean, logvar = self.encode(x)
        z = self.reparameterize(mean, logvar)
        hp = self.hparams
        recon, kl_term = elbo_terms(x, self.decoder(z), z, mean, logvar, hp.kl, hp.likelihood)
        return recon, kl_term, mean, logvar

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-image reconstruction NLL and KL term for a batch (one Monte Carlo sample of z)."""
        return self.elbo(x)[:2]

    # --- Lightning -----------------------------------------------------------------------
    # Epoch means are kept on the device and logged once per epoch (no `self.log` or `.item()`
    # per step: each costs host time, and `.item()` syncs a GPU). A step keeps detached views of
    # its per-image terms, reduced at epoch end; the training ELBO per step is logged only at
    # the logger's interval.
    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        recon, kl_term, mean, logvar = self.elbo(batch[0])
        self.last_step = (recon.detach(), kl_term.detach())  # read when the loss is not finite
        self._epoch_terms.setdefault(split, []).append(self.last_step)
        if split == "test":
            self._test_codes.append((mean.detach(), logvar.detach(), batch[1]))
        return (recon + kl_term).mean()

    def _log_epoch(self, split: str) -> None:
        terms = self._epoch_terms.pop(split, None)
        if not terms:
            return
        recon, kl_term = (torch.cat(t).mean() for t in zip(*terms, strict=True))
        # The study's protocol scores the test split in the validation loop: logged as test/*.
        name = getattr(self.trainer.datamodule, "val_name", "val") if split == "val" else split
        self.log_dict(
            {f"{name}/elbo": -(recon + kl_term), f"{name}/recon": recon, f"{name}/kl": kl_term},
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

    def on_test_epoch_start(self) -> None:
        self._test_codes, self.test_codes = [], None

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        self.test_codes = self._gather_codes(
            self._test_codes, len(self.trainer.datamodule.splits["test"])
        )
        self._test_codes = []

    def _gather_codes(self, parts: list[tuple[Tensor, Tensor, Tensor]], n: int) -> Codes:
        """The whole test split's codes in order, also when DDP gave each rank a shard.

        DistributedSampler (no shuffle) deals index i to rank i % world_size and pads the shards
        to equal length, so interleaving the gathered shards restores the order.
        """
        means, logvars, labels = (torch.cat([p[i] for p in parts]) for i in range(3))
        if self.trainer.world_size > 1:
            means, logvars, labels = (
                self.all_gather(t).transpose(0, 1).flatten(0, 1)[:n]
                for t in (means, logvars, labels)
            )
        return Codes(means.float().cpu(), logvars.float().cpu(), labels.cpu())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Which epoch the weights are from: pictures and metrics.json say so.
        self.checkpoint_epoch = int(checkpoint.get("epoch", -1)) + 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
