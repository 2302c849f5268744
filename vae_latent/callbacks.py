"""The pictures as Lightning callbacks: thin hooks around ``pictures.py``; only rank 0 writes.

Per-epoch pictures are drawn at validation end. The latent pictures are drawn at test end, from
the weights that were tested, in training (after ``trainer.test`` of the tested checkpoint) and
in ``vae-latent-eval`` alike; their titles name that checkpoint and its epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from PIL import Image

from vae_latent import figures, pictures
from vae_latent.codes import encode_split
from vae_latent.errors import ConfigError
from vae_latent.files import save_atomic


def run_label(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """'MNIST · native · z=2': which run a picture belongs to."""
    dm = trainer.datamodule
    label = f"{dm.info.display} · {dm.channels} · z={pl_module.hparams.latent_dim}"
    trained_on = getattr(dm, "model_trained_on", None)  # set by vae-latent-eval on other data
    return f"{trained_on} model on {label}" if trained_on else label


def tested_weights(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """'best-epoch009.ckpt, epoch 10': the checkpoint a test scored, or the current epoch."""
    if trainer.ckpt_path and pl_module.checkpoint_epoch is not None:
        return f"{Path(trainer.ckpt_path).name}, epoch {pl_module.checkpoint_epoch}"
    return f"epoch {trainer.current_epoch}"


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


class EpochGrid(L.Callback):
    """A fixed test batch, its reconstructions and fixed prior samples.

    After each validation: ``epochs/epoch_NNN.png``. After a test: ``grid.png``, from the
    tested weights. Reconstructions decode the posterior mean, so changes between epochs come
    from the model, not from sampling noise.
    """

    def __init__(self, n_images: int = 16, seed: int = 0, scale: int = 3) -> None:
        self.n_images, self.seed, self.scale = n_images, seed, scale

    def render(self, trainer: L.Trainer, pl_module: L.LightningModule, title: str) -> Image.Image:
        test = trainer.datamodule.splits["test"]
        return pictures.epoch_grid(pl_module, test, self.n_images, self.seed, title, self.scale)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        epoch = epoch_done(trainer)
        # "|", not a dash: PIL's built-in font has no em dash.
        title = f"{run_label(trainer, pl_module)}  |  epoch {epoch}/{trainer.max_epochs}"
        name = getattr(trainer.datamodule, "val_name", "val")
        if (elbo := trainer.callback_metrics.get(f"{name}/elbo")) is not None:
            title += f"  |  {name} ELBO {float(elbo):.1f} nats"
        path = Path(trainer.default_root_dir, "epochs", f"epoch_{epoch:03d}.png")
        write_picture(trainer, path, "epoch_grid", self.render(trainer, pl_module, title), epoch)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        title = f"{run_label(trainer, pl_module)}  |  {tested_weights(trainer, pl_module)}"
        if (elbo := trainer.callback_metrics.get("test/elbo")) is not None:
            title += f"  |  test ELBO {float(elbo):.1f} nats"
        path = Path(trainer.default_root_dir, "grid.png")
        step = pl_module.checkpoint_epoch or trainer.current_epoch
        write_picture(trainer, path, "tested_grid", self.render(trainer, pl_module, title), step)


def write_gif(path: Path, frames: np.ndarray, duration_ms: int) -> None:
    """An animated GIF, looping forever, written atomically (imageio: duration in ms)."""
    import imageio.v3 as iio

    save_atomic(
        path,
        lambda buffer: iio.imwrite(buffer, frames, extension=".gif", duration=duration_ms, loop=0),
    )


def check_callbacks(callbacks: list[L.Callback], datamodule: Any) -> None:
    """The pictures' settings that depend on the data, checked before training or testing."""
    for callback in callbacks:
        if hasattr(callback, "check_data"):
            callback.check_data(datamodule)


class TrainingGif(L.Callback):
    """At fit end: ``training.gif`` from the epoch grids in order, one frame each, looping."""

    def __init__(self, duration_ms: int = 600) -> None:
        self.duration_ms = duration_ms

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import imageio.v3 as iio

        frames = sorted(Path(trainer.default_root_dir, "epochs").glob("epoch_*.png"))
        if not trainer.is_global_zero or not frames:
            return
        # A title can widen one epoch's grid ("epoch 10/10", "-100.2"): pad, do not stack.
        stack = figures.same_size([iio.imread(f) for f in frames])
        write_gif(Path(trainer.default_root_dir, "training.gif"), stack, self.duration_ms)


