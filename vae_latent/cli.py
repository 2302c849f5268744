"""The Hydra app: compose, validate, build from config, fit, test the best checkpoint."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from vae_latent.errors import ConfigError, DataError, user_error

log = logging.getLogger("vae_latent")


def _conf_dir() -> str:
    """conf/ inside an installed wheel, else the repo's top-level conf/ (editable install)."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if packaged.is_dir() else here.parent / "conf")


def compose_config(overrides: list[str]) -> DictConfig:
    """The config ``vae-latent`` would compose from these overrides, outside a Hydra run."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=_conf_dir(), version_base="1.3"):
        return compose("train", overrides=overrides)


def _resume_path(resume: Any) -> str | None:
    """``resume=<run dir>`` (a path) as opposed to ``resume=true/false/null``."""
    return None if resume is None or isinstance(resume, bool) else str(resume)


def is_complete(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds the metrics.json of a run that completed."""
    try:
        return json.loads(Path(run_dir, "metrics.json").read_text()).get("status") == "complete"
    except (OSError, ValueError, AttributeError):
        return False


def _untouched(resume: Any, run_dir: str) -> bool:
    """resume=true on a complete run: Hydra must not rewrite its .hydra/ or its log."""
    return resume is True and bool(run_dir) and is_complete(run_dir)


def _output_subdir(resume: Any, run_dir: str) -> str | None:
    # resume=<run dir> trains in that directory and keeps its .hydra/ (the run's own config).
    return None if _resume_path(resume) or _untouched(resume, run_dir) else ".hydra"


def _log_file(resume: Any, run_dir: str, name: str) -> str:
    return os.devnull if _untouched(resume, run_dir) else str(Path(run_dir, f"{name}.log"))


OmegaConf.register_new_resolver(
    "vae_run_dir", lambda resume, default: _resume_path(resume) or default, replace=True
)
OmegaConf.register_new_resolver("vae_pid", lambda: str(os.getpid()), replace=True)
OmegaConf.register_new_resolver("vae_output_subdir", _output_subdir, replace=True)
OmegaConf.register_new_resolver("vae_log_file", _log_file, replace=True)


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


def device_name(device: Any) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


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


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write through a temp file and rename, so a crash never leaves half a file."""
    from vae_latent.callbacks import save_atomic

    save_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def keep_freed_heap() -> None:
    """Stop glibc from handing freed heap back to the OS after every step (Linux only).

    With glibc's defaults the MB-sized activations of each batch-32 step are unmapped or
    trimmed when freed and page-faulted back in on the next: ~3,800 minor faults per step, a
    third of a first CPU run's time here. Fixed thresholds keep up to 64 MiB of freed heap.
    """
    import ctypes

    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc (and musl) export it; absent elsewhere
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's ceiling for this threshold
    mallopt(m_trim_threshold, 64 << 20)


def build(cfg: DictConfig, out_dir: Path) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Datamodule (read, so bad data fails now), model, trainer, and the callbacks we read back."""
    import lightning as L
    from hydra.utils import instantiate

    from vae_latent.callbacks import NonFiniteGuard, RunClock, skip_idle_batch_hooks

    # lightning/__init__ adds its own console handler; Hydra's root handlers (console + the
    # run's log file) already print everything once.
    logging.getLogger("lightning").handlers.clear()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")  # Lightning vs new torch
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    keep_freed_heap()

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # read (or download) now: bad data fails before training starts
    datamodule.setup("fit")
    model = instantiate(cfg.model, image_shape=datamodule.image_shape)
    logger = False
    if cfg.get("logger") and "_target_" in cfg.logger:
        logger = instantiate(cfg.logger, save_dir=str(out_dir))
        logger.log_hyperparams(run_hparams(cfg))  # hparams.yaml now; the metric comes at the end
    core = {
        "checkpoint": instantiate(cfg.checkpoint, dirpath=str(out_dir / "checkpoints")),
        "clock": RunClock(),
        "guard": NonFiniteGuard(),
    }
    if cfg.trainer.get("enable_progress_bar", True) and cfg.get("progress_bar"):
        core["progress_bar"] = instantiate(cfg.progress_bar)
    extra = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    trainer = instantiate(
        cfg.trainer,
        logger=logger,
        callbacks=[*core.values(), *extra],
        default_root_dir=str(out_dir),
    )
    skip_idle_batch_hooks(trainer.callbacks)
    return datamodule, model, trainer, core


