"""The Hydra app: compose, validate, build from config, fit, test the best checkpoint."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from vae_latent.errors import ConfigError, UserError

log = logging.getLogger("vae_latent")


def _conf_dir() -> str:
    """conf/ inside an installed wheel, else the repo's top-level conf/ (editable install)."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if packaged.is_dir() else here.parent / "conf")


def validate(cfg: DictConfig) -> None:
    """Reject values that cannot train, before anything is built or read."""
    checks = {
        "model.latent_dim": cfg.model.latent_dim,
        "data.batch_size": cfg.data.batch_size,
        "trainer.max_epochs": cfg.trainer.max_epochs,
    }
    for key, value in checks.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{key}={value!r} must be a positive integer")
    lr = cfg.model.lr
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not 0 < lr < float("inf"):
        raise ConfigError(f"model.lr={lr!r} must be a positive number, e.g. model.lr=1e-4")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write through a temp file and rename, so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def train(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Build everything from ``cfg``, fit, test the best checkpoint; returns metrics.json's dict."""
    validate(cfg)
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from vae_latent.callbacks import RunClock

    # lightning/__init__ adds its own console handler; Hydra's root handlers (console + the
    # run's log file) already print everything once.
    logging.getLogger("lightning").handlers.clear()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")  # Lightning vs new torch
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # read (or download) now: bad data fails before training starts
    datamodule.setup("fit")
    model = instantiate(cfg.model, image_shape=datamodule.image_shape)

    logger = False
    if cfg.get("logger") and "_target_" in cfg.logger:
        logger = instantiate(cfg.logger, save_dir=str(out_dir))
        logger.log_hyperparams(_hparams(cfg))
    checkpoint = instantiate(cfg.checkpoint, dirpath=str(out_dir / "checkpoints"))
    clock = RunClock()
    extra = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    trainer = instantiate(
        cfg.trainer,
        logger=logger,
        callbacks=[checkpoint, clock, *extra],
        default_root_dir=str(out_dir),
    )

    fit_start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - fit_start

    # Test the best-by-val-ELBO weights; pass the path explicitly (works after a resume too).
    ckpt = checkpoint.best_model_path or checkpoint.last_model_path
    (test,) = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt or None, verbose=False)
    metrics = {
        "status": "complete",
        "dataset": datamodule.name,
        "channels": datamodule.channels,
        "image_shape": list(datamodule.image_shape),
        "latent_dim": model.hparams.latent_dim,
        "kl": model.hparams.kl,
        "lr": model.hparams.lr,
        "batch_size": datamodule.batch_size,
        "binarize": datamodule.binarize,
        "seed": cfg.seed,
        "epochs": trainer.current_epoch,
        "global_steps": trainer.global_step,
        "params": sum(p.numel() for p in model.parameters()),
        "test_elbo": test["test/elbo"],
        "test_recon": test["test/recon"],
        "test_kl": test["test/kl"],
        "best_val_elbo": _float(checkpoint.best_model_score),
        "test_checkpoint": os.path.relpath(ckpt, out_dir) if ckpt else None,
        "train_seconds": clock.seconds,
        "train_images": clock.images,
        "images_per_second": clock.images / clock.seconds if clock.seconds else None,
        "fit_seconds": fit_seconds,
        "accelerator": type(trainer.accelerator).__name__.replace("Accelerator", "").lower(),
        "torch_threads": torch.get_num_threads(),
    }
    write_json(out_dir / "metrics.json", metrics)
    log.info(
        "test ELBO %.2f nats (recon %.2f, KL %.2f); %.0f images/s; run dir %s",
        metrics["test_elbo"],
        metrics["test_recon"],
        metrics["test_kl"],
        metrics["images_per_second"] or 0.0,
        out_dir,
    )
    return metrics


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings as plain values; the logger flattens the nesting."""
    return OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, ["data", "model", "trainer", "seed"]), resolve=True
    )


def user_error(e: BaseException) -> UserError | None:
    """The UserError behind ``e``, if any (``instantiate`` wraps what constructors raise)."""
    while e is not None and not isinstance(e, UserError):
        e = e.__cause__ or e.__context__
    return e


_failed: list[str] = []  # job directories of a multirun whose job failed


@hydra.main(config_path=_conf_dir(), config_name="train", version_base="1.3")
def _train_app(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    try:
        train(cfg, out_dir)
    except Exception as e:
        cause = user_error(e)
        if cause is None:
            raise
        message = f"vae-latent: error: {cause}"
        if hc.mode != RunMode.MULTIRUN:
            print(message, file=sys.stderr)
            sys.exit(2)
        # In a sweep, one bad combination fails its own job; the others still run.
        log.error(message)
        (out_dir / "error.txt").write_text(message + "\n")
        _failed.append(str(out_dir))


def train_main() -> None:
    """Console entry point ``vae-latent``; exits non-zero if any job of a multirun failed."""
    _train_app()
    if _failed:
        print(f"vae-latent: {len(_failed)} job(s) failed: {', '.join(_failed)}", file=sys.stderr)
        sys.exit(1)
