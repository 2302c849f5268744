"""The LightningModule that trains a ``ConvVAE``: steps, epoch means, Adam, checkpoint loading."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch import Tensor

from vae_latent.errors import ConfigError
from vae_latent.model.cpu_fast_path import (
    elbo_backward,
    first_difference,
    is_mc_bernoulli,
    nhwc_elbo,
)
from vae_latent.model.elbo import KLEstimator, Likelihood
from vae_latent.model.fused_step import (
    FusedStepHooks,
    Step,
    StepChoice,
    choose_step,
    match_mode,
)
from vae_latent.model.vae import ConvVAE, Init

log = logging.getLogger("vae_latent")
# metrics.json's step, once the fast path's first step matched the reference.
PROVEN = "matched ConvVAE.elbo at its first step"


class LitVAE(FusedStepHooks, L.LightningModule):
    """Trains ``self.vae`` on the single-sample ELBO; logs ELBO, recon and KL in nats per image.

    Validation and test means are logged through Lightning (weighted by batch size, synced over
    DDP ranks). Training sums live on the device and are read once per epoch: no ``self.log``
    or ``.item()`` per step (each costs host time, and ``.item()`` syncs a GPU).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] | list[int] = (1, 28, 28),
        latent_dim: int = 2,
        lr: float = 1e-4,
        kl: KLEstimator = "mc",
        likelihood: Likelihood = "bernoulli",
        step: Step = "auto",
        init: Init = "keras",
        width: int = 1,
        depth: int = 0,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        # Plain ints/floats/strings only: checkpoints must load with weights_only=True. The app
        # logs the run's hyperparameters itself, with the test metric (logger=False here).
        self.save_hyperparameters(
            {
                "image_shape": tuple(int(s) for s in image_shape),
                "latent_dim": int(latent_dim),
                "lr": float(lr),
                "kl": kl,
                "likelihood": likelihood,
                "step": step,
                "init": init,
                "width": int(width),
                "depth": int(depth),
                "beta": float(beta),
            },
            logger=False,
        )
        hp = self.hparams
        self.vae = ConvVAE(hp.image_shape, hp.latent_dim, likelihood, kl, init, width, depth)
        self._train_sums: Tensor | None = None  # this epoch's summed (recon, KL), on the device
        self._last_sums: Tensor | None = None  # the last step's, for the divergence guard
        self._last_batch = 1
        self._train_images = 0
        self._step_used = "lightning"
        self._choice: tuple[Any, StepChoice] | None = None  # (the trainer, its step)
        self._unproven = False  # the fast path's first step is still to be checked
        self._leave_fused: str | None = None  # why the fused step stops after this batch
        self.checkpoint_epoch: int | None = None  # epochs trained by the checkpoint last loaded
        self.checkpoint_name: str | None = None  # its file name, where built from its contents

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.vae(x)

    # --- training --------------------------------------------------------------------------
    def _loss(self, recon: Tensor, kl_term: Tensor) -> Tensor:
        """The training loss, a mean over the batch. β weighs the KL term in it (model.beta);
        the ELBO logged and tested stays the β = 1 bound."""
        if self.hparams.beta == 1.0:
            return (recon + kl_term).mean()
        return (recon + self.hparams.beta * kl_term).mean()

    def _add_sums(self, recon: Tensor, kl_term: Tensor) -> None:
        """Into buffers allocated once and written in place: a CUDA graph replay writes them."""
        sums = torch.stack((recon.detach(), kl_term.detach())).sum(1)
        if self._train_sums is None:
            self._train_sums, self._last_sums = torch.zeros_like(sums), torch.zeros_like(sums)
        self._train_sums += sums
        self._last_sums.copy_(sums)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x = batch[0]
        if self.runner is not None:
            loss = self.runner(x)
        else:
            recon, kl_term, _, _ = self.vae.elbo(x)
            self._add_sums(recon, kl_term)
            loss = self._loss(recon, kl_term)
        self._train_images += len(x)
        self._last_batch = len(x)  # on the host: a replay does not run this function's Python
        # Lightning writes step logs after the batches where (step + 1) % N == 0, labelled with
        # this step: logging on the same batches makes each point this step's own loss. Not on
        # the progress bar: Lightning would read it on the host after every batch.
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            elbo = -self._last_sums.sum() / len(x)  # the ELBO whatever β trains
            self.log("train/elbo_step", elbo, on_step=True, on_epoch=False)
        return loss

    def fused_step(self, x: Tensor) -> Tensor:
        """Forward, ELBO, backward, Adam, epoch sums; returns the loss.

        Only device work, no host reads: ``StepRunner`` may capture it as a CUDA graph. On the
        CPU the gradients come from the fast path (model/cpu_fast_path.py), after its first
        step has matched the reference; elsewhere from autograd through ``ConvVAE.elbo``, after
        they are set to None so that backward creates them (inside a graph: once, in the graph's
        own memory) rather than zeroing and adding to them. The optimizer is the one Lightning
        built (``configure_optimizers``).
        """
        if self._unproven:
            return self._checked_first_step(x)
        if self._choice_now().fast_path:
            recon, kl_term = self._fast_path(x)
            loss = self._loss(recon, kl_term)
        else:
            for p in self._params:
                p.grad = None
            recon, kl_term = self.vae.elbo(x)[:2]
            loss = self._loss(recon, kl_term)
            loss.backward()
        self._optimizer.step()
        self._add_sums(recon, kl_term)
        return loss.detach()

    def _fast_path(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The fast path's per-image (recon, KL term), the loss's gradients put in ``.grad``."""
        if is_mc_bernoulli(self.vae):
            return elbo_backward(self.vae, x, self.hparams.beta)
        for p in self._params:
            p.grad = None
        recon, kl_term = nhwc_elbo(self.vae, x)
        self._loss(recon, kl_term).backward()
        return recon.detach(), kl_term.detach()

    def _checked_first_step(self, x: Tensor) -> Tensor:
        """The fast path's first step of a fit, run both ways from the same weights, batch and
        noise: the fast path, then the reference (``ConvVAE.elbo`` under autograd, the code a
        user edits). If the loss and every gradient agree to float summation order, the fast
        path's step is taken (as on every later step, so a resumed run repeats the whole run's
        steps). If not, ``model.step=fused`` stops with one line, and ``auto`` takes the
        reference's step, warns once and trains on with Lightning's (``on_train_batch_end``)."""
        self._unproven = False
        names, params = zip(*self.vae.named_parameters(), strict=True)
        rng = torch.get_rng_state()
        fast_terms = self._fast_path(x)
        fast_grads = [p.grad for p in params]
        torch.set_rng_state(rng)  # the reference draws the same noise
        for p in params:
            p.grad = None
        recon, kl_term = self.vae.elbo(x)[:2]
        loss = self._loss(recon, kl_term)
        loss.backward()
        fast_loss = self._loss(*fast_terms)
        grads = (fast_grads, [p.grad for p in params])
        differs = first_difference((fast_loss, loss.detach()), grads, list(names))
        if differs:
            why = f"the CPU fast path differs from ConvVAE.elbo at its first step ({differs})"
            if self.hparams.step == "fused":
                raise ConfigError(
                    f"model.step=fused: {why}, so it does not cover an edit of the model or its "
                    "ELBO; use model.step=auto (Lightning's step then) or model.step=lightning"
                )
            log.warning("model.step=auto: Lightning's step from here, since %s", why)
            self._leave_fused, self._step_used = why, f"lightning ({why})"
        else:
            for p, grad in zip(params, fast_grads, strict=True):
                p.grad = grad
            recon, kl_term, loss = *fast_terms, fast_loss
            recipe = "backward written out" if is_mc_bernoulli(self.vae) else "autograd"
            self._step_used = f"fused: CPU fast path (NHWC layers, {recipe}), {PROVEN}"
        self._optimizer.step()
        self._add_sums(recon, kl_term)
        return loss.detach()

    def step_state(self) -> list[Tensor]:
        """Every tensor a training step updates: the fused step's self-check restores them."""
        adam = [t for s in self._optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
        return [*self.parameters(), *adam, self._train_sums, self._last_sums]

    @property
    def step_used(self) -> str:
        """Which training step ran (metrics.json: step), and why where it is not the asked one."""
        return self._step_used

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        runner = self.runner  # the step changes after this batch's closure, not inside it
        if runner is not None and runner.failed:
            log.warning(
                "model.step: the CUDA graph is off (%s); Lightning's step from here", runner.failed
            )
            self._step_used = f"lightning (CUDA graph failed: {runner.failed})"
            self.use_fused_step(None, False)
        elif runner is not None and self._leave_fused:
            self.use_fused_step(None, False)
        elif runner is not None and runner.graph and runner.captured:
            self._step_used = "fused, CUDA graph"

    def last_step_means(self) -> tuple[float, float] | None:
        """The last training step's mean (recon, KL) per image, read on the host."""
        if self._last_sums is None:
            return None
        recon, kl_term = (self._last_sums / self._last_batch).tolist()
        return recon, kl_term

    def epoch_means(self) -> tuple[float, float] | None:
        """This epoch's mean training (recon, KL) per image so far, read on the host."""
        if self._train_sums is None or not self._train_images:
            return None
        recon, kl_term = (self._train_sums / self._train_images).tolist()
        return recon, kl_term

    def on_train_epoch_end(self) -> None:
        if self._train_sums is not None and self._train_images:
            recon, kl_term = (self._train_sums / self._train_images).unbind()
            self._log_means("train", recon, kl_term, batch_size=None)
            self._train_sums.zero_()  # in place: a CUDA graph keeps writing into this tensor
        self._train_images = 0
        if self.runner is not None and self.runner.captured:
            group = self._optimizer.param_groups[0]
            if group["lr"] != self.hparams.lr:
                raise ConfigError(
                    f"the learning rate changed to {group['lr']} after the training step was "
                    "captured as a CUDA graph (its Adam keeps the first one); use "
                    "model.step=lightning to change it during a run"
                )

    def on_fit_end(self) -> None:
        self.use_fused_step(None, False)  # the graph and its memory pool go with the fit

    def choose_step(self, trainer: Any) -> StepChoice:
        """The training step this trainer runs (``model.step``: fused_step.choose_step), decided
        once per trainer; the app asks before any data is read, so a refusal comes first."""
        if self._choice is None or self._choice[0] is not trainer:
            choice = choose_step(self.hparams.step, trainer, self.vae)
            if choice.why:
                log.warning("model.step=auto: Lightning's step, since %s", choice.why)
            self._choice = (trainer, choice)
        return self._choice[1]

    def _choice_now(self) -> StepChoice:
        return self.choose_step(self.trainer)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        choice = self._choice_now()
        # Adam's fused kernel on the CPU, for either step; capturable on CUDA for a graph:
        # Adam's step count and bias corrections stay on the GPU, inside the graph.
        cpu = self.device.type == "cpu"
        optimizer = torch.optim.Adam(
            self.parameters(),
            lr=self.hparams.lr,
            capturable=choice.graph and not cpu,
            fused=cpu or None,
        )
        match_mode(optimizer)  # a checkpoint of another mode resumes in this one
        self._optimizer, self._params = optimizer, list(self.parameters())
        self.use_fused_step(
            self.fused_step if choice.fused else None, choice.graph, self.step_state
        )
        self._step_used, self._unproven, self._leave_fused = choice.label, choice.fast_path, None
        return optimizer

    # --- evaluation --------------------------------------------------------------------------
    def _eval_step(self, x: Tensor, name: str) -> dict[str, Tensor]:
        recon, kl_term, mean, logvar = self.vae.elbo(x)
        self._log_means(name, recon.mean(), kl_term.mean(), batch_size=len(x))
        return {"mean": mean.detach(), "logvar": logvar.detach()}  # for the TestCodes callback

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        # The study's protocol scores the test split in the validation loop: logged as test/*.
        return self._eval_step(batch[0], getattr(self.trainer.datamodule, "val_name", "val"))

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch[0], "test")

    def _log_means(self, name: str, recon: Tensor, kl_term: Tensor, batch_size: int | None) -> None:
        """``name/{elbo,recon,kl}`` per image; evaluation means are epoch means of batch means."""
        self.log_dict(
            {f"{name}/elbo": -(recon + kl_term), f"{name}/recon": recon, f"{name}/kl": kl_term},
            on_step=False,
            on_epoch=True,
            prog_bar=batch_size is not None and self.trainer.state.fn == "fit",
            batch_size=batch_size,
            sync_dist=True,
        )

    # --- checkpoints -------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints written before the network was its own module name its weights
        # encoder.* / decoder.*: they now live under vae.
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(("encoder.", "decoder."))]:
            state[f"vae.{key}"] = state.pop(key)
        # Which epoch the weights are from: pictures and metrics.json say so.
        self.checkpoint_epoch = int(checkpoint.get("epoch", -1)) + 1
