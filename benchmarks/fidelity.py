"""``python -m benchmarks.fidelity --peer CMD``: this project's test ELBO beside the seed model's.

The study's protocol on MNIST at latent 2 (``experiment=paper``: all 60,000 training images,
10 epochs, the last epoch tested) for each seed and each arm (a set of overrides, e.g.
``--arm keras=model.init=keras --arm torch=model.init=torch``), alternating with runs of the
peer (the seed's own Keras model: ``--peer "/path/python ../shared/peers/tf_cvae.py DATA
--epochs 10"``, whose JSON lines end with the last epoch's ``test_elbo``; it draws its own seed).
Prints each run, then every arm's and the peer's mean ± sample std in one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def peer_elbo(command: str) -> float:
    """The last ``test_elbo`` the peer prints."""
    proc = subprocess.run(shlex.split(command), capture_output=True, text=True)
    found = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    found = [x["test_elbo"] for x in found if "test_elbo" in x]
    if not found:
        raise SystemExit(f"python -m benchmarks.fidelity: error: the peer printed no test_elbo "
                         f"(exit {proc.returncode}): {proc.stderr.strip()[-300:]}")  # fmt: skip
    return float(found[-1])


def our_elbo(seed: int, overrides: list[str], data_root: str, out: Path) -> dict:
    """One study-protocol run; its record's test ELBO and the settings that made it."""
    command = [
        sys.executable, "-m", "vae_latent", "experiment=paper", f"seed={seed}",
        f"data.root={data_root}", "data.download=false", "callbacks=none", "logger=none",
        "metrics.iw_samples=0", "trainer.enable_progress_bar=false", f"hydra.run.dir={out}",
        *overrides,
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"python -m benchmarks.fidelity: error: {proc.stderr.strip()[-400:]}")
    record = json.loads((out / "metrics.json").read_text())
    keys = ("test_elbo", "init", "epochs", "global_steps", "images_per_second")
    return {k: record.get(k) for k in keys}


def summary(values: list[float]) -> dict:
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": round(statistics.mean(values), 3), "std": std and round(std, 3),
            "n": len(values), "values": [round(v, 3) for v in values]}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fidelity", description=__doc__)
    parser.add_argument("--peer", help="a command printing the seed model's test_elbo per epoch")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--arm", action="append", default=[], help="NAME=override[ override...]")
    parser.add_argument("--data-root", default="data")
    args = parser.parse_args(argv)
    arms = {"default": []}
    if args.arm:
        arms = {a.split("=", 1)[0]: shlex.split(a.split("=", 1)[1]) for a in args.arm}
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[float]] = {name: [] for name in arms} | {"peer": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:  # the peer and each arm take turns
            if args.peer:
                results["peer"].append(peer_elbo(args.peer))
                print(json.dumps({"peer": results["peer"][-1]}), flush=True)
            for name, overrides in arms.items():
                run = our_elbo(seed, overrides, args.data_root, Path(tmp, f"{name}-{seed}"))
                results[name].append(run["test_elbo"])
                print(json.dumps({"arm": name, "seed": seed, **run}), flush=True)
    out = {name: summary(v) for name, v in results.items() if v}
    print(json.dumps({"fidelity": out, "seeds": seeds, "arms": arms}), flush=True)
    return out


if __name__ == "__main__":
    main()
