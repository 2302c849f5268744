"""Lightning callbacks: small, one job each, only rank 0 writes."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from vae_latent.figures import (
    grid,
    interpolation_figure,
    manifold_figure,
    manifold_z,
    panels,
    pca_2d,
    rendered,
    scatter_figure,
    traversal_figure,
)
from vae_latent.metrics import encode_split, kl_per_dim

log = logging.getLogger(__name__)


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
    a loss no image could have counts too. Checked before backward: the weights are those of
    the last update; they become checkpoints/last.ckpt only if no earlier last.ckpt exists.
    The loss is read on the host every step on CPU (free) and every logging interval on an
    accelerator (no per-step sync).
    """

    def __init__(self, max_loss: float = 1e10) -> None:
        self.max_loss = max_loss

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        if pl_module.device.type != "cpu" and trainer.global_step % trainer.log_every_n_steps:
            return
        value = float(loss.detach())
        if math.isfinite(value) and abs(value) <= self.max_loss:
            return
        from vae_latent.errors import NonFiniteLoss

        recon, kl = (float(t.mean()) for t in pl_module.last_step)
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

    Lightning wraps every call in a profiler context, even for a no-op: with 12 callbacks that
    was ~200 us of a 14-17 ms CPU training step here. Its dispatcher skips a hook that is not
    callable, so an instance attribute of None hides the inherited one (tests fit with this).
    """
    from lightning.pytorch.utilities.model_helpers import is_overridden

    for callback in callbacks:
        for hook in BATCH_HOOKS:
            if not is_overridden(hook, callback, L.Callback):
                setattr(callback, hook, None)


# --- pictures -----------------------------------------------------------------------------
# Each callback draws one thing with figures.py, writes it under the run directory
# (trainer.default_root_dir) and sends it to TensorBoard. Only rank 0 draws or writes.


def run_label(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """'MNIST · native · z=2': which run a picture belongs to."""
    dm = trainer.datamodule
    label = f"{dm.info.display} · {dm.channels} · z={pl_module.hparams.latent_dim}"
    trained_on = getattr(dm, "model_trained_on", None)  # set by vae-latent-eval on other data
    return f"{trained_on} model on {label}" if trained_on else label


def tensorboard(trainer: L.Trainer) -> Any:
    """The SummaryWriter of the run's TensorBoardLogger, or None."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def save_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp file in the same folder and rename: no half-written pictures."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. disk full: the previous file stays as it was
        raise


