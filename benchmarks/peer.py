"""``python -m benchmarks.peer --peer CMD``: ``vae-latent``'s training speed beside a peer.

The peer is any command that prints a JSON line with ``images_per_s`` (the seed's own Keras model:
``--peer "/path/to/python ../shared/peers/tf_cvae.py DATA --time-steps 800"``; TensorFlow is never
a dependency of this project). Each round runs the peer, then ``vae-latent`` twice on the same
data with the pictures off (``callbacks=none``: checkpoints and progress bar stay) and the IW
estimate off, for ``--short`` and ``--long`` training
steps; the steady state is ``(long - short) * batch / (wall(long) - wall(short))``, so start-up,
data reading, testing and writing cancel. The long run also times its own steps ``short`` to
``long`` (a ``StepTimer`` callback): the same steady state from one process, as the peer times
itself, without two processes' differences. Rounds alternate, so the VM's drift hits both; the
JSON line at the end has every round and the median ratios. ``--baseline DIR`` adds another
checkout's ``vae-latent`` (e.g. a worktree of the commit before a change) to every round, its two
runs and this checkout's in alternating order: ``ratio_to_baseline`` is what the change bought
across processes, in the same window.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L


def peer_rate(command: str) -> float:
    """The peer's images/s, from the last JSON line it prints with ``images_per_s``."""
    proc = subprocess.run(shlex.split(command), capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{") and "images_per_s" in line:
            return float(json.loads(line)["images_per_s"])
    raise SystemExit(f"python -m benchmarks.peer: error: the peer printed no images_per_s "
                     f"(exit {proc.returncode}): {proc.stderr.strip()[-300:]}")  # fmt: skip


class StepTimer(L.Callback):
    """Times training steps ``start`` to ``end`` in its own process; writes images/s to ``path``."""

    def __init__(self, start: int, end: int, batch_size: int, path: str) -> None:
        self.start, self.end, self.batch_size, self.path = start, end, batch_size, path
        self._t: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.start:
            self._t = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.end and self._t is not None:
            rate = (self.end - self.start) * self.batch_size / (time.perf_counter() - self._t)
            Path(self.path).write_text(json.dumps({"images_per_s": rate}))


HERE = Path(__file__).parents[1]  # this checkout: its vae_latent and benchmarks


def wall(
    steps: int, args: argparse.Namespace, tmp: Path, timer: Path | None = None, root: Path = HERE
) -> float:
    """Seconds of one whole ``vae-latent`` run of ``steps`` training steps, from ``root``'s code."""
    run = tmp / f"run-{steps}-{time.monotonic_ns()}"
    command = [
        sys.executable, "-m", "vae_latent", f"data.root={args.data_root}", "data.download=false",
        f"+trainer.max_steps={steps}", "trainer.max_epochs=1000", "trainer.limit_val_batches=0",
        "callbacks=none", "callbacks.checkpoint.monitor=null", "metrics.iw_samples=0",
        f"hydra.run.dir={run}", *args.override,
    ]  # fmt: skip
    if timer is not None:  # the steps short..long timed inside this run
        spec = f"_target_:benchmarks.peer.StepTimer,start:{args.short},end:{steps}"
        spec += f",batch_size:{args.batch_size},path:'{timer}'"
        command.append(f"+callbacks.step_timer={{{spec}}}")
    start = time.perf_counter()
    # ``-m`` puts the working directory first on sys.path: run in ``root``, so that its
    # vae_latent (and benchmarks, for the timer) is what the run imports.
    proc = subprocess.run(command, capture_output=True, text=True, cwd=root)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(
            f"python -m benchmarks.peer: error: vae-latent failed: {proc.stderr[-400:]}"
        )
    return seconds


def rate(args: argparse.Namespace, short: float, long: float) -> float:
    """Steady-state images/s from the walls of a short and a long run: start-up and test cancel."""
    return (args.long - args.short) * args.batch_size / (long - short)


def steady(args: argparse.Namespace, tmp: Path, root: Path) -> float:
    """``root``'s steady-state images/s, from its own short and long run."""
    return rate(args, wall(args.short, args, tmp, root=root), wall(args.long, args, tmp, root=root))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer", description=__doc__)
    parser.add_argument("--peer", required=True, help="a command printing images_per_s")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--short", type=int, default=200, help="training steps of the short run")
    parser.add_argument("--long", type=int, default=1600, help="training steps of the long run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--baseline", type=Path, help="another checkout, run in the same rounds")
    parser.add_argument("override", nargs="*", help="Hydra overrides for vae-latent")
    args = parser.parse_args(argv)
    args.data_root = str(Path(args.data_root).resolve())  # the runs start in their checkout
    if args.baseline and not (args.baseline / "vae_latent" / "__main__.py").is_file():
        raise SystemExit(
            f"python -m benchmarks.peer: error: --baseline {args.baseline} has no vae_latent "
            "package; give a checkout of this repository (e.g. git worktree add DIR COMMIT)"
        )
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            peer = peer_rate(args.peer)
            timer = Path(tmp, "timer.json")
            base = None
            if args.baseline and i % 2:  # the two checkouts take turns going first
                base = steady(args, Path(tmp), args.baseline)
            short = wall(args.short, args, Path(tmp))
            long = wall(args.long, args, Path(tmp), timer)
            if args.baseline and not i % 2:
                base = steady(args, Path(tmp), args.baseline)
            ours = rate(args, short, long)
            in_run = json.loads(timer.read_text())["images_per_s"]
            rounds.append(
                {
                    "peer_images_per_s": round(peer, 1),
                    "vae_latent_images_per_s": round(ours, 1),
                    "ratio_to_peer": round(ours / peer, 3),
                    "in_run_images_per_s": round(in_run, 1),
                    "in_run_ratio_to_peer": round(in_run / peer, 3),
                    "wall_short_s": round(short, 2),
                    "wall_long_s": round(long, 2),
                }
            )
            if base is not None:
                rounds[-1].update(
                    baseline_images_per_s=round(base, 1),
                    baseline_ratio_to_peer=round(base / peer, 3),
                    ratio_to_baseline=round(ours / base, 3),
                )
            print(json.dumps(rounds[-1]), flush=True)
    result = {
        "median_ratio_to_peer": statistics.median(r["ratio_to_peer"] for r in rounds),
        "median_in_run_ratio_to_peer": statistics.median(r["in_run_ratio_to_peer"] for r in rounds),
        "rounds": rounds,
        "steps": [args.short, args.long],
        "overrides": args.override,
        "peer": args.peer,
    }
    if args.baseline:
        for key in ("baseline_ratio_to_peer", "ratio_to_baseline"):
            result[f"median_{key}"] = statistics.median(r[key] for r in rounds)
        result["baseline"] = str(args.baseline)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
