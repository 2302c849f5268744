"""One training run: lock its directory, validate, build, fit, test, score, record."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_latent.config import continuation_conflict, saved_config
from vae_latent.errors import ConfigError, Interrupted, UserError, user_error
from vae_latent.files import read_json, write_json
from vae_latent.record import record_failure, run_record, run_status
from vae_latent.rundir import RunDir, claimed
from vae_latent.schema import validate

log = logging.getLogger("vae_latent")


@dataclass
class Built:
    """What ``build`` makes from a config, and the callbacks the run reads back."""

    datamodule: Any
    model: Any
    trainer: Any
    checkpoint: Any  # ModelCheckpoint
    clock: Any  # RunClock


def build(cfg: DictConfig, out_dir: Path) -> Built:
    """Trainer first (a bad Trainer setting fails before any data is read), then data and model."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from vae_latent.callbacks import check_callbacks
    from vae_latent.checkpoint import AtomicCheckpointIO
    from vae_latent.loop import (
        NonFiniteGuard,
        RandomState,
        RunClock,
        keep_freed_heap,
        quiet_lightning,
        skip_idle_batch_hooks,
    )

    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    keep_freed_heap()

    checkpoint = instantiate(cfg.checkpoint, dirpath=str(out_dir / "checkpoints"))
    clock = RunClock()
    callbacks = [checkpoint, clock, NonFiniteGuard(), RandomState()]
    if cfg.trainer.get("enable_progress_bar", True) and cfg.get("progress_bar"):
        callbacks.append(instantiate(cfg.progress_bar))
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    logger = False
    if cfg.get("logger") and "_target_" in cfg.logger:
        logger = instantiate(cfg.logger, save_dir=str(out_dir))
    try:
        trainer = instantiate(
            cfg.trainer,
            logger=logger,
            callbacks=callbacks,
            default_root_dir=str(out_dir),
            plugins=[AtomicCheckpointIO()],
        )
    except MisconfigurationException as e:
        raise ConfigError(f"trainer: {str(e).splitlines()[0]}") from e
    skip_idle_batch_hooks(trainer.callbacks)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # read (or download) now: bad data fails before training starts
    datamodule.setup("fit")
    check_callbacks(trainer.callbacks, datamodule)
    model = instantiate(cfg.model, image_shape=datamodule.image_shape)
    return Built(datamodule, model, trainer, checkpoint, clock)