class EpochGrid(L.Callback):
    """Each validation: a fixed test batch, its reconstructions and fixed prior samples.

    Writes ``epochs/epoch_NNN.png``; reconstructions decode the posterior mean, so changes
    between epochs come from the model, not from sampling noise.
    """

    def __init__(self, n_images: int = 16, seed: int = 0, scale: int = 3) -> None:
        self.n_images, self.seed, self.scale = n_images, seed, scale

    def fixed_inputs(self, trainer: L.Trainer, latent_dim: int) -> tuple[Tensor, Tensor]:
        """The same test images and prior draws every epoch and every run with this seed."""
        gen = torch.Generator().manual_seed(self.seed)
        test = trainer.datamodule.splits["test"]
        index = torch.randperm(len(test), generator=gen)[: self.n_images]
        eps = torch.randn(self.n_images, latent_dim, generator=gen)
        return test.take(index)[0], eps

    @torch.inference_mode()
    def render(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Image.Image:
        x, eps = self.fixed_inputs(trainer, pl_module.hparams.latent_dim)
        mean, _ = pl_module.encode(x.to(pl_module.device))
        recon = pl_module.decode(mean, apply_sigmoid=True)
        samples = pl_module.sample(eps)
        elbo = trainer.callback_metrics.get("val/elbo")
        # "|", not a dash: PIL's built-in font has no em dash.
        title = (
            f"{run_label(trainer, pl_module)}  |  epoch {epoch_done(trainer)}/{trainer.max_epochs}"
        )
        if elbo is not None:
            title += f"  |  val ELBO {float(elbo):.1f} nats"
        named = [
            ("test images", x),
            ("reconstructions (posterior mean)", recon),
            ("prior samples", samples),
        ]
        return panels([(name, grid(images)) for name, images in named], title, self.scale)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        image = self.render(trainer, pl_module)
        epoch = epoch_done(trainer)
        save_atomic(Path(trainer.default_root_dir, "epochs", f"epoch_{epoch:03d}.png"), image.save)
        if writer := tensorboard(trainer):
            writer.add_image("epoch_grid", np.asarray(image), epoch, dataformats="HWC")


class TrainingGif(L.Callback):
    """At fit end: ``training.gif`` from the epoch grids in order, one frame each, looping."""

    def __init__(self, duration_ms: int = 600) -> None:
        self.duration_ms = duration_ms

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import imageio.v3 as iio

        frames = sorted(Path(trainer.default_root_dir, "epochs").glob("epoch_*.png"))
        if not trainer.is_global_zero or not frames:
            return
        stack = np.stack([iio.imread(f) for f in frames])
        # imageio >= 2.28 (pillow plugin): duration in milliseconds, loop=0 repeats forever.
        save_atomic(
            Path(trainer.default_root_dir, "training.gif"),
            lambda p: iio.imwrite(p, stack, duration=self.duration_ms, loop=0),
        )


class LatentFigure(L.Callback):
    """Base: draw ``name.png`` at fit end, and ``latent/epoch_NNN_name.png`` every N epochs."""

    name = "latent"

    def __init__(self, every_n_epochs: int = 0) -> None:
        self.every_n_epochs = every_n_epochs

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, title: str) -> Figure | None:
        raise NotImplementedError

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, path: Path) -> None:
        if not trainer.is_global_zero:
            return
        epoch = epoch_done(trainer)
        was_training = pl_module.training
        pl_module.eval()
        with torch.inference_mode():
            fig = self.draw(trainer, pl_module, f"{run_label(trainer, pl_module)} — epoch {epoch}")
        pl_module.train(was_training)
        if fig is None:
            return
        image = rendered(fig)  # drawn once, for the file and for TensorBoard
        save_atomic(path, Image.fromarray(image).save)
        if writer := tensorboard(trainer):
            writer.add_image(self.name, image, epoch, dataformats="HWC")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = self.every_n_epochs
        if n and not trainer.sanity_checking and epoch_done(trainer) % n == 0:
            path = Path(
                trainer.default_root_dir,
                "latent",
                f"epoch_{epoch_done(trainer):03d}_{self.name}.png",
            )
            self.write(trainer, pl_module, path)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module, Path(trainer.default_root_dir, f"{self.name}.png"))


def epoch_done(trainer: L.Trainer) -> int:
    """Epochs completed, counting the one whose validation is running."""
    return trainer.current_epoch + (1 if trainer.validating or trainer.sanity_checking else 0)


class LatentManifold(LatentFigure):
    """Latent 2 only: the study's plot, decoded over an n×n grid of standard-normal quantiles."""

    name = "latent_manifold"

    def __init__(self, size: int = 20, every_n_epochs: int = 0) -> None:
        super().__init__(every_n_epochs)
        self.size = size

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, title: str) -> Figure | None:
        if pl_module.hparams.latent_dim != 2:
            log.info(
                "latent_manifold skipped: it needs model.latent_dim=2 (this run has %d)",
                pl_module.hparams.latent_dim,
            )
            return None
        images = pl_module.decode(manifold_z(self.size).to(pl_module.device), apply_sigmoid=True)
        return manifold_figure(images, self.size, f"{title}\ndecoded over N(0, 1) quantiles 5%–95%")


