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
    """The posterior of a whole in-memory split under ``model`` (eval mode, no autograd)."""
    was_training = model.training
    model.eval()
    try:
        out = [(*model.encode(x.to(model.device)), y) for x, y in split.batches(batch_size)]
    finally:
        model.train(was_training)
    means, logvars, labels = (torch.cat([o[i].float().cpu() for o in out]) for i in range(3))
    return Codes(means, logvars, labels)
