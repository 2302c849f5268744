"""The plain PyTorch training loop the bench measures the Lightning path against."""

from __future__ import annotations

import time
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PlainLoop:
    """A hand-written training loop: same model class and loss, plain Adam, in-memory batches.

    With ``graph`` (CUDA only) the whole step (forward, loss, backward, Adam with
    ``capturable=True``) is captured once as a CUDA graph and replayed, as in
    ``shared/peers/gpu_floor.py``: the floor for this model on that GPU.
    """

    def __init__(
        self, cfg: Any, datamodule: Any, device: torch.device, batch_size: int, graph: bool = False
    ) -> None:
        from hydra.utils import instantiate

        self.model = instantiate(cfg.model, image_shape=datamodule.image_shape).vae.to(device)
        self.model.train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.model.lr, capturable=graph)
        self.datamodule, self.device, self.bs = datamodule, device, batch_size
        self.order: torch.Tensor | None = None  # drawn on the split's device at the first step
        self.i = 0
        self.steps: list[float] = []  # seconds of each timed step
        self.images = 0
        self.graph = graph
        self._graph: Any = None

    def batch(self) -> torch.Tensor:
        """The next full batch (a graph's input has one shape), gathered where the split lives."""
        split = self.datamodule.splits["train"]  # on a GPU once fit has moved it there
        if self.order is None:
            self.order = torch.randperm(len(split), device=split.images.device)
        start = (self.i % (len(split) // self.bs)) * self.bs
        self.i += 1
        return split.take(self.order[start : start + self.bs])[0].to(self.device)

    def _loss(self, x: torch.Tensor) -> torch.Tensor:
        recon, kl = self.model(x)
        return (recon + kl).mean()

    def _step(self, x: torch.Tensor) -> None:
        if not self.graph:
            self.opt.zero_grad(set_to_none=True)
            self._loss(x).backward()
            self.opt.step()
            return
        if self._graph is None:  # warm up on a side stream, then capture the whole step
            self._x = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.opt.zero_grad(set_to_none=True)
                    self._loss(self._x).backward()
                    self.opt.step()
            torch.cuda.current_stream().wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            self.opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(self._graph):
                self._loss(self._x).backward()
                self.opt.step()
        self._x.copy_(x)
        self._graph.replay()

    def run(self, n: int, timed: bool) -> None:
        start = time.perf_counter()
        for _ in range(n):
            step_start = time.perf_counter()
            self._step(self.batch())
            if timed and self.device.type != "cuda":
                self.steps.append(time.perf_counter() - step_start)
        if timed:
            self.images += n * self.bs
            if self.device.type == "cuda":  # asynchronous: time the block, its queued work too
                sync(self.device)
                self.steps += [(time.perf_counter() - start) / n] * n
