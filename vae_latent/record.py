"""The run record, metrics.json: one builder for train and eval, one failure record, its status."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from vae_latent.files import read_json, versions, write_json

# Keys of every complete record, train or eval; each app adds its own (TRAIN_KEYS, EVAL_KEYS).
SHARED_KEYS = (
    "status",
    "dataset",
    "channels",
    "protocol",
    "binarize",
    "image_shape",
    "latent_dim",
    "kl",
    "likelihood",
    "lr",
    "seed",
    "params",
    "checkpoint_epoch",
    "test_elbo",
    "test_recon",
    "test_kl",
    "iw_nll",
    "iw_nll_se",
    "bits_per_dim",
    "iw_samples",
    "iw_images",
    "active_units",
    "kl_per_dim",
    "linear_probe_acc",
    "knn_acc",
    "silhouette",
    "accelerator",
    "device",
    "torch_threads",
    "versions",
)
TRAIN_KEYS = (
    "batch_size",
    "epochs",
    "global_steps",
    "best_val_elbo",
    "test_checkpoint",
    "train_seconds",
    "train_images",
    "images_per_second",
    "world_size",
    "fit_seconds",
    "post_fit_seconds",
    "step",
)
EVAL_KEYS = ("checkpoint", "trained_on", "same_data_as_training", "seconds")


def run_record(
    model: Any,
    datamodule: Any,
    trainer: Any,
    test: dict[str, float],
    latent: dict[str, Any],
    *,
    seed: int,
    checkpoint_epoch: int,
    **extra: Any,
) -> dict[str, Any]:
    """metrics.json of a complete run: what was scored, the scores, and what produced them."""
    import torch

    from vae_latent.files import device_name

    hp = model.hparams
    return {
        "status": "complete",
        "dataset": datamodule.name,
        "channels": datamodule.channels,
        "protocol": datamodule.protocol,
        "binarize": datamodule.binarize,
        "image_shape": list(datamodule.image_shape),
        "latent_dim": hp.latent_dim,
        "kl": hp.kl,
        "likelihood": hp.likelihood,
        "lr": hp.lr,
        "seed": seed,
        "params": sum(p.numel() for p in model.parameters()),
        "checkpoint_epoch": checkpoint_epoch,
        "test_elbo": test["test/elbo"],
        "test_recon": test["test/recon"],
        "test_kl": test["test/kl"],
        **latent,
        "accelerator": type(trainer.accelerator).__name__.replace("Accelerator", "").lower(),
        "device": device_name(trainer.strategy.root_device),  # the GPU's name on CUDA
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
        **extra,
    }


def record_failure(run_dir: Path, cfg: Any, error: str, **progress: Any) -> None:
    """metrics.json marked failed, with the one-line reason (best effort: the disk may be full)."""
    from omegaconf import OmegaConf

    def get(key: str) -> Any:
        return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)

    record = {
        "status": "failed",
        "error": error,
        "dataset": get("data.name"),
        "channels": get("data.channels"),
        "latent_dim": get("model.latent_dim"),
        "seed": get("seed"),
        **progress,
    }
    with contextlib.suppress(OSError):
        write_json(Path(run_dir, "metrics.json"), record)


def run_status(run_dir: Path) -> tuple[str, str]:
    """(status, error) of a run from its metrics.json: complete, failed, incomplete or damaged."""
    path = Path(run_dir, "metrics.json")
    if not path.is_file():
        return "incomplete", "no metrics.json (stopped early?)"
    try:
        record = read_json(path)
    except (OSError, ValueError) as e:
        return "damaged", str(e)
    status = record.get("status")
    if status not in ("complete", "failed", "incomplete"):
        return "damaged", f"metrics.json has no known status ({status!r})"
    return status, str(record.get("error", ""))
