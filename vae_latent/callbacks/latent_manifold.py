"""``latent_manifold.png``: the decoded 2-D latent manifold (latent 2 only)."""

from __future__ import annotations

import numpy as np

from vae_latent.callbacks.latent_picture import LatentPicture
from vae_latent.latent import pictures
from vae_latent.latent.pictures import ManifoldGrid


class LatentManifold(LatentPicture):
    """The decoded manifold over the study's grid (``prior``), where the data lives
    (``posterior``), or both side by side."""

    name = "latent_manifold"

    def __init__(
        self, size: int = 20, grid: ManifoldGrid = "both", every_n_epochs: int = 0
    ) -> None:
        super().__init__(every_n_epochs)
        self.size, self.grid = size, grid

    def draw(self, view: pictures.LatentView) -> np.ndarray | None:
        return pictures.manifold(view, self.size, self.grid)
