"""Latent-space metrics: importance-weighted NLL, active units, KL per dim, probes, silhouette."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from vae_latent.model import ConvVAE, kl_to_prior, log_likelihood, log_prior_ratio


@torch.inference_mode()
def iw_log_px(
    model: ConvVAE, x: Tensor, k: int, generator: torch.Generator | None = None, chunk: int = 250
) -> Tensor:
    """Importance-weighted estimate of log p(x) per image with k posterior samples (Burda 2015).

    log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k; k=1 is the
    single-sample ELBO on the same draw, and the bound tightens as k grows.
    """
    likelihood = model.hparams.likelihood
    mean, logvar = model.encode(x)
    eps = torch.randn(k, *mean.shape, generator=generator).to(mean)
    z = mean + torch.exp(0.5 * logvar) * eps  # (k, B, D)
    log_w = torch.empty(k, len(x), device=x.device)
    per = max(1, chunk // len(x))  # samples decoded at once, for bounded memory
    for s in range(0, k, per):
        zs = z[s : s + per]
        logits = model.decode(zs.flatten(0, 1))
        xs = x.expand(len(zs), *x.shape).flatten(0, 1)
        log_px_z = log_likelihood(xs, logits, likelihood).view(len(zs), len(x))
        log_w[s : s + per] = log_px_z - log_prior_ratio(zs, mean, logvar)
    return torch.logsumexp(log_w, dim=0) - math.log(k)


def iw_nll(
    model: ConvVAE,
    images: Tensor,
    k: int = 1000,
    n_images: int = 1000,
    seed: int = 0,
    batch_size: int = 50,
) -> float:
    """Mean -log p(x) in nats per image over a seeded subset of ``images``."""
    gen = torch.Generator().manual_seed(seed)
    subset = images[torch.randperm(len(images), generator=gen)[:n_images]]
    total = 0.0
    for batch in subset.split(batch_size):
        total += iw_log_px(model, batch.to(model.device), k, gen).sum().item()
    return -total / len(subset)


@torch.inference_mode()
def encode_split(
    model: ConvVAE, split: Any, batch_size: int = 1000
) -> tuple[Tensor, Tensor, Tensor]:
    """Posterior means, log-variances and labels of a whole in-memory split, on the CPU."""
    out = [(*model.encode(x.to(model.device)), y) for x, y in split.batches(batch_size)]
    return tuple(torch.cat([o[i].cpu() for o in out]) for i in range(3))


def active_units(means: Tensor, threshold: float = 0.01) -> int:
    """Dimensions whose posterior mean varies across the data: Cov_x(E_q[z|x]) > threshold."""
    return int((means.var(dim=0) > threshold).sum())


def kl_per_dim(means: Tensor, logvars: Tensor) -> Tensor:
    """Average closed-form KL(q(z_d|x) || N(0, 1)) over a split, per latent dimension."""
    return kl_to_prior(means, logvars).mean(0)


def probes(
    train_means: Tensor,
    train_labels: Tensor,
    test_means: Tensor,
    test_labels: Tensor,
    knn_k: int = 5,
    silhouette_sample: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """How linearly separable, locally consistent and clustered the classes are in mean space."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, ytr = train_means.numpy(), train_labels.numpy()
    xte, yte = test_means.numpy(), test_labels.numpy()
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(xtr, ytr)
    knn = KNeighborsClassifier(n_neighbors=knn_k).fit(xtr, ytr)
    sample = min(silhouette_sample, len(xte))
    return {
        "linear_probe_acc": float(linear.score(xte, yte)),
        "knn_acc": float(knn.score(xte, yte)),
        "silhouette": float(silhouette_score(xte, yte, sample_size=sample, random_state=seed)),
    }


def latent_metrics(
    model: ConvVAE,
    datamodule: Any,
    iw_samples: int = 1000,
    iw_images: int = 1000,
    knn_k: int = 5,
    silhouette_sample: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of a trained model on its datamodule's test split (probes fit on train)."""
    was_training = model.training
    model.eval()
    test, train = datamodule.splits["test"], datamodule.splits["train"]
    test_means, test_logvars, test_y = encode_split(model, test)
    train_means, _, train_y = encode_split(model, train)
    test_x = test.tensors()[0]
    nll = iw_nll(model, test_x, iw_samples, iw_images, seed) if iw_samples > 0 else None
    kl = kl_per_dim(test_means, test_logvars)
    model.train(was_training)
    return {
        "iw_nll": nll,
        "bits_per_dim": None if nll is None else nll / (test_x[0].numel() * math.log(2)),
        "iw_samples": iw_samples,
        "iw_images": min(iw_images, len(test_x)),
        "active_units": active_units(test_means),
        "kl_per_dim": [round(v, 4) for v in kl.tolist()],
        **probes(train_means, train_y, test_means, test_y, knn_k, silhouette_sample, seed),
    }
