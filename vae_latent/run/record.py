"""The run record, metrics.json: one builder for train and eval, one failure record, its status."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path
from typing import Any

from vae_latent.files import read_json, write_json
from vae_latent.run.keys import RUN_KEYS, from_config, from_objects
from vae_latent.text import user_line

STATUSES = ("complete", "failed", "incomplete")


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
    """metrics.json of a complete run: what was scored (the run keys, as the objects hold them),
    the scores, and what produced them."""
    import torch

    hparams = {
        "data": dict(datamodule.hparams),
        "model": dict(model.hparams),
        "trainer": {"max_epochs": extra.pop("max_epochs", None)},
    }
    return {
        "status": "complete",
        **{key.name: from_objects(key, hparams, seed) for key in RUN_KEYS},
        "image_shape": list(datamodule.image_shape),
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
    """metrics.json marked failed, with the one-line reason (best effort: the disk may be full).

    The run's last complete record, if it had one (a complete run trained further, then stopped
    or failed), is kept under ``previous``: a failed continuation never loses it.
    """
    record = {"status": "failed", "error": user_line(error)}
    record |= {key.name: from_config(cfg, key) for key in RUN_KEYS}
    previous = last_complete(read_record(run_dir)[2])
    with contextlib.suppress(OSError):
        kept = {"previous": previous} if previous else {}
        write_json(Path(run_dir, "metrics.json"), {**record, **progress, **kept})


def read_record(run_dir: Path) -> tuple[str, str, dict[str, Any] | None]:
    """(status, error, record) of a run from its metrics.json, read once: complete, failed,
    incomplete or damaged (a file that is not a regular one, too large, or not a record)."""
    path = Path(run_dir, "metrics.json")
    if not path.exists():
        return "incomplete", "no metrics.json (stopped early?)", None
    try:
        record = read_json(path)
    except (OSError, ValueError) as e:
        return "damaged", str(e), None
    status = record.get("status")
    if status not in STATUSES:
        return "damaged", f"metrics.json has no known status ({status!r})", None
    return status, str(record.get("error", "")), record


def run_status(run_dir: Path) -> tuple[str, str]:
    """(status, error) of a run from its metrics.json (``read_record``)."""
    return read_record(run_dir)[:2]


def last_complete(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last complete record in ``record``: itself, or the one it keeps under ``previous``."""
    if record is None:
        return None
    if record.get("status") == "complete":
        return record
    previous = record.get("previous")
    return previous if isinstance(previous, dict) and previous.get("status") == "complete" else None


def versions() -> dict[str, str]:
    """What produced a number: Python and the libraries that shape the results."""
    from importlib.metadata import version

    dists = {
        "torch": "torch",
        "torchvision": "torchvision",
        "lightning": "lightning",
        "hydra": "hydra-core",
        "numpy": "numpy",
        "scikit-learn": "scikit-learn",
    }
    return {"python": platform.python_version(), **{k: version(d) for k, d in dists.items()}}


def device_name(device: Any) -> str:
    """The GPU's name for a CUDA device, else the CPU model from /proc/cpuinfo."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
