"""A split's posterior, encoded once: what the latent metrics and pictures are computed from."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vae_latent.model.elbo import kl_to_prior


@dataclass(frozen=True)
class Codes:
    """Posterior means and log-variances of q(z|x) and the class labels of a split, on the CPU."""

    means: Tensor
    logvars: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.means)

    def kl_per_dim(self) -> Tensor:
        """Average closed-form KL(q(z_d|x) || N(0, 1)) over the split, per latent dimension."""
        return kl_to_prior(self.means, self.logvars).mean(0)


@contextlib.contextmanager
def evaluating(module: Any) -> Iterator[None]:
    """Eval mode and no autograd inside; the module's mode is restored on the way out."""
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        module.train(was_training)


def encode_split(
    vae: Any, split: Any, batch_size: int = 1000, index: Tensor | None = None
) -> Codes:
    """The posterior of an in-memory split (or of its images at ``index``) under ``vae``.

    Eval mode, no autograd. The results go into tensors allocated once: small per-batch outputs
    kept alive between the batches' large transient buffers would fragment the heap (hundreds
    of MB on a 55,000 image split).
    """
    index = torch.arange(len(split)) if index is None else index
    n, dim = len(index), vae.latent_dim
    means, logvars = torch.empty(n, dim), torch.empty(n, dim)
    labels = torch.empty(n, dtype=torch.long)
    with evaluating(vae):
        for start in range(0, n, batch_size):
            x, y = split.take(index[start : start + batch_size])
            mean, logvar = vae.encode(x.to(vae.device))
            end = start + len(x)
            means[start:end], logvars[start:end], labels[start:end] = mean, logvar, y
    return Codes(means, logvars, labels)
