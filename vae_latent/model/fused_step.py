"""Which training step runs (``model.step``), and the fused step's CUDA graph.

The fused step makes the whole training step (forward, ELBO, backward, Adam, the epoch sums)
one Python function, ``LitVAE.fused_step``. On a single CUDA device it is captured once as a
CUDA graph of the model's own ELBO and replayed for every batch: the step's small kernels are
launched by one call, and the GPU no longer waits for the host. Before the graph is trusted, its
first replay is checked against the eager step from the same state and noise; if capture fails
or they differ, the run warns once and goes on with Lightning's own step. On the CPU the fused
step runs the fast path of model/cpu_fast_path.py, which proves itself against
``ConvVAE.elbo`` at its first step in the same way (``LitVAE``). ``choose_step`` decides which
step a fit runs, before any data is read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from vae_latent.errors import ConfigError

log = logging.getLogger("vae_latent")

# The choices of model.step: auto fuses (and captures on one CUDA GPU) where nothing is skipped.
Step = Literal["auto", "lightning", "fused"]
STEPS: tuple[str, ...] = get_args(Step)
# Lightning hooks whose timing the fused step changes (backward and Adam run inside the step).
SKIPPED_HOOKS = ("on_before_optimizer_step", "on_after_backward", "configure_gradient_clipping")


class StepRunner:
    """Calls ``step(x)`` once per batch, eagerly or through a CUDA graph.

    With ``graph``: the first ``warmup`` batches run eagerly on a side stream (they are real
    steps: CUDA libraries allocate their workspaces there, as capture requires); the next batch
    is copied into a static input and its step captured on that stream; the first replay is
    checked against an eager step from the same state (``state``: every tensor the step
    updates) and the same noise; then every batch of that size is one replay (a batch of
    another size runs eagerly, updating the same tensors in place). ``failed`` says why the
    graph was given up, if it was: the caller then steps without the runner.
    """

    def __init__(
        self,
        step: Callable[[Tensor], Tensor],
        graph: bool,
        state: Callable[[], list[Tensor]] | None = None,
        warmup: int = 3,
    ) -> None:
        self.step, self.graph, self.state, self.warmup = step, graph, state, warmup
        self.calls = 0
        self.failed: str | None = None
        self._graph: Any = None
        self._x: Tensor | None = None
        self._loss: Tensor | None = None
        self._shape: torch.Size | None = None
        self._stream: Any = None

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def __call__(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self._shape is None:  # the graph is captured for the first batch's size
            self._shape = x.shape
        if not self.graph or self.failed:
            return self.step(x)
        try:
            if self.calls <= self.warmup:
                return self._on_side_stream(x)
            if x.shape != self._shape:  # an epoch's short last batch: eager, same tensors
                return self.step(x)
            if self._graph is None:
                return self._capture_and_check(x)
        except Exception as e:  # capture is not possible here: Lightning's step from now on
            self.failed = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
            self._graph = None
            return self.step(x)  # this batch's step, eagerly (the fused function is exact)
        self._x.copy_(x, non_blocking=True)
        self._graph.replay()
        return self._loss

    def _on_side_stream(self, x: Tensor) -> Tensor:
        if x.device.type != "cuda":
            return self.step(x)
        if self._stream is None:  # our own stream, on the batch's device (not the default one)
            self._stream = torch.cuda.Stream(device=x.device)
        self._stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(self._stream):
            loss = self.step(x)
        torch.cuda.current_stream(x.device).wait_stream(self._stream)
        return loss

    def _capture_and_check(self, x: Tensor) -> Tensor:
        """Capture the step, replay it once, and compare with the eager step from the same state."""
        tensors = self.state() if self.state else []
        before = [t.detach().clone() for t in tensors]
        rng = torch.cuda.get_rng_state(x.device) if x.device.type == "cuda" else None
        self._x = x.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(x.device), torch.cuda.graph(graph, stream=self._stream):
            self._loss = self.step(self._x)  # recorded, not run
        graph.replay()
        replayed = (self._loss.detach().clone(), _checksum(tensors))
        for t, saved in zip(tensors, before, strict=True):  # back to the state before the step
            t.detach().copy_(saved)
        if rng is not None:
            torch.cuda.set_rng_state(rng, x.device)  # the same noise for the eager step
        loss = self.step(x)
        eager = (loss.detach(), _checksum(tensors))
        if not all(
            torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(replayed, eager, strict=True)
        ):
            raise RuntimeError(
                f"the captured step differs from the eager one (loss {float(replayed[0]):.6g} "
                f"vs {float(eager[0]):.6g}, weights checksum {float(replayed[1]):.9g} vs "
                f"{float(eager[1]):.9g})"
            )
        self._graph = graph
        return loss


def _checksum(tensors: list[Tensor]) -> Tensor:
    """One number that moves when any of ``tensors`` does (float64, summed on the device)."""
    if not tensors:
        return torch.zeros(())
    return torch.stack([t.detach().double().sum() for t in tensors]).sum()


def _strategy(trainer: Any) -> str | None:
    from lightning.pytorch.strategies import SingleDeviceStrategy

    if not isinstance(trainer.strategy, SingleDeviceStrategy):
        return f"{type(trainer.strategy).__name__} syncs gradients in Lightning's backward"
    return None


def _skipped_hooks(trainer: Any) -> str | None:
    import lightning as L
    from lightning.pytorch.utilities.model_helpers import is_overridden

    for hook in SKIPPED_HOOKS[:2]:
        for callback in trainer.callbacks:
            if is_overridden(hook, callback, L.Callback):
                return f"{type(callback).__name__}.{hook} would run around the fused step"
    return None


def _says(why: str, holds: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    return lambda x: why if holds(x) else None


def _config_precision(trainer: dict[str, Any]) -> str:
    return str(trainer.get("precision", "32-true"))


@dataclass(frozen=True)
class FusedCondition:
    """Work Lightning does around its backward or optimizer step that the fused step (its own
    backward and Adam) would skip: while it holds, the fused step cannot run."""

    on_trainer: Callable[[Any], str | None]  # why, on a built Trainer (choose_step)
    # why, from the composed ``trainer.*`` settings (validation, before anything is built);
    # None where only a built trainer shows it (a schedule, a callback's hooks)
    in_config: Callable[[dict[str, Any]], str | None] | None = None
    config_first: bool = False  # validation has always named clipping and accumulation first


# The one list of what stops the fused step: ``fused_blocker`` (auto's reason, fused's refusal)
# asks it of a built trainer, validation (``fused_refusal``) of the config before any data.
FUSED_CONDITIONS: list[FusedCondition] = [
    FusedCondition(
        _strategy,
        lambda t: (
            f"trainer.strategy={t.get('strategy')} syncs gradients in Lightning's backward"
            if t.get("strategy") not in (None, "auto", "single_device")
            else None
        ),
    ),
    FusedCondition(  # 32-true is the only true precision the app takes
        lambda t: (
            f"precision {t.precision} casts or scales in Lightning's optimizer step"
            if str(t.precision) not in ("32-true", "32")
            else None
        ),
        lambda t: (
            f"trainer.precision={_config_precision(t)} casts or scales in Lightning's "
            "optimizer step"
            if _config_precision(t) not in ("32-true", "32")
            else None
        ),
    ),
    FusedCondition(
        _says(
            "gradient clipping runs in Lightning's optimizer step", lambda t: t.gradient_clip_val
        ),
        _says("it cannot clip or accumulate gradients", lambda t: t.get("gradient_clip_val")),
        config_first=True,
    ),
    FusedCondition(
        _says(
            "gradient accumulation skips optimizer steps", lambda t: t.accumulate_grad_batches > 1
        ),
        _says(
            "it cannot clip or accumulate gradients",
            lambda t: (t.get("accumulate_grad_batches") or 1) > 1,
        ),
        config_first=True,
    ),
    FusedCondition(
        _says(
            "anomaly detection reads every backward output on the host (not capturable)",
            lambda t: getattr(t, "_detect_anomaly", False),
        ),
        _says(
            "trainer.detect_anomaly reads every backward output on the host",
            lambda t: t.get("detect_anomaly"),
        ),
    ),
    FusedCondition(
        _says(
            "a learning-rate schedule changes the lr that the step's Adam has captured",
            lambda t: t.lr_scheduler_configs,
        )
    ),
    FusedCondition(_skipped_hooks),
]


def fused_blocker(trainer: Any) -> str | None:
    """Why this trainer cannot run the fused step, or None: Lightning would skip work it does."""
    return next(filter(None, (c.on_trainer(trainer) for c in FUSED_CONDITIONS)), None)


def fused_refusal(trainer: dict[str, Any]) -> str | None:
    """Why ``model.step=fused`` cannot run with these ``trainer.*`` settings, or None."""
    conditions = sorted(FUSED_CONDITIONS, key=lambda c: not c.config_first)  # a stable sort
    found = (c.in_config(trainer) for c in conditions if c.in_config is not None)
    why = next(filter(None, found), None)
    return (
        f"model.step=fused runs Adam inside the step: {why}; use model.step=auto" if why else None
    )


@dataclass(frozen=True)
class StepChoice:
    """Which training step a fit runs, and why ``auto`` chose Lightning's where it did."""

    fused: bool = False  # the whole step in one call (LitVAE.fused_step)
    graph: bool = False  # ... captured as a CUDA graph
    fast_path: bool = False  # ... on the CPU through model/cpu_fast_path.py
    why: str | None = None  # why model.step=auto runs Lightning's step

    @property
    def label(self) -> str:
        """metrics.json's ``step`` until the step says more (``LitVAE.step_used``)."""
        if not self.fused:
            return f"lightning ({self.why})" if self.why else "lightning"
        if self.fast_path:
            return "fused: CPU fast path (not run yet)"
        return (
            "fused (CUDA graph not captured yet: fewer than 4 batches)" if self.graph else "fused"
        )


