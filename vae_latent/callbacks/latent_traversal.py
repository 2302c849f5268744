"""``latent_traversal.png`` and ``.gif``: the most informative dimensions swept one at a time."""

from __future__ import annotations

from typing import Any

import numpy as np

from vae_latent.callbacks.latent_picture import LatentPicture
from vae_latent.errors import ConfigError
from vae_latent.latent import pictures
from vae_latent.latent.pictures import TraversalRanges


class LatentTraversal(LatentPicture):
    """Each of the ``max_dims`` dimensions of highest KL swept around test image
    ``reference_index``'s code: the picture (a row per dimension) and its GIF."""

    name = "latent_traversal"

    def __init__(
        self,
        max_dims: int = 10,
        steps: int = 11,
        span: float = 3.0,
        reference_index: int = 0,
        ranges: TraversalRanges = "prior",
        frame_ms: int = 150,
        every_n_epochs: int = 0,
    ) -> None:
        super().__init__(every_n_epochs)
        self.max_dims, self.steps, self.span = max_dims, steps, span
        self.reference_index, self.ranges, self.frame_ms = reference_index, ranges, frame_ms

    def check_data(self, datamodule: Any, tested: int) -> None:
        n = len(datamodule.splits["test"])
        if not 0 <= self.reference_index < min(n, tested):
            scored = "" if tested >= n else f" and the test scores its first {tested:,}"
            raise ConfigError(
                f"callbacks.latent_traversal.reference_index={self.reference_index} but the test "
                f"split has {n:,} images{scored}; use 0 to {min(n, tested) - 1}"
            )

    def draw(self, view: pictures.LatentView) -> tuple[np.ndarray, np.ndarray]:
        return pictures.traversal(
            view, self.max_dims, self.steps, self.span, self.reference_index, self.ranges
        )
