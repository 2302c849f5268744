"""``python -m benchmarks.bench``: training images/s of the real Lightning path vs a plain loop.

Both train the same ConvVAE on the same in-memory data in one process, interleaved in blocks
of steps within one ``trainer.fit``, timed after a warm-up; the JSON line on stdout has both
rates, their ratio, one test-split evaluation's time, the peak RSS and what the Lightning path
used. On CUDA the plain loop captured as one CUDA graph is timed too, in the same process:
the floor, and the Lightning path's ratio to it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from benchmarks.peer import peer_rate
from benchmarks.plain_loop import PlainLoop, sync
from vae_latent.run.build import build, skip_idle_batch_hooks
from vae_latent.run.config import compose_config
from vae_latent.run.record import device_name


class Interleave(L.Callback):
    """Time every Lightning step; after each ``block`` of them, run ``block`` plain steps.

    A shared VM's speed drifts by 10-30% over seconds, so the two paths are timed in turns of
    a few hundred ms rather than in separate runs. A Lightning step spans on_train_batch_start
    to the next one (fetch, hooks, logging and all) minus the plain block run inside it.
    Appended last, so every other callback's work counts as Lightning's.
    """

    def __init__(self, plain: PlainLoop, warmup: int, block: int) -> None:
        self.plain, self.warmup, self.block = plain, warmup, block
        self.steps: list[float] = []  # seconds of each timed Lightning step
        self.images = 0
        self._start: float | None = None
        self._excluded = 0.0

    def _close_step(self, now: float) -> None:
        self.steps.append(now - self._start - self._excluded)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, _: int) -> None:
        now, i = time.perf_counter(), trainer.global_step  # steps count on across epochs
        if i > self.warmup and self._start is not None:  # not if an epoch's end closed it
            self._close_step(now)
        if i >= self.warmup:
            self.images += len(batch[0])
        self._start, self._excluded = now, 0.0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, out: Any, batch: Any, batch_idx: int
    ) -> None:
        device, i = pl_module.device, trainer.global_step - 1
        if i == 0 or (i + 1) % self.block == 0:
            sync(device)  # Lightning's queued work is Lightning's time
            start = time.perf_counter()
            if i == 0:  # the plain loop's warm-up, as long as Lightning's
                self.plain.run(self.warmup, timed=False)
            if (i + 1) % self.block == 0:
                self.plain.run(self.block, timed=i >= self.warmup)
            sync(device)
            self._excluded += time.perf_counter() - start
        last = batch_idx == trainer.num_training_batches - 1 or i + 1 >= trainer.max_steps
        if last and i >= self.warmup:
            sync(device)  # the step ends before the epoch's (or the fit's) end work
            self._close_step(time.perf_counter())
            self._start = None


def rates(steps: list[float], images: int, batch_size: int) -> tuple[float, float]:
    """Images/s over all timed steps, and from the median step (robust to VM stalls).

    On CUDA only the first is meaningful: steps there are asynchronous.
    """
    return images / sum(steps), batch_size / statistics.median(steps)


def compose(args: argparse.Namespace) -> Any:
    """The same configuration ``vae-latent`` would build, with the benchmark's overrides."""
    overrides = [
        f"dataset={args.dataset}",
        f"channels={args.channels}",
        f"data.root={args.data_root}",
        "data.download=false",
        f"data.batch_size={args.batch_size}",
        f"model.latent_dim={args.latent_dim}",
        f"trainer.accelerator={args.device}",
        # As many epochs as the steps need (batch 512 has 117 batches an epoch): the timed
        # steps run on across epoch ends, whose own work is left out of the timing.
        "trainer.max_epochs=1000",
        f"+trainer.max_steps={args.warmup + args.steps}",
        "trainer.limit_val_batches=0",
        "callbacks.checkpoint.monitor=null",  # no validation here: keep the last weights only
        "trainer.enable_model_summary=false",
        *args.override,
    ]
    return compose_config(overrides)


