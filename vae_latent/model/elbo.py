"""The ELBO in nats per image, from torch.distributions: likelihoods, posterior, prior, KL."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor
from torch.distributions import Bernoulli, ContinuousBernoulli, Distribution, Normal, kl_divergence

# The choices of model.likelihood and model.kl (the validator reads them from the signatures).
Likelihood = Literal["bernoulli", "continuous_bernoulli"]
KLEstimator = Literal["mc", "analytic"]
LIKELIHOODS: tuple[str, ...] = get_args(Likelihood)
KL_ESTIMATORS: tuple[str, ...] = get_args(KLEstimator)


def pixel_distribution(logits: Tensor, likelihood: str = "bernoulli") -> Distribution:
    """p(x|z) per pixel. ``bernoulli`` (the study's) is a normalized density only for binary x;
    ``continuous_bernoulli`` is normalized on [0, 1] (Loaiza-Ganem & Cunningham, 2019)."""
    if likelihood == "continuous_bernoulli":
        return ContinuousBernoulli(logits=logits, validate_args=False)
    if likelihood == "bernoulli":
        return Bernoulli(logits=logits, validate_args=False)
    raise ValueError(f"unknown likelihood {likelihood!r}; use one of {', '.join(LIKELIHOODS)}")


def log_likelihood(x: Tensor, logits: Tensor, likelihood: str = "bernoulli") -> Tensor:
    """log p(x|z) per image, summed over pixels, in nats (Bernoulli: minus BCE with logits)."""
    return pixel_distribution(logits, likelihood).log_prob(x).flatten(1).sum(1)


def posterior(mean: Tensor, logvar: Tensor) -> Normal:
    """q(z|x) = N(mean, diag(exp(logvar)))."""
    return Normal(mean, torch.exp(0.5 * logvar), validate_args=False)


def prior_log_prob(z: Tensor) -> Tensor:
    """log p(z) under N(0, I), summed over the last dimension."""
    return Normal(0.0, 1.0, validate_args=False).log_prob(z).sum(-1)


def log_prior_ratio(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log q(z|x) - log p(z) at the sampled z: the study's single-sample KL estimate."""
    return posterior(mean, logvar).log_prob(z).sum(-1) - prior_log_prob(z)


def kl_to_prior(mean: Tensor, logvar: Tensor) -> Tensor:
    """Closed-form KL(q(z|x) || N(0, I)) per latent dimension."""
    return kl_divergence(posterior(mean, logvar), Normal(0.0, 1.0, validate_args=False))


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

    The KL term is log q(z|x) - log p(z) at the sampled z (``mc``, the study's estimator) or the
    closed form (``analytic``).
    """
    recon = -log_likelihood(x, logits, likelihood)
    if kl == "analytic":
        return recon, kl_to_prior(mean, logvar).sum(1)
    if kl == "mc":
        return recon, log_prior_ratio(z, mean, logvar)
    raise ValueError(f"unknown KL estimator {kl!r}; use one of {', '.join(KL_ESTIMATORS)}")
