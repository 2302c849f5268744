"""Latent-space metrics: importance-weighted NLL, active units, KL per dim, probes, silhouette.

``score_test_set`` scores a tested model on its test split (``callbacks/tested_metrics.py`` calls
it at the end of every test); its parts are also used per epoch (``callbacks/latent_metrics.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from vae_latent.latent.codes import Codes, encode_split, evaluating
from vae_latent.model.elbo import log_likelihood, log_prior_ratio


@torch.inference_mode()
def iw_log_px(
    vae: Any,
    x: Tensor,
    k: int,
    generator: torch.Generator | None = None,
    chunk: int = 250,
    posterior: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Importance-weighted estimate of log p(x) per image with k posterior samples (Burda 2015).

    log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k; k=1 is the
    single-sample ELBO on the same draw, and the bound tightens as k grows. ``posterior`` is
    q(z|x)'s (mean, logvar) when already encoded.
    """
    mean, logvar = posterior if posterior is not None else vae.encode(x)
    mean, logvar = mean.to(x.device), logvar.to(x.device)
    eps = torch.randn(k, *mean.shape, generator=generator).to(mean)
    z = vae.reparameterize(mean, logvar, eps)  # (k, B, D)
    log_w = torch.empty(k, len(x), device=x.device)
    per = max(1, chunk // len(x))  # samples decoded at once, for bounded memory
    for s in range(0, k, per):
        zs = z[s : s + per]
        logits = vae.decode(zs.flatten(0, 1))
        xs = x.expand(len(zs), *x.shape).flatten(0, 1)
        log_px_z = log_likelihood(xs, logits, vae.likelihood).view(len(zs), len(x))
        log_w[s : s + per] = log_px_z - log_prior_ratio(zs, mean, logvar)
    return torch.logsumexp(log_w, dim=0) - math.log(k)


def iw_nll(
    vae: Any,
    images: Any,
    k: int = 1000,
    n_images: int = 1000,
    seed: int = 0,
    batch_size: int = 50,
    codes: Codes | None = None,
) -> tuple[float, float]:
    """Mean -log p(x) in nats per image over a seeded subset of ``images``, and its standard error.

    ``images`` is a tensor or an in-memory split (only the subset is converted to floats); the
    standard error is over the images (std of the per-image estimates / sqrt(n)). With
    ``codes`` (the test's posteriors), the subset is drawn from the images the test scored:
    the first ``len(codes)`` of the split (all of them unless the test was limited).
    """
    gen = torch.Generator().manual_seed(seed)
    scored = len(images) if codes is None else min(len(images), len(codes.means))
    index = torch.randperm(scored, generator=gen)[:n_images]
    log_px = torch.empty(len(index), dtype=torch.float64)  # allocated once (see encode_split)
    for start in range(0, len(index), batch_size):
        batch = index[start : start + batch_size]
        posterior = None
        if codes is not None:
            posterior = (codes.means[batch].to(vae.device), codes.logvars[batch].to(vae.device))
        x = images[batch] if isinstance(images, Tensor) else images.take(batch)[0]
        log_px[start : start + len(batch)] = iw_log_px(
            vae, x.to(vae.device), k, gen, posterior=posterior
        ).cpu()
    nll = -log_px
    se = nll.std().item() / math.sqrt(len(nll)) if len(nll) > 1 else float("nan")
    return nll.mean().item(), se


def active_units(means: Tensor, threshold: float = 0.01) -> int:
    """Dimensions whose posterior mean varies across the data: Cov_x(E_q[z|x]) > threshold."""
    return int((means.var(dim=0) > threshold).sum())


def probes(
    train_means: Tensor,
    train_labels: Tensor,
    test_means: Tensor,
    test_labels: Tensor,
    knn_k: int = 5,
    silhouette_sample: int | None = 2000,
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
    scores = {
        "linear_probe_acc": float(linear.score(xte, yte)),
        "knn_acc": float(knn.score(xte, yte)),
    }
    if silhouette_sample:
        sample = min(silhouette_sample, len(xte))
        scores["silhouette"] = float(
            silhouette_score(xte, yte, sample_size=sample, random_state=seed)
        )
    return scores


def score_test_set(
    vae: Any,
    splits: dict[str, Any],
    test_codes: Codes | None = None,
    iw_samples: int = 100,
    iw_images: int = 1000,
    knn_k: int = 5,
    silhouette_sample: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every latent metric of ``vae`` on ``splits["test"]`` (probes fit on ``splits["train"]``);
    ``test_codes``: the test split's posterior when a test already encoded it."""
    test, train = splits["test"], splits["train"]
    test_codes = test_codes or encode_split(vae, test)
    train_codes = encode_split(vae, train)
    nll = se = None
    if iw_samples > 0:
        with evaluating(vae):
            nll, se = iw_nll(vae, test, iw_samples, iw_images, seed, codes=test_codes)
    kl = test_codes.kl_per_dim()
    pixels = math.prod(test.images.shape[1:])
    return {
        "iw_nll": nll,
        "iw_nll_se": se,
        "bits_per_dim": None if nll is None else nll / (pixels * math.log(2)),
        "iw_samples": iw_samples,
        "iw_images": min(iw_images, len(test), len(test_codes.means)),
        "active_units": active_units(test_codes.means),
        "kl_per_dim": [round(v, 4) for v in kl.tolist()],
        **probes(
            train_codes.means,
            train_codes.labels,
            test_codes.means,
            test_codes.labels,
            knn_k,
            silhouette_sample,
            seed,
        ),
    }
