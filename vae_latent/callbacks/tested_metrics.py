"""The latent-space metrics of the tested weights, scored at the end of every test."""

from __future__ import annotations

from typing import Any

import lightning as L

from vae_latent.callbacks.tested_codes import last_test_codes
from vae_latent.errors import ConfigError
from vae_latent.latent.metrics import score_test_set


class TestMetrics(L.Callback):
    """IW NLL, active units, KL per dimension, probes and silhouette of the tested weights.

    Built from ``conf/metrics/`` (``metrics.*``), run by the app before the pictures, so the
    explorer page can show them; ``results`` is what metrics.json records, and each number is
    logged as ``test/<name>``. Rank 0 scores.
    """

    # Named TestMetrics still: run folders' configs name it as ``_target_`` (conf/metrics/).
    __test__ = False  # not a pytest class

    def __init__(
        self,
        iw_samples: int = 100,
        iw_images: int = 1000,
        knn_k: int = 5,
        silhouette_sample: int = 2000,
        seed: int = 0,
    ) -> None:
        self.settings = {
            "iw_samples": iw_samples,
            "iw_images": iw_images,
            "knn_k": knn_k,
            "silhouette_sample": silhouette_sample,
            "seed": seed,
        }
        self.results: dict[str, Any] = {}

    def check_data(self, datamodule: Any, tested: int) -> None:
        """The probes fit on the training split and score the tested images: enough of each,
        of two classes or more."""
        knn_k = self.settings["knn_k"]
        check_probe_data(datamodule.splits["train"], "training split", knn_k + 1, "metrics.knn_k")
        check_probe_data(datamodule.splits["test"], "test split", 3, "the silhouette")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.results = {}
        if not trainer.is_global_zero:
            return
        splits = trainer.datamodule.splits
        self.results = score_test_set(
            pl_module.vae, splits, last_test_codes(trainer), **self.settings
        )
        if trainer.logger:
            scalars = {f"test/{k}": v for k, v in self.results.items() if _number(v)}
            step = pl_module.checkpoint_epoch or trainer.current_epoch
            trainer.logger.log_metrics(scalars, step)


def check_probe_data(split: Any, name: str, least: int, why: str) -> None:
    """A split the probes can fit or score: at least ``least`` images (``why`` needs them), of
    two classes or more (a linear probe, and a silhouette, need two)."""
    classes = len(split.labels.unique()) if len(split) else 0
    if len(split) < least or classes < 2:
        fix = "lower data.val_size" if name == "training split" else "check the test files"
        need = f"at least {least} images ({why})" if len(split) < least else "two classes"
        raise ConfigError(
            f"the {name} holds {len(split):,} images of {classes} class(es), but the latent "
            f"metrics' probes need {need}; {fix}"
        )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def last_test_metrics(trainer: L.Trainer) -> dict[str, Any]:
    """The last test's latent metrics ({} without a ``TestMetrics`` callback)."""
    found = (c for c in trainer.callbacks if isinstance(c, TestMetrics))
    return next((c.results for c in found), {})
