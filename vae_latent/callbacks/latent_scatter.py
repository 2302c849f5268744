"""``latent_scatter.png``: the test split's posterior means by class."""

from __future__ import annotations

import numpy as np

from vae_latent.callbacks.latent_picture import LatentPicture
from vae_latent.latent import pictures


class LatentScatter(LatentPicture):
    """Test-split posterior means by class: the 2-D latent itself, or its top two PCs."""

    name = "latent_scatter"

    def draw(self, view: pictures.LatentView) -> np.ndarray:
        return pictures.scatter(view)
