"""``interpolation.png``: decoded straight lines between class centroids."""

from __future__ import annotations

from typing import Any

import numpy as np

from vae_latent.callbacks.latent_picture import LatentPicture
from vae_latent.errors import ConfigError
from vae_latent.latent import pictures


class ClassInterpolation(LatentPicture):
    """Decoded straight lines between class centroids (of test-split means) in latent space."""

    name = "interpolation"

    def __init__(
        self, pairs: list[list[int]] | None = None, steps: int = 10, every_n_epochs: int = 0
    ) -> None:
        super().__init__(every_n_epochs)
        self.pairs, self.steps = pairs, steps

    def check_data(self, datamodule: Any, tested: int) -> None:
        n = len(datamodule.classes)
        for pair in self.pairs or []:
            if len(pair) != 2 or not all(isinstance(k, int) and 0 <= k < n for k in pair):
                raise ConfigError(
                    f"callbacks.interpolation.pairs: {list(pair)} is not a pair of class indices; "
                    f"each pair is two of 0 to {n - 1}, e.g. [[3, 8]]"
                )

    def draw(self, view: pictures.LatentView) -> np.ndarray:
        return pictures.interpolation(view, self.pairs, self.steps)
