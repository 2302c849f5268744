"""The fused training step: one function, run eagerly or replayed as one CUDA graph.

``model.step=fused`` makes the whole step (zero the gradients, forward, ELBO, backward, Adam,
the epoch sums) one Python function. On a single CUDA device it is captured once as a CUDA
graph and replayed for every batch: the step's ~100 small kernels are launched by one call,
and the GPU no longer waits for the host. Anywhere else it runs eagerly, unchanged, which is
how the CPU tests exercise the same function and the same Lightning control flow.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class StepRunner:
    """Calls ``step(x)`` once per batch, eagerly or through a CUDA graph.

    With ``graph``: the first ``warmup`` batches run eagerly on a side stream (they are real
    steps: CUDA libraries allocate their workspaces there, as capture requires); the next
    batch is copied into a static input, its step captured, and the graph replayed for it and
    every later batch. Tensors the step returns or writes (loss, gradients, Adam's state, the
    epoch sums) keep their addresses, so a replay overwrites them in place. Random draws inside
    the graph (the reparameterization's eps) advance per replay: PyTorch registers the default
    CUDA generator with the graph.
    """

    def __init__(self, step: Callable[[Tensor], Tensor], graph: bool, warmup: int = 3) -> None:
        self.step, self.graph, self.warmup = step, graph, warmup
        self.calls = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._x: Tensor | None = None
        self._loss: Tensor | None = None

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def __call__(self, x: Tensor) -> Tensor:
        self.calls += 1
        if not self.graph:
            return self.step(x)
        if self.calls <= self.warmup:
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                loss = self.step(x)
            torch.cuda.current_stream(x.device).wait_stream(side)
            return loss
        if self._graph is None:  # capture records the kernels without running them...
            self._x = x.clone()
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._loss = self.step(self._x)
        else:
            self._x.copy_(x, non_blocking=True)
        self._graph.replay()  # ...so this replay is the captured batch's real step too
        return self._loss


def graph_capable(trainer: object) -> bool:
    """Whether a fused step can be captured: one CUDA device, 32-bit weights and math."""
    device = trainer.strategy.root_device
    precision = str(trainer.precision)
    return device.type == "cuda" and trainer.world_size == 1 and precision in ("32-true", "32")
