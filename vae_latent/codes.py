"""A split's posterior, encoded once: what the latent metrics and pictures are computed from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


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

    def take(self, index: Tensor) -> Codes:
        return Codes(self.means[index], self.logvars[index], self.labels[index])


def kl_to_prior(mean: Tensor, logvar: Tensor) -> Tensor:
    """Closed-form KL(N(mean, exp(logvar)) || N(0, 1)), elementwise."""
    return 0.5 * (logvar.exp() + mean.square() - 1.0 - logvar)


@torch.inference_mode()
def encode_split(model: Any, split: Any, batch_size: int = 1000) -> Codes:
    """The posterior of a whole in-memory split under ``model`` (eval mode, no autograd).

    The results go into tensors allocated once: small per-batch outputs kept alive between
    the batches' large transient buffers would fragment the heap (hundreds of MB on a 55,000
    image split).
    """
    n, dim = len(split), model.hparams.latent_dim
    means, logvars = torch.empty(n, dim), torch.empty(n, dim)
    labels = torch.empty(n, dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        start = 0
        for x, y in split.batches(batch_size):
            mean, logvar = model.encode(x.to(model.device))
            end = start + len(x)
            means[start:end], logvars[start:end], labels[start:end] = mean, logvar, y
            start = end
    finally:
        model.train(was_training)
    return Codes(means[:start], logvars[:start], labels[:start])


class CodeBuffer:
    """The test loop's codes, written batch by batch into tensors allocated once."""

    def __init__(self, n: int, latent_dim: int, device: torch.device) -> None:
        self.means = torch.empty(n, latent_dim, device=device)
        self.logvars = torch.empty(n, latent_dim, device=device)
        self.labels = torch.empty(n, dtype=torch.long, device=device)
        self.filled = 0

    def add(self, means: Tensor, logvars: Tensor, labels: Tensor) -> None:
        end = self.filled + len(means)
        self.means[self.filled : end] = means
        self.logvars[self.filled : end] = logvars
        self.labels[self.filled : end] = labels
        self.filled = end

    def gather(self, module: Any, n: int) -> Codes:
        """The whole split's codes in order, on the CPU, also when DDP gave each rank a shard.

        DistributedSampler (no shuffle) deals index i to rank i % world_size and pads the shards
        to equal length, so interleaving the gathered shards restores the order.
        """
        parts = [t[: self.filled] for t in (self.means, self.logvars, self.labels)]
        if module.trainer.world_size > 1:
            parts = [module.all_gather(t).transpose(0, 1).flatten(0, 1)[:n] for t in parts]
        means, logvars, labels = parts
        return Codes(means.float().cpu(), logvars.float().cpu(), labels.cpu())