def measure(cfg: Any, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """One trainer.fit over the default callbacks and logger, the plain loop interleaved."""
    run = build(cfg, out_dir)
    datamodule, model, trainer = run.datamodule, run.model, run.trainer
    device = trainer.strategy.root_device
    check_args(args, len(datamodule.splits["train"]))
    plain = PlainLoop(cfg, datamodule, device, args.batch_size)
    timer = Interleave(plain, args.warmup, args.block)
    skip_idle_batch_hooks([timer])  # as build() did for the others: only its two hooks run
    trainer.callbacks.append(timer)
    trainer.fit(model, datamodule=datamodule)
    graph = None
    if device.type == "cuda":  # the floor: the plain loop as one CUDA graph, same process
        floor = PlainLoop(cfg, datamodule, device, args.batch_size, graph=True)
        floor.run(args.warmup, timed=False)
        sync(device)
        start = time.perf_counter()
        floor.run(args.steps, timed=False)
        sync(device)
        graph = args.steps * args.batch_size / (time.perf_counter() - start)
    start = time.perf_counter()
    trainer.test(model, datamodule=datamodule, verbose=False)
    sync(device)
    return {
        "lightning": rates(timer.steps, timer.images, args.batch_size),
        "plain": rates(plain.steps, plain.images, args.batch_size),
        "graph": graph,
        "eval_s": time.perf_counter() - start,
        "timed_steps": (len(timer.steps), len(plain.steps)),
        "device": device,
        "optimizations": optimizations(model, datamodule, trainer),
    }


def check_args(args: argparse.Namespace, train_images: int) -> None:
    """A batch must fit the split; the steps may span epochs (117 full batches at 512)."""
    if args.batch_size > train_images:
        raise SystemExit(
            f"python -m benchmarks.bench: error: --batch-size {args.batch_size} is more than the "
            f"{train_images} training images; lower --batch-size"
        )


def optimizations(model: Any, datamodule: Any, trainer: L.Trainer) -> list[str]:
    """What the Lightning path does that the plain loop does not (or both do), in words."""
    on, device = datamodule.splits["train"].images.device.type, trainer.strategy.root_device
    used = [
        f"training step: {model.step_used}",
        "channels-last convolutions (both paths: same model class)",
        f"each split one uint8 tensor on {on}, one gather per batch (both paths)",
        "epoch sums of recon/KL on the device, logged once per epoch",
        "callbacks' idle per-batch hooks hidden from Lightning",
    ]
    if (bar := trainer.progress_bar_callback) is not None:
        used.append(f"progress bar redrawn every {bar.refresh_rate} steps")
    if sys.platform.startswith("linux") and device.type == "cpu":
        used.append("freed heap kept mapped (glibc mallopt; both paths, same process)")
    return used


def floor_fields(runs: list[dict[str, Any]], lightning: list[tuple[float, float]]) -> dict:
    """On CUDA: the plain CUDA-graph loop's rate and the Lightning path's ratio to it."""
    if runs[0]["graph"] is None:
        return {}
    return {
        "graph_images_per_s": round(statistics.median(r["graph"] for r in runs), 1),
        "ratio_to_graph": round(
            statistics.median(a[0] / r["graph"] for a, r in zip(lightning, runs, strict=True)), 3
        ),
    }


def peer_fields(peers: list[float], lightning: list[tuple[float, float]]) -> dict:
    """With --peer: its images/s per turn and the Lightning path's ratio to it."""
    if not peers:
        return {}
    ratios = [a[0] / p for a, p in zip(lightning, peers, strict=True)]
    return {
        "peer_images_per_s": round(statistics.median(peers), 1),
        "ratio_to_peer": round(statistics.median(ratios), 3),
        "peer_runs": [round(p, 1) for p in peers],
    }


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--channels", default="native")
    parser.add_argument("--batch-size", type=positive, default=32)
    parser.add_argument("--latent-dim", type=positive, default=2)
    parser.add_argument("--device", default="auto", help="cpu, gpu/cuda or auto")
    parser.add_argument("--steps", type=positive, default=300, help="timed steps per measurement")
    parser.add_argument("--warmup", type=positive, default=30)
    parser.add_argument("--block", type=positive, default=10, help="steps per turn of each path")
    parser.add_argument("--repeats", type=positive, default=3, help="fits to take medians over")
    parser.add_argument("--data-root", default=os.environ.get("VAE_LATENT_DATA", "data"))
    parser.add_argument(
        "--peer",
        help="a command printing images_per_s (e.g. the seed's Keras model: "
        "'/path/python ../shared/peers/tf_cvae.py DATA --time-steps 800'), run before each fit",
    )
    parser.add_argument("override", nargs="*", help="extra Hydra overrides, e.g. model.kl=analytic")
    args = parser.parse_args(argv)
    args.device = "gpu" if args.device == "cuda" else args.device
    args.block = max(1, min(args.block, args.steps))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(args)
        # One untimed fit first: the first in a process pays one-off costs (oneDNN primitive
        # caches, allocator growth) that later ones do not.
        measure(cfg, args, Path(tmp, "warm"))
        runs, peers = [], []
        for r in range(args.repeats):  # the peer and the fits take turns: drift hits both
            if args.peer:
                peers.append(peer_rate(args.peer))
            runs.append(measure(cfg, args, Path(tmp, f"run{r}")))
    lightning = [r["lightning"] for r in runs]
    plain = [r["plain"] for r in runs]
    device = runs[0]["device"]
    result = {
        # Throughput over the whole timed span, median over the repeats.
        "lightning_images_per_s": round(statistics.median(t for t, _ in lightning), 1),
        "plain_images_per_s": round(statistics.median(t for t, _ in plain), 1),
        "ratio": round(
            statistics.median(a[0] / b[0] for a, b in zip(lightning, plain, strict=True)), 3
        ),
        # The same from each run's median step time: what a stall-free machine would see.
        "lightning_median_step_images_per_s": round(statistics.median(m for _, m in lightning), 1),
        "plain_median_step_images_per_s": round(statistics.median(m for _, m in plain), 1),
        "ratio_median_step": round(
            statistics.median(a[1] / b[1] for a, b in zip(lightning, plain, strict=True)), 3
        ),
        **floor_fields(runs, lightning),
        **peer_fields(peers, lightning),
        "lightning_runs": [round(t, 1) for t, _ in lightning],
        "plain_runs": [round(t, 1) for t, _ in plain],
        "timed_steps_per_run": dict(
            zip(("lightning", "plain"), runs[0]["timed_steps"], strict=True)
        ),
        "test_eval_seconds": round(statistics.median(r["eval_s"] for r in runs), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "dataset": args.dataset,
        "channels": args.channels,
        "batch_size": args.batch_size,
        "latent_dim": args.latent_dim,
        "steps": args.steps,
        "block": args.block,
        "device": device_name(device),
        "optimizations": runs[0]["optimizations"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
