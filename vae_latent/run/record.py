"""The run record, metrics.json: one builder for train and eval, one failure record, its status."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path
from typing import Any

from vae_latent.files import read_json, write_json
from vae_latent.run.keys import RUN_KEYS, from_config, from_objects

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
    """metrics.json marked failed, with the one-line reason (best effort: the disk may be full)."""
    record = {"status": "failed", "error": error}
    record |= {key.name: from_config(cfg, key) for key in RUN_KEYS}
    with contextlib.suppress(OSError):
        write_json(Path(run_dir, "metrics.json"), {**record, **progress})


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
    if status not in STATUSES:
        return "damaged", f"metrics.json has no known status ({status!r})"
    return status, str(record.get("error", ""))


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
