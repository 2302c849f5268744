"""The study's conv VAE as a LightningModule: encoder, decoder, ELBO, encode/decode/sample."""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.distributions import ContinuousBernoulli

from vae_latent.codes import CodeBuffer, Codes
from vae_latent.elbo import elbo_terms
from vae_latent.errors import ConfigError
from vae_latent.schema import KL_ESTIMATORS, LIKELIHOODS, STEPS

# log-variance is clamped here: exp(logvar) stays finite in float32 (see README, Numerics).
LOGVAR_RANGE = (-30.0, 20.0)


def encoder(channels: int, height: int, width: int, latent_dim: int) -> nn.Sequential:
    """Two stride-2 valid convs (32, 64) and a dense layer to mean and log-variance."""
    h, w = height, width
    for _ in range(2):  # 3x3 kernel, stride 2, no padding
        h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, stride=2),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * h * w, 2 * latent_dim),
    )


def decoder(channels: int, height: int, width: int, latent_dim: int) -> nn.Sequential:
    """Dense to (32, H/4, W/4), two stride-2 "same" transposed convs (64, 32), one to logits."""
    h, w = height // 4, width // 4
    # padding=1 + output_padding=1 makes a stride-2 transposed conv exactly double the size,
    # which is what Keras calls padding="same".
    return nn.Sequential(
        nn.Linear(latent_dim, 32 * h * w),
        nn.ReLU(),
        nn.Unflatten(1, (32, h, w)),
        nn.ConvTranspose2d(32, 64, 3, stride=2, padding=1, output_padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(32, channels, 3, stride=1, padding=1),
    )


class ConvVAE(L.LightningModule):
    """The study's CVAE; logs ELBO, reconstruction and KL (nats per image) per split."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] | list[int] = (1, 28, 28),
        latent_dim: int = 2,
        lr: float = 1e-4,
        kl: str = "mc",
        likelihood: str = "bernoulli",
        step: str = "auto",
    ) -> None:
        super().__init__()
        if kl not in KL_ESTIMATORS:
            raise ConfigError(f"model.kl={kl!r} is unknown; use one of {', '.join(KL_ESTIMATORS)}")
        if step not in STEPS:
            raise ConfigError(f"model.step={step!r} is unknown; use one of {', '.join(STEPS)}")
        if likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"model.likelihood={likelihood!r} is unknown; use one of {', '.join(LIKELIHOODS)}"
            )
        # Plain ints/floats/strings only: checkpoints must load with weights_only=True.
        image_shape = tuple(int(s) for s in image_shape)
        # The app logs the run's hyperparameters once, with the test metric (logger=False here).
        self.save_hyperparameters(
            {
                "image_shape": image_shape,
                "latent_dim": int(latent_dim),
                "lr": float(lr),
                "kl": kl,
                "likelihood": likelihood,
                "step": step,
            },
            logger=False,
        )
        self.encoder = encoder(*image_shape, latent_dim)
        self.decoder = decoder(*image_shape, latent_dim)
        # NHWC convolutions: oneDNN's fast path on CPU; the same numbers.
        self.to(memory_format=torch.channels_last)
        # Per split: this epoch's summed (recon, KL) on the device and its image count.
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self._runner: Any = None  # the fused step's runner (configure_optimizers), or None
        self._last_means: Tensor | None = None  # the fused step's last (recon, KL) means
        self.last_step: Any = None  # the last training step's (recon, KL): the guard reports it
        self.step_used = "lightning"  # which training step ran (metrics.json: step)
        self._test_codes: CodeBuffer | None = None
        self.test_codes: Codes | None = None  # the test split's posterior, from the last test
        self.checkpoint_epoch: int | None = None  # epochs trained by the checkpoint last loaded

    # --- the API the pictures and metrics use -------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x)."""
        mean, logvar = self.encoder(x.contiguous(memory_format=torch.channels_last)).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    @staticmethod
    def reparameterize(mean: Tensor, logvar: Tensor) -> Tensor:
        """z = mean + sigma * eps, differentiable in mean and logvar."""
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)

    def decode(self, z: Tensor, apply_sigmoid: bool | None = None) -> Tensor:
        """Logits of p(x|z). (``apply_sigmoid=True`` is the old spelling of ``mean_image``.)"""
        if apply_sigmoid is not None:
            warnings.warn(
                "decode(z, apply_sigmoid=True) is deprecated: use mean_image(z)",
                DeprecationWarning,
                stacklevel=2,
            )
            if apply_sigmoid:
                return self.mean_image(z)
        return self.decoder(z)

    def mean_image(self, z: Tensor) -> Tensor:
        """The mean of p(x|z), an image in [0, 1]: sigmoid(logits) for the Bernoulli."""
        logits = self.decoder(z)
        if self.hparams.likelihood == "continuous_bernoulli":
            return ContinuousBernoulli(logits=logits, validate_args=False).mean
        return torch.sigmoid(logits)

    @torch.no_grad()
    def sample(
        self, n_or_eps: int | Tensor = 16, generator: torch.Generator | None = None
    ) -> Tensor:
        """Decode prior draws (``n`` fresh ones, or the given ``eps``) to images in [0, 1]."""
        if isinstance(n_or_eps, int):
            eps = torch.randn(n_or_eps, self.hparams.latent_dim, generator=generator)
        else:
            eps = n_or_eps
        return self.mean_image(eps.to(self.device, self.dtype))

    def elbo(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-image reconstruction NLL and KL term (one Monte Carlo z), and q(z|x)'s parameters."""
        mean, logvar = self.encode(x)
        z = self.reparameterize(mean, logvar)
        hp = self.hparams
        recon, kl_term = elbo_terms(x, self.decoder(z), z, mean, logvar, hp.kl, hp.likelihood)
        return recon, kl_term, mean, logvar

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-image reconstruction NLL and KL term for a batch (one Monte Carlo sample of z)."""
        return self.elbo(x)[:2]

    # --- Lightning -----------------------------------------------------------------------
    # Epoch means: running sums of (recon, KL) on the device, read once per epoch (no
    # `self.log` or `.item()` per step: each costs host time, and `.item()` syncs a GPU). The
    # training ELBO per step is logged only at the logger's interval.
    def _accumulate(self, split: str, recon: Tensor, kl_term: Tensor) -> None:
        sums = self._sums.get(split)
        if sums is None:  # created once and zeroed in place: a CUDA graph writes into it
            sums = self._sums[split] = recon.new_zeros(2)
        sums += torch.stack((recon.detach().sum(), kl_term.detach().sum()))

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        recon, kl_term, mean, logvar = self.elbo(batch[0])
        self.last_step = (recon.detach(), kl_term.detach())  # read when the loss is not finite
        self._accumulate(split, recon, kl_term)
        self._counts[split] = self._counts.get(split, 0) + len(recon)
        if split == "test" and self._test_codes is not None:
            self._test_codes.add(mean.detach(), logvar.detach(), batch[1])
        return (recon + kl_term).mean()

    def train_step(self, x: Tensor) -> Tensor:
        """The fused step: zero grads, forward, ELBO, backward, Adam, epoch sums; returns the loss.

        Only device work, no host reads: ``StepRunner`` may capture it as a CUDA graph. The
        optimizer is the one Lightning built (``configure_optimizers``).
        """
        optimizer = self._optimizer
        optimizer.zero_grad(set_to_none=False)  # in the graph: the replay zeroes its own grads
        recon, kl_term, _, _ = self.elbo(x)
        loss = (recon + kl_term).mean()
        loss.backward()
        optimizer.step()
        means = torch.stack((recon.detach().mean(), kl_term.detach().mean()))
        if self._last_means is None:  # created once, written in place: a replay writes it
            self._last_means = means
        else:
            self._last_means.copy_(means)
        self.last_step = self._last_means
        self._accumulate("train", recon, kl_term)
        return loss.detach()

    def _log_epoch(self, split: str) -> None:
        sums, count = self._sums.get(split), self._counts.pop(split, 0)
        if sums is None or not count:
            return
        recon, kl_term = (sums / count).unbind()
        # The study's protocol scores the test split in the validation loop: logged as test/*.
        name = getattr(self.trainer.datamodule, "val_name", "val") if split == "val" else split
        self.log_dict(
            {f"{name}/elbo": -(recon + kl_term), f"{name}/recon": recon, f"{name}/kl": kl_term},
            prog_bar=split == "val",
            sync_dist=True,
        )
        sums.zero_()  # in place: a CUDA graph keeps writing into this tensor

    def epoch_means(self, split: str) -> tuple[float, float] | None:
        """This epoch's mean (recon, KL) per image so far, read on the host; None before a step."""
        sums, count = self._sums.get(split), self._counts.get(split, 0)
        if sums is None or not count:
            return None
        recon, kl_term = (sums / count).tolist()
        return recon, kl_term

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self._runner is not None:
            loss = self._runner(batch[0])
            self._counts["train"] = self._counts.get("train", 0) + len(batch[0])
        else:
            loss = self._step(batch, "train")
        # Lightning writes step logs after the batches where (step + 1) % N == 0, labelled with
        # this step: logging on the same batches makes each point this step's own loss.
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/elbo_step", -loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    # With the fused step, the step already did backward, zero_grad and Adam: Lightning only
    # counts the step (global_step, checkpoints, callbacks see an ordinary optimizer step).
    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        if self._runner is None:
            super().backward(loss, *args, **kwargs)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        if self._runner is None:
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        if self._runner is None:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        else:
            optimizer_closure()  # runs training_step: the fused step

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_start(self) -> None:
        self._test_codes = self.test_codes = None
        splits = getattr(self.trainer.datamodule, "splits", {})
        if "test" in splits:  # room for this rank's share (DistributedSampler pads evenly)
            n = -(-len(splits["test"]) // self.trainer.world_size)
            self._test_codes = CodeBuffer(n, self.hparams.latent_dim, self.device)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        if self._test_codes is not None:
            n = len(self.trainer.datamodule.splits["test"])
            self.test_codes = self._test_codes.gather(self, n)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        from vae_latent.steps import StepRunner, fused_blocker, graph_capable, match_capturable

        step, blocker = self.hparams.step, fused_blocker(self.trainer)
        if step == "fused" and blocker:
            raise ConfigError(f"model.step=fused cannot run here: {blocker}; use model.step=auto")
        fused = step == "fused" or (step == "auto" and graph_capable(self.trainer))
        graph = fused and graph_capable(self.trainer)
        # capturable: Adam's step count and bias corrections stay on the GPU, inside the graph.
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, capturable=graph)
        match_capturable(optimizer, graph)  # resuming a graph run's checkpoint eagerly, or back
        self._optimizer = optimizer
        self._runner = StepRunner(self.train_step, graph) if fused else None
        self.step_used = "fused, CUDA graph" if graph else "fused" if fused else "lightning"
        return optimizer

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Which epoch the weights are from: pictures and metrics.json say so.
        self.checkpoint_epoch = int(checkpoint.get("epoch", -1)) + 1