def train(
    cfg: DictConfig,
    out_dir: Path,
    resume: bool = False,
    hydra_files: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` in ``out_dir`` and return its record (metrics.json).

    ``resume`` continues the run in ``out_dir`` from ``checkpoints/last.ckpt`` (a complete run
    is left as it is). A run that already started there is not touched until the resumed one
    starts; nothing is written into a directory another process holds.
    """
    files = hydra_files or {"config.yaml": cfg}
    with claimed(Path(out_dir)) as run_dir:
        if run_dir.existing and not resume:
            raise UserError(
                f"{run_dir.path} already holds a run; continue it with resume=true (or "
                f"resume={run_dir.path}), or choose another hydra.run.dir"
            )
        if not run_dir.existing:  # a new run: its config and log come first, as Hydra's would
            run_dir.start(files)
        validate(cfg)
        if run_dir.existing and (done := _check_continuation(cfg, run_dir.path)) is not None:
            return done
        return _fit_and_score(cfg, run_dir, resume, files)


def _check_continuation(cfg: DictConfig, out_dir: Path) -> dict[str, Any] | None:
    """Refuse a resume the checkpoint cannot continue; a complete run's record if it is done."""
    saved = saved_config(out_dir)
    if saved is None:
        raise ConfigError(
            f"resume: {out_dir} is not a run directory (no .hydra/config.yaml); pass the folder "
            "that holds checkpoints/ and .hydra/ of an earlier run"
        )
    conflict = continuation_conflict(saved, cfg)
    if conflict:
        raise ConfigError(f"resume: {conflict}")
    status, _ = run_status(out_dir)
    if status == "complete":
        record = read_json(out_dir / "metrics.json")
        if not _trains_further(saved, cfg, record):
            print(f"{out_dir} is complete (metrics.json): nothing to train", flush=True)
            return record
    return None


def _trains_further(saved: DictConfig, cfg: DictConfig, record: dict[str, Any]) -> bool:
    """Whether ``cfg`` lets a complete run train past where its own config stopped it (not its
    epochs: a run ended by early stopping or ``max_steps`` is complete under the same command)."""

    def limit(c: DictConfig, key: str, default: Any = None) -> float:
        value = OmegaConf.select(c, f"trainer.{key}", default=default)
        return math.inf if value is None or value == -1 else float(value)

    before = limit(saved, "max_epochs", record.get("epochs"))
    return limit(cfg, "max_epochs") > before or limit(cfg, "max_steps") > limit(saved, "max_steps")


def _fit_and_score(
    cfg: DictConfig, run_dir: RunDir, resume: bool, files: dict[str, Any]
) -> dict[str, Any]:
    from vae_latent.checkpoint import check_checkpoint

    out_dir = run_dir.path
    last = out_dir / "checkpoints" / "last.ckpt"
    resume_from = str(last) if resume and last.is_file() else None
    if resume_from:
        _check_hparams(check_checkpoint(last), cfg, last)
    run = build(cfg, out_dir)
    trainer = run.trainer
    if run_dir.existing:  # the resumed run starts now: its config and log are updated
        run_dir.start(files)
    if trainer.logger:  # hparams.yaml now; the metric comes with them at the end
        trainer.logger.log_hyperparams(run_hparams(cfg))
    try:
        return _fit_test_record(cfg, out_dir, run, resume_from)
    except BaseException as e:
        signal_name, cause = _interruption(e), user_error(e)
        where = f"epoch {trainer.current_epoch + 1}, step {trainer.global_step}"
        error = f"interrupted ({signal_name}) at {where}" if signal_name else None
        if trainer.is_global_zero:
            record_failure(
                out_dir,
                cfg,
                error or (str(cause) if cause else f"{type(e).__name__}: {e}"),
                status="incomplete" if signal_name else "failed",
                epochs=trainer.current_epoch,
                global_steps=trainer.global_step,
            )
        if signal_name:
            code = 143 if signal_name == "SIGTERM" else 130  # 128 + the signal, as shells do
            raise Interrupted(f"{error}; continue with resume={out_dir}", code) from e
        raise


def _interruption(e: BaseException) -> str | None:
    """'Ctrl-C' or 'SIGTERM' if ``e`` is how Lightning (or Python) reports one, else None."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(e, SIGTERMException):  # Lightning's SIGTERM handler stops its loops
        return "SIGTERM"
    # Lightning turns Ctrl-C inside fit/test into sys.exit(1), raised while handling it.
    if isinstance(e, KeyboardInterrupt) or (
        isinstance(e, SystemExit) and isinstance(e.__context__, KeyboardInterrupt)
    ):
        return "Ctrl-C"
    return None


def _check_hparams(ckpt: dict[str, Any], cfg: DictConfig, path: Path) -> None:
    """The checkpoint's own hyperparameters against the config (an edited .hydra/ included)."""
    hparams = ckpt["hyper_parameters"]
    for key in ("latent_dim", "kl", "likelihood"):
        if key in hparams and hparams[key] != cfg.model[key]:
            raise ConfigError(
                f"resume: model.{key}={cfg.model[key]} but {path.name} was trained with "
                f"{hparams[key]}; start a new run in another hydra.run.dir instead"
            )


def _fit_test_record(
    cfg: DictConfig, out_dir: Path, run: Built, resume_from: str | None
) -> dict[str, Any]:
    from vae_latent.metrics import latent_metrics

    datamodule, model, trainer, checkpoint = run.datamodule, run.model, run.trainer, run.checkpoint
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    fit_seconds = time.perf_counter() - start
    # The study's protocol reports the last epoch's weights; otherwise the best by val ELBO.
    # The path goes explicitly (it works after a resume); Lightning loads it into `model`, and
    # the pictures (test-end callbacks) and the latent metrics below score the same weights.
    tested = checkpoint.last_model_path if datamodule.protocol == "study" else None
    tested = tested or checkpoint.best_model_path or checkpoint.last_model_path
    (test,) = trainer.test(
        model, datamodule=datamodule, ckpt_path=tested or None, verbose=False, weights_only=True
    )
    device = trainer.strategy.root_device
    latent = {}
    if trainer.is_global_zero:
        model.to(device)  # Lightning moved it to the CPU at the end of test
        latent = latent_metrics(model, datamodule, model.test_codes, **cfg.metrics)
    post_fit_seconds = time.perf_counter() - start - fit_seconds
    clock = run.clock
    images = clock.images * trainer.world_size
    record = run_record(
        model,
        datamodule,
        trainer,
        test,
        latent,
        seed=cfg.seed,
        checkpoint_epoch=model.checkpoint_epoch,
        batch_size=datamodule.batch_size,
        epochs=trainer.current_epoch,
        global_steps=trainer.global_step,
        best_val_elbo=_float(checkpoint.best_model_score),
        test_checkpoint=os.path.relpath(tested, out_dir) if tested else None,
        train_seconds=clock.seconds,
        train_images=images,  # over all processes (DDP ranks see equal shards)
        images_per_second=images / clock.seconds if clock.seconds else None,
        world_size=trainer.world_size,
        fit_seconds=fit_seconds,
        post_fit_seconds=post_fit_seconds,
        step=model.step_used,
    )
    if not trainer.is_global_zero:
        return record  # DDP: rank 0 writes
    if trainer.logger:
        log_final(trainer.logger, cfg, record, latent, trainer.global_step)
    write_json(out_dir / "metrics.json", record)
    log.info(
        "test ELBO %.2f nats (recon %.2f, KL %.2f); %.0f images/s; run dir %s",
        record["test_elbo"],
        record["test_recon"],
        record["test_kl"],
        record["images_per_second"] or 0.0,
        out_dir,
    )
    return record


def run_hparams(cfg: DictConfig) -> dict[str, Any]:
    """What the HPARAMS tab compares runs by."""
    data, model = cfg.data, cfg.model
    return {
        "dataset": data.name,
        "channels": data.channels,
        "latent_dim": model.latent_dim,
        "lr": model.lr,
        "batch_size": data.batch_size,
        "kl": model.kl,
        "likelihood": model.likelihood,
        "seed": cfg.seed,
    }


def log_final_scalars(logger: Any, latent: dict[str, Any], step: int) -> None:
    """The latent metrics as ``test/<name>`` scalars."""
    scalars = {f"test/{k}": v for k, v in latent.items() if isinstance(v, (int, float))}
    logger.log_metrics(scalars, step)


def log_final(
    logger: Any, cfg: DictConfig, record: dict[str, Any], latent: dict[str, Any], step: int
) -> None:
    """Latent metrics as scalars; hparams with the final metric (the HPARAMS tab needs both)."""
    log_final_scalars(logger, latent, step)
    logger.log_hyperparams(run_hparams(cfg), {"hp/test_elbo": record["test_elbo"]})
    logger.finalize("success")


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
