"""``explorer.html``: a self-contained page to move through the tested model's latent space."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from vae_latent.callbacks.outputs import run_label, tested_weights
from vae_latent.callbacks.tested_codes import last_test_codes
from vae_latent.callbacks.tested_metrics import last_test_metrics
from vae_latent.data.datasets import tier
from vae_latent.files import save_atomic, shown
from vae_latent.latent.explorer import run_data
from vae_latent.latent.explorer_page import run_page

log = logging.getLogger("vae_latent")
SHOWN = ("test_elbo", "active_units", "linear_probe_acc", "knn_acc", "silhouette")


class Explorer(L.Callback):
    """After a test: the test means on a latent plane (pan, zoom, hover, click), and the decoded
    image under the cursor from dense grids decoded here, all in one page that opens from
    file:// with no network. ``max_points`` test points; ``grid`` points per axis of each
    decode grid and ``thumbnails`` default by image size (an MNIST page stays under 3 MB)."""

    def __init__(
        self, max_points: int = 2000, grid: int | None = None, thumbnails: int | None = None
    ) -> None:
        self.max_points, self.grid, self.thumbnails = max_points, grid, thumbnails

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        codes = last_test_codes(trainer)
        if not trainer.is_global_zero or codes is None:
            return
        dm = trainer.datamodule
        numbers = {"test_elbo": trainer.callback_metrics.get("test/elbo")}
        numbers |= last_test_metrics(trainer)
        title = f"{run_label(trainer, pl_module)} — {tested_weights(trainer, pl_module)}"
        data = run_data(
            pl_module.vae,
            lambda index: dm.splits["test"].take(index)[0],
            codes.means,
            codes.logvars,
            codes.labels,
            dm.classes,
            title,
            {k: numbers[k] for k in SHOWN if numbers.get(k) is not None},
            tier=tier(dm.name, dm.channels),
            grid=self.grid,
            max_points=self.max_points,
            thumbnails=self.thumbnails,
        )
        path = Path(trainer.default_root_dir, "explorer.html")
        save_atomic(path, run_page(data).encode())
        log.info("latent-space explorer: %s (open it in a browser)", shown(path))
