"""Where the callbacks' pictures go (the run directory and TensorBoard), and what titles say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from PIL import Image

from vae_latent.files import save_atomic


def run_label(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """'MNIST · native · z=2': which run a picture belongs to."""
    dm = trainer.datamodule
    label = f"{dm.info.display} · {dm.channels} · z={pl_module.hparams.latent_dim}"
    trained_on = getattr(dm, "model_trained_on", None)  # set by vae-latent-eval on other data
    return f"{trained_on} model on {label}" if trained_on else label


def tested_weights(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """'best-epoch009.ckpt, epoch 10': the checkpoint a test scored, or the current epoch."""
    name = pl_module.checkpoint_name  # a model built from a checkpoint's contents (eval)
    name = name or (Path(trainer.ckpt_path).name if trainer.ckpt_path else None)
    if name and pl_module.checkpoint_epoch is not None:
        return f"{name}, epoch {pl_module.checkpoint_epoch}"
    return f"epoch {trainer.current_epoch}"


def tested_step(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
    """The TensorBoard step of a tested checkpoint's pictures: its epoch."""
    return pl_module.checkpoint_epoch or trainer.current_epoch


def epoch_done(trainer: L.Trainer) -> int:
    """Epochs completed, counting the one whose validation is running."""
    return trainer.current_epoch + (1 if trainer.validating or trainer.sanity_checking else 0)


def tensorboard(trainer: L.Trainer) -> Any:
    """The SummaryWriter of the run's TensorBoardLogger, or None."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def write_picture(trainer: L.Trainer, path: Path, tag: str, image: Any, step: int) -> None:
    """A PNG under the run directory (atomically) and the same picture in TensorBoard."""
    array = np.asarray(image)
    save_atomic(path, lambda buffer: Image.fromarray(array).save(buffer, format="PNG"))
    if writer := tensorboard(trainer):
        writer.add_image(tag, array, step, dataformats="HWC")


def write_gif(path: Path, frames: np.ndarray, duration_ms: int) -> None:
    """An animated GIF, looping forever, written atomically (imageio: duration in ms)."""
    import imageio.v3 as iio

    save_atomic(
        path,
        lambda buffer: iio.imwrite(buffer, frames, extension=".gif", duration=duration_ms, loop=0),
    )


def check_callbacks(trainer: L.Trainer, datamodule: Any) -> None:
    """The callbacks' settings that depend on the data's real sizes (the files read), checked
    before the first step: ``check_data(datamodule, tested)``, ``tested`` being the number of
    test images the test will score."""
    tested = tested_images(trainer, datamodule)
    for callback in trainer.callbacks:
        if hasattr(callback, "check_data"):
            callback.check_data(datamodule, tested)


def tested_images(trainer: L.Trainer, datamodule: Any) -> int:
    """How many test images a test scores under ``trainer.limit_test_batches``."""
    n, batch = len(datamodule.splits["test"]), datamodule.eval_batch_size
    limit, batches = trainer.limit_test_batches, -(-n // batch)
    if limit is None or isinstance(limit, float) and limit >= 1.0:
        return n
    count = int(batches * limit) if isinstance(limit, float) else min(int(limit), batches)
    return min(n, count * batch)
