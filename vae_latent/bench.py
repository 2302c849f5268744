"""``python -m vae_latent.bench``: training images/s of the real Lightning path vs a plain loop.

Both train the same ConvVAE on the same in-memory batches of real data, in one process, timed
after a warm-up; the JSON line on stdout has both rates, their ratio, one test-split
evaluation's time and the peak RSS.
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

from vae_latent.cli import build, compose_config, device_name


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(L.Callback):
    """Time stamps at the start of every timed batch and at the end of the last one."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.stamps, self.images = warmup, [], 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, i: int) -> None:
        if i >= self.warmup:
            if i == self.warmup:
                sync(pl_module.device)
            self.stamps.append(time.perf_counter())
            self.images += len(batch[0])

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, out: Any, batch: Any, i: int
    ) -> None:
        if i == trainer.num_training_batches - 1:  # the clock stops before epoch-end work
            sync(pl_module.device)
            self.stamps.append(time.perf_counter())


def rates(stamps: list[float], images: int, batch_size: int) -> tuple[float, float]:
    """Images/s over the whole timed span, and from the median step (robust to VM stalls).

    On CUDA only the first is meaningful: steps there are asynchronous.
    """
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return images / (stamps[-1] - stamps[0]), batch_size / statistics.median(steps)


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
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.warmup + args.steps}",
        "trainer.limit_val_batches=0",
        "checkpoint.monitor=null",  # no validation here: keep the last weights only
        "trainer.enable_model_summary=false",
        *args.override,
    ]
    return compose_config(overrides)


def lightning_rate(
    cfg: Any, args: argparse.Namespace, out_dir: Path
) -> tuple[tuple[float, float], float, Any]:
    """Images/s of trainer.fit over the default callbacks and logger; test-split eval seconds."""
    datamodule, model, trainer, _ = build(cfg, out_dir)
    timer = StepTimer(args.warmup)
    trainer.callbacks.append(timer)
    trainer.fit(model, datamodule=datamodule)
    start = time.perf_counter()
    trainer.test(model, datamodule=datamodule, verbose=False)
    sync(model.device)
    return (
        rates(timer.stamps, timer.images, args.batch_size),
        time.perf_counter() - start,
        datamodule,
    )


def plain_rate(
    cfg: Any, args: argparse.Namespace, datamodule: Any, device: torch.device
) -> tuple[float, float]:
    """Images/s of a hand-written loop: same model, loss, optimizer and in-memory batches."""
    from hydra.utils import instantiate

    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model, image_shape=datamodule.image_shape).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.model.lr)
    split = datamodule.splits["train"]
    order = torch.randperm(len(split))
    bs, n = args.batch_size, args.warmup + args.steps

    stamps = []
    for i in range(n):
        if i >= args.warmup:
            if i == args.warmup:
                sync(device)
            stamps.append(time.perf_counter())
        x = split.take(order[(i * bs) % len(split) :][:bs])[0].to(device, non_blocking=True)
        recon, kl = model(x)
        loss = (recon + kl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    stamps.append(time.perf_counter())
    return rates(stamps, args.steps * bs, bs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m vae_latent.bench", description=__doc__)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--channels", default="native")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--latent-dim", type=int, default=2)
    parser.add_argument("--device", default="auto", help="cpu, gpu/cuda or auto")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument(
        "--repeats", type=int, default=4, help="alternate the two paths, take medians"
    )
    parser.add_argument("--data-root", default=os.environ.get("VAE_LATENT_DATA", "data"))
    parser.add_argument("override", nargs="*", help="extra Hydra overrides, e.g. model.kl=analytic")
    args = parser.parse_args(argv)
    args.device = "gpu" if args.device == "cuda" else args.device

    use_cuda = args.device in ("gpu", "auto") and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    lightning, plain, evals = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(args)
        # One untimed round of each path first: the first run in a process pays one-off costs
        # (oneDNN primitive caches, allocator growth) that later ones do not. Then alternate,
        # swapping which path goes first in every other pair so that a drift of the machine's
        # speed (common on shared VMs) does not favour either.
        _, _, datamodule = lightning_rate(cfg, args, Path(tmp, "warm"))
        plain_rate(cfg, args, datamodule, device)
        for r in range(args.repeats):
            if r % 2:
                plain.append(plain_rate(cfg, args, datamodule, device))
            rate, eval_s, _ = lightning_rate(cfg, args, Path(tmp, f"run{r}"))
            lightning.append(rate)
            evals.append(eval_s)
            if not r % 2:
                plain.append(plain_rate(cfg, args, datamodule, device))
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
        "lightning_runs": [round(t, 1) for t, _ in lightning],
        "plain_runs": [round(t, 1) for t, _ in plain],
        "test_eval_seconds": round(statistics.median(evals), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "dataset": args.dataset,
        "channels": args.channels,
        "batch_size": args.batch_size,
        "latent_dim": args.latent_dim,
        "steps": args.steps,
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
