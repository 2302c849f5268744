"""``latent_metrics.csv``: the latent metrics of fixed subsets of images, every N epochs.

Active units, KL per dimension, linear-probe and kNN accuracy, computed the same way as the
test-set metrics (``latent/metrics.py``) but on fixed subsets, so that the curve is cheap and
its points are comparable from epoch to epoch. Rank 0 writes the CSV and logs ``latent/*``.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from vae_latent.callbacks.tested_metrics import check_probe_data
from vae_latent.errors import DataError
from vae_latent.files import read_csv_floats, save_atomic
from vae_latent.latent.codes import Codes, encode_split
from vae_latent.latent.metrics import active_units, probes

COLUMNS = ["epoch", "step", "seconds", "active_units", "kl_total", "linear_probe_acc", "knn_acc"]


class LatentMetricsLog(L.Callback):
    """Every ``every_n_epochs`` epochs: the latent metrics of ``images`` fixed train/test images."""

    def __init__(self, every_n_epochs: int = 1, images: int = 2000, seed: int = 0) -> None:
        self.every_n_epochs, self.images, self.seed = every_n_epochs, images, seed
        self.rows: list[dict[str, float]] = []

    def _path(self, trainer: L.Trainer) -> Path:
        return Path(trainer.default_root_dir, "latent_metrics.csv")

    def check_data(self, datamodule: Any, tested: int) -> None:
        """Its probes (a 5-NN among them) fit on the training split."""
        check_probe_data(datamodule.splits["train"], "training split", 6, "the 5-NN per epoch")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The subsets (seeded)."""
        gen = torch.Generator().manual_seed(self.seed)
        splits = trainer.datamodule.splits
        self.subsets = {
            name: torch.randperm(len(splits[name]), generator=gen)[: self.images]
            for name in ("train", "test")
        }

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A resumed run's earlier rows up to its restored epoch (restored after on_fit_start)."""
        self.rows = []
        path = self._path(trainer)
        if path.exists():  # resume: keep what the restored epochs logged, drop the rest
            try:
                rows = read_csv_floats(path)
            except (OSError, ValueError) as e:
                raise DataError(
                    f"resume: {path} cannot be read ({e}); move it out of the run to start its "
                    "rows afresh"
                ) from e
            self.rows = [r for r in rows if r.get("epoch", 0) <= trainer.current_epoch]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if not self.every_n_epochs or epoch % self.every_n_epochs or not trainer.is_global_zero:
            return
        start = time.perf_counter()
        splits, vae = trainer.datamodule.splits, pl_module.vae
        test = encode_split(vae, splits["test"], self.images, self.subsets["test"])
        train = encode_split(vae, splits["train"], self.images, self.subsets["train"])
        row = {"epoch": epoch, "step": trainer.global_step, **self.score(train, test)}
        row["seconds"] = time.perf_counter() - start
        self.rows.append(row)
        if trainer.logger:
            scalars = {f"latent/{k}": v for k, v in row.items() if k not in ("epoch", "step")}
            trainer.logger.log_metrics(scalars, step=trainer.global_step)
        save_atomic(self._path(trainer), _csv(self.rows).encode())

    @staticmethod
    def score(train: Codes, test: Codes) -> dict[str, float]:
        """The metrics of one epoch (no silhouette: the least stable on a subset)."""
        kl = test.kl_per_dim()
        found = probes(train.means, train.labels, test.means, test.labels, silhouette_sample=None)
        return {
            "active_units": active_units(test.means),
            "kl_total": float(kl.sum()),
            **found,
            **{f"kl_z{d + 1}": float(v) for d, v in enumerate(kl.tolist())},
        }


def _csv(rows: list[dict[str, float]]) -> str:
    kl_columns = sorted(
        {k for r in rows for k in r if k.startswith("kl_z")}, key=lambda k: int(k[4:])
    )
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS + kl_columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {k: (int(v) if k in ("epoch", "step", "active_units") else v) for k, v in r.items()}
        )
    return out.getvalue()
