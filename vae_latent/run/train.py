"""One training run: lock its directory, validate, build, fit, test, score, record."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vae_latent.errors import ConfigError, Interrupted, UserError, user_error
from vae_latent.files import write_json
from vae_latent.run import resume as resuming
from vae_latent.run.build import Built, build
from vae_latent.run.keys import from_config, hparam_keys
from vae_latent.run.record import record_failure, run_record
from vae_latent.run.rundir import RunDir, claimed
from vae_latent.run.validate import validate

log = logging.getLogger("vae_latent")


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
        if run_dir.existing and (done := resuming.check_continuation(cfg, run_dir.root)):
            return done
        return _fit_and_score(cfg, run_dir, resume, files)


def _fit_and_score(
    cfg: DictConfig, run_dir: RunDir, resume: bool, files: dict[str, Any]
) -> dict[str, Any]:
    from vae_latent.run.checkpoints import read_checkpoint

    out_dir = run_dir.root  # the held directory: every file of the run goes through it
    last = out_dir / "checkpoints" / "last.ckpt"
    resume_from = str(last) if resume and last.is_file() else None
    checked = read_checkpoint(last, resume=True) if resume_from else None  # before any data
    if checked is not None:
        resuming.check_checkpoint_hparams(checked, cfg, last)
    run = build(cfg, out_dir)
    if checked is not None:  # read once: Lightning restores from the contents checked
        run.trainer.strategy.checkpoint_io.checked[resume_from] = checked
    trainer = run.trainer
    if run_dir.existing and run_dir.writer:  # the resumed run starts now
        resuming.mark_resumed(out_dir)  # stale temp files cleaned first
        run_dir.start(files)  # its config and log are updated
    if trainer.logger:  # hparams.yaml now; the metric comes with them at the end
        trainer.logger.log_hyperparams(run_hparams(cfg))
    try:
        return _fit_test_record(cfg, out_dir, run, resume_from, run_dir.path)
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
            raise Interrupted(f"{error}; continue with resume={run_dir.path}", code) from e
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


def _fit_test_record(
    cfg: DictConfig, out_dir: Path, run: Built, resume_from: str | None, name: Path
) -> dict[str, Any]:
    from vae_latent.callbacks.tested_metrics import last_test_metrics

    datamodule, model, trainer = run.datamodule, run.model, run.trainer
    checkpoint = trainer.checkpoint_callback
    start = time.perf_counter()
    # Lightning loads checkpoints through AtomicCheckpointIO: read once, weights-only, checked.
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    if trainer.global_step == 0:
        raise ConfigError(
            "the fit trained no step (trainer limits or a checkpoint that already ended there); "
            "check trainer.max_epochs, trainer.max_steps and trainer.limit_train_batches"
        )
    fit_seconds = time.perf_counter() - start
    # The study's protocol reports the last epoch's weights; otherwise the best by val ELBO.
    # The path goes explicitly (it works after a resume); Lightning loads it into `model`, and
    # the pictures (test-end callbacks) and the latent metrics below score the same weights.
    tested = checkpoint.last_model_path if datamodule.protocol == "study" else None
    tested = tested or checkpoint.best_model_path or checkpoint.last_model_path
    (test,) = trainer.test(model, datamodule=datamodule, ckpt_path=tested or None, verbose=False)
    latent = last_test_metrics(trainer)  # scored at the end of the test (rank 0)
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
        max_epochs=trainer.max_epochs,
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
    if trainer.logger:  # hparams with the final metric (the HPARAMS tab needs both)
        trainer.logger.log_hyperparams(run_hparams(cfg), {"hp/test_elbo": record["test_elbo"]})
        trainer.logger.finalize("success")
    write_json(out_dir / "metrics.json", record)
    log.info(
        "test ELBO %.2f nats (recon %.2f, KL %.2f); %.0f images/s; run dir %s",
        record["test_elbo"],
        record["test_recon"],
        record["test_kl"],
        record["images_per_second"] or 0.0,
        name,
    )
    return record


def run_hparams(cfg: DictConfig) -> dict[str, Any]:
    """What the HPARAMS tab compares runs by (the run keys marked ``hparam``)."""
    return {key.name: from_config(cfg, key) for key in hparam_keys()}


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
