"""What a run is built from: the Trainer with the run's callbacks and logger, the data, the model.

Also how the process runs them: Lightning's console handler and known warnings off, idle
per-batch callback hooks hidden, glibc's freed heap kept, no NVML retries where there is no
NVML, checkpoints written atomically.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from vae_latent.errors import ConfigError
from vae_latent.files import save_atomic


@dataclass
class Built:
    """What ``build`` makes from a config, and the callbacks the run reads back."""

    datamodule: Any
    model: Any
    trainer: L.Trainer
    clock: Any  # RunClock


def build(cfg: DictConfig, out_dir: Path) -> Built:
    """Trainer, model and its step first (a bad setting fails before data is read), then data."""
    from hydra.utils import instantiate

    from vae_latent.callbacks import NonFiniteGuard, RandomState, RunClock
    from vae_latent.callbacks.outputs import check_callbacks

    clock = RunClock()
    trainer = build_trainer(cfg, out_dir, [clock, NonFiniteGuard(), RandomState()])
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, image_shape=datamodule.image_shape)  # known before the data
    model.choose_step(trainer)  # a step that cannot run is refused before any data is read
    datamodule.prepare_data()  # read (or download) now: bad data fails before training starts
    datamodule.setup("fit")
    check_callbacks(trainer, datamodule)
    return Built(datamodule, model, trainer, clock)


def build_trainer(cfg: DictConfig, out_dir: Path, own: list[L.Callback]) -> L.Trainer:
    """The Trainer of ``cfg.trainer`` writing into ``out_dir``, with the run's ``own`` callbacks,
    the configured ones (``cfg.callbacks``: null entries skipped) and the configured logger."""
    from hydra.utils import instantiate
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import ProgressBar

    from vae_latent.callbacks import TestCodes

    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    keep_freed_heap()
    ask_cuda_without_nvml_retries()
    # The test's codes, then its metrics, before the pictures that show them.
    callbacks = [*own, TestCodes(), instantiate(cfg.metrics)]
    for entry in (cfg.get("callbacks") or {}).values():
        callback = instantiate(entry) if entry else None
        progress_off = not cfg.trainer.get("enable_progress_bar", True)
        if callback is not None and not (progress_off and isinstance(callback, ProgressBar)):
            callbacks.append(callback)
    logger = False
    if cfg.get("logger") and "_target_" in cfg.logger:
        logger = instantiate(cfg.logger, save_dir=str(out_dir))
    try:
        trainer = instantiate(
            cfg.trainer,
            logger=logger,
            callbacks=callbacks,
            default_root_dir=str(out_dir),
            # One plugin, not a list: hydra-core 1.3.2 hands a list kwarg on as a ListConfig,
            # which Lightning 2.4 does not take for a list and refuses.
            plugins=AtomicCheckpointIO(),
        )
    except MisconfigurationException as e:
        raise ConfigError(f"trainer: {str(e).splitlines()[0]}") from e
    skip_idle_batch_hooks(trainer.callbacks)
    return trainer


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader and writer: writes through a temp file in the checkpoint's
    own folder, reads through ``read_checkpoint``.

    Kept beside Lightning's: its default goes through a system temp file and a copy, so a full
    disk leaves a truncated checkpoint and an error naming /tmp; this leaves the previous file
    and names ours. Every checkpoint Lightning loads (to resume, to test) is read once, bounded
    and checked like any file from elsewhere; one the run already read and checked (``checked``,
    by path) is not read again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.checked: dict[str, dict[str, Any]] = {}

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        from vae_latent.run.checkpoints import read_checkpoint

        checked = self.checked.pop(str(path), None)
        return checked if checked is not None else read_checkpoint(path)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        save_atomic(Path(path), buffer.getvalue())


# Hooks that Lightning calls once per batch on every callback, whether it overrides them or not.
BATCH_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_zero_grad",
    "on_before_optimizer_step",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def skip_idle_batch_hooks(callbacks: list[L.Callback]) -> None:
    """Hide the per-batch hooks each callback inherits as no-ops, so Lightning stops calling them.

    Lightning wraps every call in a profiler context, even for a no-op (docs/speed.md). Its
    dispatcher skips a hook that is not callable, so an instance attribute of None hides the
    inherited one.
    """
    from lightning.pytorch.utilities.model_helpers import is_overridden

    for callback in callbacks:
        for hook in BATCH_HOOKS:
            if not is_overridden(hook, callback, L.Callback):
                setattr(callback, hook, None)


def keep_freed_heap() -> None:
    """Stop glibc from handing freed heap back to the OS after every step (Linux only).

    With glibc's defaults the MB-sized activations of each step are unmapped or trimmed when
    freed and page-faulted back in on the next (docs/speed.md). Fixed thresholds keep up to
    64 MiB of freed heap.
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


def ask_cuda_without_nvml_retries() -> None:
    """Stop ``torch.cuda.is_available()`` from trying to load NVML at every call where it cannot
    be loaded (Linux only).

    Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` so that the check does not initialise CUDA
    in a process that may fork. Where NVML is missing (a CUDA build of torch on a machine without
    an NVIDIA driver: what pip installs on Linux), torch then tries to load it at every call and
    falls back to the CUDA runtime's count anyway, and Adam's step asks at every step
    (docs/speed.md). There the variable goes: the same answer, without the retries.
    """
    import ctypes
    import os

    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1" or sys.platform != "linux":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def quiet_lightning() -> None:
    """Lightning's console handler off (the app's root handlers print once) and known noise off."""
    import logging
    import warnings

    logging.getLogger("lightning").handlers.clear()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")  # Lightning vs new torch
    # The fused step's eager warm-up before its CUDA graph capture is meant (README: GPU step).
    warnings.filterwarnings("ignore", ".*but step\\(\\) is running without .* graph capture.*")
    # Testing a checkpoint (train's best, or eval's) needs no training callbacks restored.
    warnings.filterwarnings("ignore", ".*callbacks used to create the checkpoint.*")
    # A resume continues in its own checkpoints/ (a new run never starts in a used one).
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
