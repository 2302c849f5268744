"""The ELBO in nats per image: the likelihoods, the KL term (single-sample or closed form)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import ContinuousBernoulli

from vae_latent.codes import kl_to_prior


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