def choose_step(step: str, trainer: Any, vae: Any) -> StepChoice:
    """The training step for ``model.step`` with this trainer and model, decided before data.

    ``auto`` fuses wherever nothing is skipped and the step is exact: on one CUDA device as a
    graph of the model's own ELBO, on the CPU through the fast path where it covers every module
    (``uncovered``); elsewhere, or where it does not, Lightning's step, saying why.
    ``fused`` where it cannot run is refused.
    """
    from vae_latent.model.cpu_fast_path import uncovered

    if step == "lightning":
        return StepChoice()
    device = trainer.strategy.root_device.type
    why = fused_blocker(trainer)
    if why is None and device == "cpu" and (missing := uncovered(vae)):
        why = f"the CPU fast path does not cover {missing}"
    if why is None and device not in ("cpu", "cuda") and step == "auto":
        return StepChoice()
    if why is not None:
        if step == "fused":
            raise ConfigError(f"model.step=fused cannot run here: {why}; use model.step=auto")
        return StepChoice(why=why)
    return StepChoice(fused=True, graph=device == "cuda", fast_path=device == "cpu")


def match_mode(optimizer: torch.optim.Optimizer) -> None:
    """Load any checkpoint's optimizer state in this run's mode: graph, fused or neither.

    ``load_state_dict`` takes the saved groups' ``capturable`` and ``fused`` flags: a graph
    run's state would fail in an eager (CPU) run, an eager run's state cannot be captured, and a
    run resumed from another mode's checkpoint would silently step another way. The flags of the
    optimizer this run built win; setting them before loading also puts Adam's step count where
    the mode needs it.
    """
    mode = {k: optimizer.param_groups[0].get(k) for k in ("capturable", "fused")}

    def hook(_: torch.optim.Optimizer, state: dict) -> dict:
        groups = [{**group, **mode} for group in state["param_groups"]]
        return {**state, "param_groups": groups}

    optimizer.register_load_state_dict_pre_hook(hook)


class FusedStepHooks:
    """LightningModule hooks for a training step that runs its own backward, zero_grad and Adam.

    With a runner set (``use_fused_step``), Lightning's closure runs ``training_step`` (which
    calls the runner) and nothing else: Lightning still counts each batch as an optimizer step
    (``global_step``, checkpoints with Adam's state, callbacks, logging intervals).
    """

    runner: StepRunner | None = None

    def use_fused_step(
        self,
        step: Callable[[Tensor], Tensor] | None,
        graph: bool,
        state: Callable[[], list[Tensor]] | None = None,
    ) -> None:
        """Run ``step`` for each batch (as a CUDA graph with ``graph``); None: Lightning's step."""
        self.runner = None if step is None else StepRunner(step, graph, state)

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        if self.runner is None:
            super().backward(loss, *args, **kwargs)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        if self.runner is None:
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        if self.runner is None:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        else:
            optimizer_closure()  # runs training_step: the fused step