def check_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents; refuses one that is not ours or is not weights-only."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(
            f"{path} cannot be loaded weights-only ({type(e).__name__}): it is damaged or not a "
            "vae_latent checkpoint; delete it to start over or resume another run"
        ) from e
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if "state_dict" not in ckpt or not {"image_shape", "latent_dim"} <= set(hparams):
        raise DataError(f"{path} is not a vae_latent checkpoint (no ConvVAE hyperparameters)")
    return ckpt


def train(cfg: DictConfig, out_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Build everything from ``cfg``, fit, test the best checkpoint; returns metrics.json's dict.

    With ``resume`` a complete run is left as it is and an interrupted one continues from
    ``checkpoints/last.ckpt``.
    """
    validate(cfg)
    import torch

    done = out_dir / "metrics.json"
    last = out_dir / "checkpoints" / "last.ckpt"
    if resume and is_complete(out_dir):
        log.info("%s is complete (metrics.json): nothing to train", out_dir)
        return json.loads(done.read_text())
    resume_from = str(last) if resume and last.is_file() else None
    if resume_from:
        check_checkpoint(last)

    datamodule, model, trainer, core = build(cfg, out_dir)
    checkpoint, clock = core["checkpoint"], core["clock"]
    try:
        fit_start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        fit_seconds = time.perf_counter() - fit_start
        # Test the best-by-val-ELBO weights; pass the path explicitly (works after a resume).
        # Lightning loads them into `model`, so the latent metrics score the same checkpoint.
        ckpt = checkpoint.best_model_path or checkpoint.last_model_path
        (test,) = trainer.test(
            model, datamodule=datamodule, ckpt_path=ckpt or None, verbose=False, weights_only=True
        )
        from vae_latent.metrics import latent_metrics

        latent = latent_metrics(model, datamodule, **cfg.metrics)
    except BaseException as e:
        write_failed(out_dir, cfg, trainer, e)
        raise
    hp = model.hparams
    images = clock.images * trainer.world_size
    metrics = {
        "status": "complete",
        "dataset": datamodule.name,
        "channels": datamodule.channels,
        "image_shape": list(datamodule.image_shape),
        "latent_dim": hp.latent_dim,
        "kl": hp.kl,
        "likelihood": hp.likelihood,
        "lr": hp.lr,
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
        **latent,
        "train_seconds": clock.seconds,
        "train_images": images,  # over all processes (DDP ranks see equal shards)
        "images_per_second": images / clock.seconds if clock.seconds else None,
        "world_size": trainer.world_size,
        "fit_seconds": fit_seconds,
        "accelerator": type(trainer.accelerator).__name__.replace("Accelerator", "").lower(),
        "torch_threads": torch.get_num_threads(),
        "device": device_name(model.device),
        "versions": versions(),
    }
    if not trainer.is_global_zero:
        return metrics  # DDP: rank 0 writes
    if trainer.logger:
        log_final(trainer.logger, cfg, metrics, latent, trainer.global_step)
    write_json(out_dir / "metrics.json", metrics)
    (out_dir / "error.txt").unlink(missing_ok=True)  # an earlier failed attempt's
    log.info(
        "test ELBO %.2f nats (recon %.2f, KL %.2f); %.0f images/s; run dir %s",
        metrics["test_elbo"],
        metrics["test_recon"],
        metrics["test_kl"],
        metrics["images_per_second"] or 0.0,
        out_dir,
    )
    return metrics


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


def log_final(
    logger: Any, cfg: DictConfig, metrics: dict[str, Any], latent: dict[str, Any], step: int
) -> None:
    """Latent metrics as scalars; hparams with the final metric (the HPARAMS tab needs both)."""
    scalars = {f"test/{k}": v for k, v in latent.items() if isinstance(v, (int, float))}
    logger.log_metrics(scalars, step)
    logger.log_hyperparams(run_hparams(cfg), {"hp/test_elbo": metrics["test_elbo"]})
    logger.finalize("success")


def write_failed(out_dir: Path, cfg: DictConfig, trainer: Any, e: BaseException) -> None:
    """metrics.json marked failed, with the error, so reports list the run (best effort)."""
    cause = user_error(e)
    failed = {
        "status": "failed" if not isinstance(e, KeyboardInterrupt) else "incomplete",
        "error": str(cause) if cause else f"{type(e).__name__}: {e}",
        "dataset": cfg.data.name,
        "channels": cfg.data.channels,
        "latent_dim": cfg.model.latent_dim,
        "seed": cfg.seed,
        "epochs": trainer.current_epoch,
        "global_steps": trainer.global_step,
    }
    if not trainer.is_global_zero:
        return
    with contextlib.suppress(OSError):  # e.g. the disk is full: the error line still shows
        write_json(out_dir / "metrics.json", failed)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


_failed: list[str] = []  # job directories of a multirun whose job failed


def resumed_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The config a run was made with, plus this command's overrides (e.g. a new data.root)."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(
            f"resume={run_dir} is not a run directory (no .hydra/config.yaml); pass the folder "
            "that holds checkpoints/ and .hydra/ of an earlier run"
        )
    original = OmegaConf.load(saved)
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
    return OmegaConf.merge(original, OmegaConf.from_dotlist([o.lstrip("+~") for o in overrides]))


@hydra.main(config_path=_conf_dir(), config_name="train", version_base="1.3")
def _train_app(cfg: DictConfig) -> float:
    """One run; returns its best validation ELBO (NaN if none), the objective of sweepers."""
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    try:
        path = _resume_path(cfg.get("resume"))
        if path:
            out_dir = Path(path).expanduser().resolve()
            cfg = resumed_config(cfg, out_dir)
        metrics = train(cfg, out_dir, resume=bool(path) or cfg.get("resume") is True)
        best = metrics.get("best_val_elbo")
        return float("nan") if best is None else best
    except Exception as e:
        job_failed(e, out_dir, "vae-latent", _failed)
        return float("nan")  # Optuna records the trial as failed and goes on


def job_failed(e: Exception, out_dir: Path, prog: str, failed: list[str]) -> None:
    """Called in ``except``: one line and exit for a single run; in a sweep, record and go on."""
    cause = user_error(e)
    message = f"{prog}: error: {cause or f'{type(e).__name__}: {e}'}"
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        if cause is None:
            raise e  # a bug: keep the traceback
        print(message, file=sys.stderr)
        sys.exit(cause.exit_code)
    log.error(message, exc_info=cause is None)
    with contextlib.suppress(OSError):
        (out_dir / "error.txt").write_text(message + "\n")
    failed.append(str(out_dir.resolve()))


def exit_if_failed(prog: str, failed: list[str]) -> None:
    """After a multirun: name the jobs that failed and exit 1."""
    if failed:
        print(f"{prog}: {len(failed)} job(s) failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


def one_line(e: BaseException) -> str:
    """Hydra's multi-line composition errors, folded into one line."""
    options = getattr(e, "options", None)  # MissingConfigException: an unknown group option
    if options:
        return f"{str(e).splitlines()[0]}; available: {', '.join(options)}"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    lines = [
        line
        for line in lines
        if not line.startswith(("Config search path", "provider=", "Set the"))
    ]
    return "; ".join(lines)[:400]


def run_app(app: Callable[[], Any], prog: str) -> None:
    """Run a Hydra app; composition errors and unwritable run dirs print one line, exit 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Hydra then raises composition errors instead of printing them over several lines.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    # Library warnings go to the log (console and the run's log file); stderr keeps the
    # progress bar and our one-line errors.
    logging.captureWarnings(True)
    try:
        app()
    except (HydraException, OmegaConfBaseException) as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # Hydra could not create or write the run directory
        cause = user_error(e)
        if cause is None:
            raise
        print(f"{prog}: error: {cause}", file=sys.stderr)
        sys.exit(cause.exit_code)


def train_main() -> None:
    """Console entry point ``vae-latent``; exits non-zero if any job of a multirun failed."""
    run_app(_train_app, "vae-latent")
    from vae_latent.report import not_complete

    exit_if_failed("vae-latent", sorted(set(_failed) | set(not_complete)))
