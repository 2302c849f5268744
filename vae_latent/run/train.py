"""One training run, top to bottom in ``train``: decide (new or resumed) and validate, build,
fit, test, record."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vae_latent.errors import ConfigError, Interrupted, user_error
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
        # Decide (new or resumed) and validate: run/resume.py, which validates in between.
        start = resuming.decide(cfg, run_dir, resume, files, validate)
        if start.done is not None:
            return start.done  # a complete run: nothing to train
        run = build(cfg, run_dir.root)
        start.begin(run, run_dir, files)  # a resumed run starts now
        if run.trainer.logger:  # hparams.yaml now; the metric comes with them at the end
            run.trainer.logger.log_hyperparams(run_hparams(cfg))
        try:
            fit_seconds = _fit(run, start.ckpt_path)
            tested, test, latent, test_seconds = _test(run)
            return _record(cfg, run, run_dir, fit_seconds, tested, test, latent, test_seconds)
        except BaseException as e:
            _record_stop(e, cfg, run_dir, run.trainer)
            raise


def _fit(run: Built, ckpt_path: str | None) -> float:
    """Fit (from ``ckpt_path`` when resumed); its seconds. A fit that trained no step is refused."""
    start = time.perf_counter()
    # Lightning loads checkpoints through AtomicCheckpointIO: read once, weights-only, checked.
    run.trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=ckpt_path)
    if run.trainer.global_step == 0:
        raise ConfigError(
            "the fit trained no step (trainer limits or a checkpoint that already ended there); "
            "check trainer.max_epochs, trainer.max_steps and trainer.limit_train_batches"
        )
    return time.perf_counter() - start


def _test(run: Built) -> tuple[str | None, dict[str, Any], dict[str, Any], float]:
    """Test the reported weights: the checkpoint tested, the test's metrics, the latent metrics
    scored at its end (rank 0), and the seconds it all took."""
    from vae_latent.callbacks.tested_metrics import last_test_metrics

    datamodule, model, trainer = run.datamodule, run.model, run.trainer
    checkpoint = trainer.checkpoint_callback
    start = time.perf_counter()
    # The study's protocol reports the last epoch's weights; otherwise the best by val ELBO.
    # The path goes explicitly (it works after a resume); Lightning loads it into `model`, and
    # the pictures (test-end callbacks) and the latent metrics below score the same weights.
    tested = checkpoint.last_model_path if datamodule.protocol == "study" else None
    tested = tested or checkpoint.best_model_path or checkpoint.last_model_path
    (test,) = trainer.test(model, datamodule=datamodule, ckpt_path=tested or None, verbose=False)
    latent = last_test_metrics(trainer)  # scored at the end of the test (rank 0)
    return tested, test, latent, time.perf_counter() - start


def _record(
    cfg: DictConfig,
    run: Built,
    run_dir: RunDir,
    fit_seconds: float,
    tested: str | None,
    test: dict[str, Any],
    latent: dict[str, Any],
    post_fit_seconds: float,
) -> dict[str, Any]:
    """The run's record; rank 0 writes metrics.json and TensorBoard's hparams with its metric."""
    datamodule, model, trainer, clock = run.datamodule, run.model, run.trainer, run.clock
    out_dir = run_dir.root  # the held directory: every file of the run goes through it
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
        best_val_elbo=_float(trainer.checkpoint_callback.best_model_score),
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
        run_dir.path,
    )
    return record


def _record_stop(e: BaseException, cfg: DictConfig, run_dir: RunDir, trainer: Any) -> None:
    """A run that stopped: rank 0 records it (incomplete after a signal, else failed); a signal
    becomes Interrupted, whose exit code and message say to resume."""
    signal_name, cause = _interruption(e), user_error(e)
    where = f"epoch {trainer.current_epoch + 1}, step {trainer.global_step}"
    error = f"interrupted ({signal_name}) at {where}" if signal_name else None
    if trainer.is_global_zero:
        record_failure(
            run_dir.root,
            cfg,
            error or (str(cause) if cause else f"{type(e).__name__}: {e}"),
            status="incomplete" if signal_name else "failed",
            epochs=trainer.current_epoch,
            global_steps=trainer.global_step,
        )
    if signal_name:
        code = 143 if signal_name == "SIGTERM" else 130  # 128 + the signal, as shells do
        raise Interrupted(f"{error}; continue with resume={run_dir.path}", code) from e


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


def run_hparams(cfg: DictConfig) -> dict[str, Any]:
    """What the HPARAMS tab compares runs by (the run keys marked ``hparam``)."""
    return {key.name: from_config(cfg, key) for key in hparam_keys()}


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
