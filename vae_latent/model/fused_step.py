"""The fused training step: one function, run eagerly or replayed as one CUDA graph.

``model.step=fused`` makes the whole step (zero the gradients, forward, ELBO, backward, Adam,
the epoch sums) one Python function. On a single CUDA device it is captured once as a CUDA
graph and replayed for every batch: the step's ~100 small kernels are launched by one call,
and the GPU no longer waits for the host. Anywhere else it runs eagerly, unchanged, which is
how the CPU tests exercise the same function and the same Lightning control flow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from vae_latent.errors import ConfigError

# The choices of model.step: auto fuses (and captures on one CUDA GPU) where nothing is skipped.
Step = Literal["auto", "lightning", "fused"]
STEPS: tuple[str, ...] = get_args(Step)


class StepRunner:
    """Calls ``step(x)`` once per batch, eagerly or through a CUDA graph.

    With ``graph``: the first ``warmup`` batches run eagerly on a side stream (they are real
    steps: CUDA libraries allocate their workspaces there, as capture requires); the next
    batch is copied into a static input, its step captured, and the graph replayed for it and
    every later batch of that size (a batch of another size runs eagerly). Tensors the step
    returns or writes (loss, gradients, Adam's state, the epoch sums) keep their addresses, so a
    replay overwrites them in place. Random draws inside the graph (the reparameterization's
    eps) advance per replay: PyTorch registers the default CUDA generator with the graph.
    """

    def __init__(self, step: Callable[[Tensor], Tensor], graph: bool, warmup: int = 3) -> None:
        self.step, self.graph, self.warmup = step, graph, warmup
        self.calls = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._x: Tensor | None = None
        self._loss: Tensor | None = None
        self._shape: torch.Size | None = None

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def __call__(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self._shape is None:  # the graph is captured for the first batch's size
            self._shape = x.shape
        if not self.graph:
            return self.step(x)
        if self.calls <= self.warmup:
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                loss = self.step(x)
            torch.cuda.current_stream(x.device).wait_stream(side)
            return loss
        if x.shape != self._shape:
            # A batch of another size (an epoch's last, when the split does not divide): an
            # eager step. It updates the same gradients, Adam state and sums in place, so the
            # graph stays valid and the step counts stay those of the eager path.
            return self.step(x)
        if self._graph is None:  # capture records the kernels without running them...
            self._x = x.clone()
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._loss = self.step(self._x)
        else:
            self._x.copy_(x, non_blocking=True)
        self._graph.replay()  # ...so this replay is the captured batch's real step too
        return self._loss


def fused_blocker(trainer: Any) -> str | None:
    """Why this trainer cannot run the fused step, or None: Lightning would skip work it does."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    if not isinstance(trainer.strategy, SingleDeviceStrategy):
        return f"{type(trainer.strategy).__name__} syncs gradients in Lightning's backward"
    if str(trainer.precision) not in ("32-true", "32"):  # the only true precision the app takes
        return f"precision {trainer.precision} casts or scales in Lightning's optimizer step"
    if trainer.gradient_clip_val:
        return "gradient clipping runs in Lightning's optimizer step"
    if trainer.accumulate_grad_batches > 1:
        return "gradient accumulation skips optimizer steps"
    return None


def graph_capable(trainer: Any) -> bool:
    """Whether a fused step can be captured: it can run (one device, 32-bit), on CUDA."""
    return trainer.strategy.root_device.type == "cuda" and fused_blocker(trainer) is None


def match_capturable(optimizer: torch.optim.Optimizer, capturable: bool) -> None:
    """Load any checkpoint's optimizer state in this run's mode, graph or eager.

    ``load_state_dict`` takes the saved groups' ``capturable`` flag: a graph run's state would
    fail in an eager (CPU) run, and an eager run's state cannot be captured. Setting the flag
    before loading also puts Adam's step count where the mode needs it.
    """

    def hook(_: torch.optim.Optimizer, state: dict) -> dict:
        groups = [{**group, "capturable": capturable} for group in state["param_groups"]]
        return {**state, "param_groups": groups}

    optimizer.register_load_state_dict_pre_hook(hook)


class FusedStepHooks:
    """LightningModule hooks for a training step that runs its own backward, zero_grad and Adam.

    With a runner set (``configure_step``), Lightning's closure runs ``training_step`` (which
    calls the runner) and nothing else: Lightning still counts each batch as an optimizer step
    (``global_step``, checkpoints with Adam's state, callbacks, logging intervals).
    """

    runner: StepRunner | None = None

    def use_fused_step(self, step: Callable[[Tensor], Tensor] | None, graph: bool) -> None:
        """Run ``step`` for each batch (as a CUDA graph with ``graph``); None: Lightning's step."""
        self.runner = None if step is None else StepRunner(step, graph)

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


def step_mode(step: str, trainer: Any) -> tuple[bool, bool]:
    """(fused, CUDA graph) for ``model.step`` here; ``fused`` where it cannot run is refused."""
    blocker = fused_blocker(trainer)
    if step == "fused" and blocker:
        raise ConfigError(f"model.step=fused cannot run here: {blocker}; use model.step=auto")
    fused = step == "fused" or (step == "auto" and graph_capable(trainer))
    return fused, fused and graph_capable(trainer)