class LatentPicture(L.Callback):
    """Base: ``name.png`` from the tested weights; ``latent/epoch_NNN_name.png`` every N epochs.

    ``draw`` returns the picture, or (picture, animation frames) for a GIF beside it.
    """

    name = "latent"
    frame_ms = 150

    def __init__(self, every_n_epochs: int = 0) -> None:
        self.every_n_epochs = every_n_epochs

    def draw(self, view: pictures.LatentView) -> Any:
        raise NotImplementedError

    def _write(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        codes: Any,
        title: str,
        path: Path,
        step: int,
    ) -> None:
        dm = trainer.datamodule
        view = pictures.LatentView(pl_module, codes, dm.splits["test"], list(dm.classes), title)
        drawn = self.draw(view)
        if drawn is None:
            return
        image, frames = drawn if isinstance(drawn, tuple) else (drawn, None)
        write_picture(trainer, path, self.name, image, step)
        if frames is not None:
            write_gif(path.with_suffix(".gif"), frames, self.frame_ms)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or pl_module.test_codes is None:
            return
        title = f"{run_label(trainer, pl_module)} — {tested_weights(trainer, pl_module)}"
        step = pl_module.checkpoint_epoch or trainer.current_epoch
        path = Path(trainer.default_root_dir, f"{self.name}.png")
        self._write(trainer, pl_module, pl_module.test_codes, title, path, step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n, epoch = self.every_n_epochs, epoch_done(trainer)
        if not n or trainer.sanity_checking or epoch % n or not trainer.is_global_zero:
            return
        codes = encode_split(pl_module, trainer.datamodule.splits["test"])
        title = f"{run_label(trainer, pl_module)} — epoch {epoch}"
        path = Path(trainer.default_root_dir, "latent", f"epoch_{epoch:03d}_{self.name}.png")
        self._write(trainer, pl_module, codes, title, path, epoch)


class LatentManifold(LatentPicture):
    """Latent 2 only: the decoded manifold over the study's grid and/or where the data lives."""

    name = "latent_manifold"

    def __init__(self, size: int = 20, grid: str = "both", every_n_epochs: int = 0) -> None:
        super().__init__(every_n_epochs)
        self.size, self.grid = size, grid

    def draw(self, view: pictures.LatentView) -> np.ndarray | None:
        return pictures.manifold(view, self.size, self.grid)


class LatentTraversal(LatentPicture):
    """The most informative dimensions swept one at a time: the picture and its GIF."""

    name = "latent_traversal"

    def __init__(
        self,
        max_dims: int = 10,
        steps: int = 11,
        span: float = 3.0,
        reference_index: int = 0,
        ranges: str = "prior",
        frame_ms: int = 150,
        every_n_epochs: int = 0,
    ) -> None:
        super().__init__(every_n_epochs)
        self.max_dims, self.steps, self.span = max_dims, steps, span
        self.reference_index, self.ranges, self.frame_ms = reference_index, ranges, frame_ms

    def check_data(self, datamodule: Any) -> None:
        n = len(datamodule.splits["test"])
        if not 0 <= self.reference_index < n:
            raise ConfigError(
                f"callbacks.latent_traversal.reference_index={self.reference_index} but the test "
                f"split has {n:,} images; use 0 to {n - 1}"
            )

    def draw(self, view: pictures.LatentView) -> tuple[np.ndarray, np.ndarray]:
        return pictures.traversal(
            view, self.max_dims, self.steps, self.span, self.reference_index, self.ranges
        )


class LatentScatter(LatentPicture):
    """Test-split posterior means by class: the 2-D latent itself, or its top two PCs."""

    name = "latent_scatter"

    def draw(self, view: pictures.LatentView) -> np.ndarray:
        return pictures.scatter(view)


class ClassInterpolation(LatentPicture):
    """Decoded straight lines between class centroids (of test-split means) in latent space."""

    name = "interpolation"

    def __init__(
        self, pairs: list[list[int]] | None = None, steps: int = 10, every_n_epochs: int = 0
    ) -> None:
        super().__init__(every_n_epochs)
        self.pairs, self.steps = pairs, steps

    def check_data(self, datamodule: Any) -> None:
        n = len(datamodule.classes)
        for pair in self.pairs or []:
            if len(pair) != 2 or not all(isinstance(k, int) and 0 <= k < n for k in pair):
                raise ConfigError(
                    f"callbacks.interpolation.pairs: {list(pair)} is not a pair of class indices; "
                    f"each pair is two of 0 to {n - 1}, e.g. [[3, 8]]"
                )

    def draw(self, view: pictures.LatentView) -> np.ndarray:
        return pictures.interpolation(view, self.pairs, self.steps)


class TensorBoardProjector(L.Callback):
    """After a test: the test split's latent means in TensorBoard's Embedding Projector."""

    def __init__(self, max_points: int = 2_000) -> None:
        self.max_points = max_points  # the sprite sheet of thumbnails dominates the cost

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or not trainer.is_global_zero or pl_module.test_codes is None:
            return
        dm = trainer.datamodule
        view = pictures.LatentView(
            pl_module, pl_module.test_codes, dm.splits["test"], list(dm.classes), ""
        )
        pictures.projector(
            writer, view, self.max_points, pl_module.checkpoint_epoch or trainer.current_epoch
        )
