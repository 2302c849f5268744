"""How the training loop runs: a clock, a divergence guard, idle hooks hidden, the heap kept."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor


class RunClock(L.Callback):
    """Time spent in training batches (validation excluded) and images seen, for metrics.json."""

    def __init__(self) -> None:
        self.seconds, self.images = 0.0, 0
        self._start: float | None = None

    def _sync(self, trainer: L.Trainer) -> None:
        # Only at epoch/validation boundaries: CUDA work is asynchronous, so wait for it there.
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def _resume(self, trainer: L.Trainer) -> None:
        self._sync(trainer)
        self._start = time.perf_counter()

    def _pause(self, trainer: L.Trainer) -> None:
        if self._start is not None:
            self._sync(trainer)
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:  # first batch of an epoch, or after a validation inside one
            self._resume(trainer)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.images += len(batch[0])  # a shape, read on the host: no device sync

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(trainer)


class NonFiniteGuard(L.Callback):
    """Stop at once when the training loss is NaN/inf or has diverged past ``max_loss`` nats.

    The logvar clamp keeps a diverging model finite (lr=1e3 reaches ~1e33 nats, not inf), so
    a loss no image could have counts too. The loss is read on the host every step on CPU
    (free) and every logging interval on an accelerator (no per-step sync); the epoch's sums are
    read before every validation and at epoch end, so a loss that went bad between two reads
    stops the run before ModelCheckpoint saves. The weights at the stop (those of the last
    update; with ``model.step=fused`` the bad step's own update) become checkpoints/last.ckpt
    only if no earlier last.ckpt exists and they are finite.
    """

    def __init__(self, max_loss: float = 1e10) -> None:
        self.max_loss = max_loss

    def _bad(self, value: float) -> bool:
        return not math.isfinite(value) or abs(value) > self.max_loss

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        if pl_module.device.type != "cpu" and trainer.global_step % trainer.log_every_n_steps:
            return
        value = float(loss.detach())
        if self._bad(value):
            recon, kl = (float(t.mean()) for t in pl_module.last_step)
            self._stop(trainer, pl_module, value, recon, kl)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._check_epoch(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_epoch(trainer, pl_module)  # runs before ModelCheckpoint's (Lightning's order)

    def _check_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        means = pl_module.epoch_means("train")
        if means is not None and self._bad(sum(means)):
            self._stop(trainer, pl_module, sum(means), *means)

    def _stop(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        value: float,
        recon: float,
        kl: float,
    ) -> None:
        from vae_latent.errors import NonFiniteLoss

        last = Path(trainer.default_root_dir, "checkpoints", "last.ckpt")
        if not last.is_file() and all(torch.isfinite(p).all() for p in pl_module.parameters()):
            trainer.save_checkpoint(last)
        why = "NaN/inf" if not math.isfinite(value) else f"diverged past {self.max_loss:.0e} nats"
        kept = f"kept {last}" if last.is_file() else "no usable checkpoint"
        raise NonFiniteLoss(
            f"non-finite loss at epoch {trainer.current_epoch + 1}, step {trainer.global_step} "
            f"({why}): reconstruction {recon:.4g}, KL {kl:.4g} nats per image; {kept}; "
            "lower model.lr or check the data"
        )


class RandomState(L.Callback):
    """The random states in every checkpoint, restored when a fit resumes from one.

    A resumed run then draws the batch order and the ELBO's noise that the uninterrupted run
    drew (Lightning's checkpoints hold no random state). Testing a checkpoint keeps the seed's.
    """

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng_states"] = states

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get("rng_states")
        if not states or trainer.state.fn != "fit":
            return
        torch.set_rng_state(states["torch"])
        cuda = states.get("cuda")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


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

    Lightning wraps every call in a profiler context, even for a no-op (README: Speed). Its
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
    freed and page-faulted back in on the next (README: Speed). Fixed thresholds keep up to
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