class LatentTraversal(LatentFigure):
    """Each of the most informative dimensions swept over ±span around a test image's mean."""

    name = "latent_traversal"

    def __init__(
        self,
        max_dims: int = 10,
        steps: int = 11,
        span: float = 3.0,
        reference_index: int = 0,
        every_n_epochs: int = 0,
    ) -> None:
        super().__init__(every_n_epochs)
        self.max_dims, self.steps, self.span, self.reference_index = (
            max_dims,
            steps,
            span,
            reference_index,
        )

    def codes(self, means: Tensor, kl: Tensor) -> tuple[Tensor, list[int], Tensor]:
        """Latents (rows * steps, D) to decode, the dims swept (by KL), and the offsets."""
        dims = kl.argsort(descending=True)[: self.max_dims].tolist()
        offsets = torch.linspace(-self.span, self.span, self.steps)
        z = means[self.reference_index].repeat(len(dims), self.steps, 1)
        for row, d in enumerate(dims):
            z[row, :, d] += offsets
        return z.flatten(0, 1), dims, offsets

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, title: str) -> Figure:
        means, logvars, _ = encode_split(pl_module, trainer.datamodule.splits["test"])
        kl = kl_per_dim(means, logvars)
        z, dims, offsets = self.codes(means, kl)
        images = pl_module.decode(z.to(pl_module.device), apply_sigmoid=True)
        shown = f"{len(dims)} of {len(kl)} dims" if len(dims) < len(kl) else f"all {len(kl)} dims"
        return traversal_figure(
            images,
            dims,
            kl[dims].tolist(),
            offsets.tolist(),
            f"{title}\nlatent traversals ({shown}, test image #{self.reference_index})",
        )


class LatentScatter(LatentFigure):
    """Test-split posterior means by class: the 2-D latent itself, or its top two PCs."""

    name = "latent_scatter"

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, title: str) -> Figure:
        means, _, labels = encode_split(pl_module, trainer.datamodule.splits["test"])
        if means.shape[1] == 2:
            points, axes, how = (
                means,
                ("z1 (posterior mean)", "z2 (posterior mean)"),
                "latent means",
            )
        else:
            points, ratio = pca_2d(means)
            axes = (f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%} of variance)")
            how = f"PCA of the {means.shape[1]}-D latent means"
        classes = list(trainer.datamodule.classes)
        return scatter_figure(
            points, labels, classes, axes, f"{title}\n{how}, test split (n={len(labels):,})"
        )


class ClassInterpolation(LatentFigure):
    """Decoded straight lines between class centroids (of test-split means) in latent space."""

    name = "interpolation"

    def __init__(
        self, pairs: list[list[int]] | None = None, steps: int = 10, every_n_epochs: int = 0
    ) -> None:
        super().__init__(every_n_epochs)
        self.pairs, self.steps = pairs, steps

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, title: str) -> Figure:
        means, _, labels = encode_split(pl_module, trainer.datamodule.splits["test"])
        classes = trainer.datamodule.classes
        centroids = torch.stack([means[labels == k].mean(0) for k in range(len(classes))])
        # Default: a chain through all classes, 0 -> 1 -> ... -> 9.
        pairs = self.pairs or [[k, k + 1] for k in range(len(classes) - 1)]
        t = torch.linspace(0, 1, self.steps)[:, None]
        z = torch.cat([(1 - t) * centroids[a] + t * centroids[b] for a, b in pairs])
        decoded = pl_module.decode(z.to(pl_module.device), apply_sigmoid=True)
        names = [(classes[a], classes[b]) for a, b in pairs]
        return interpolation_figure(
            decoded, names, self.steps, f"{title}\ninterpolation between class centroids"
        )


class TensorBoardProjector(L.Callback):
    """At fit end: test-split latent means in TensorBoard's Embedding Projector, with sprites."""

    def __init__(self, max_points: int = 2_000) -> None:
        # The sprite sheet dominates the cost (10,000 MNIST thumbnails: ~2.4 s and ~0.5 GB here).
        self.max_points = max_points

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or not trainer.is_global_zero:
            return
        test = trainer.datamodule.splits["test"]
        images, labels = test.take(torch.arange(min(self.max_points, len(test))))
        was_training = pl_module.training
        pl_module.eval()
        with torch.inference_mode():
            means = pl_module.encode(images.to(pl_module.device))[0].cpu()
        pl_module.train(was_training)
        names = [trainer.datamodule.classes[k] for k in labels.tolist()]
        writer.add_embedding(
            means,
            metadata=names,
            label_img=images,
            global_step=trainer.current_epoch,
            tag="test_latent_means",
        )
