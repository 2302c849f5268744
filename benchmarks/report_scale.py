"""``python -m benchmarks.report_scale``: ``vae-latent-report`` over a sweep of thousands of runs.

Trains one tiny real run (or takes ``--template``, a run directory), then writes ``--runs``
run folders beside each other: each with its own ``.hydra/config.yaml`` and ``metrics.json``
(tiers, latent sizes and seeds varied, scores jittered), and the template's pictures,
``latent_metrics.csv`` and ``explorer.html`` as hard links (the same bytes, no disk per run).
Then it times ``vae-latent-report`` on it in a fresh process and prints one JSON line: the
seconds, the report process's peak RSS, and what the report wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

# The template's files every run folder links to (those that exist).
LINKED = [
    "explorer.html",
    "grid.png",
    "latent_manifold.png",
    "latent_scatter.png",
    "latent_traversal.png",
    "latent_metrics.csv",
]
# vae-latent-report in a process that prints its own peak RSS (kB) on the way out.
REPORT = """import resource, sys
from vae_latent.cli import report_main
try:
    report_main()
finally:
    print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""
TIERS = [("mnist", "native"), ("fashion_mnist", "native"), ("cifar10", "rgb"), ("cifar10", "gray")]


def template_run(data_root: str, where: Path) -> Path:
    """A real run of a few steps with every picture (fixture-sized work, real files)."""
    run = where / "template"
    command = [
        sys.executable, "-m", "vae_latent", f"data.root={data_root}", "data.download=false",
        "trainer.max_epochs=1", "trainer.limit_train_batches=4", "data.val_size=1000",
        "metrics.iw_samples=0", "trainer.enable_progress_bar=false", f"hydra.run.dir={run}",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return run


def write_sweep(template: Path, sweep: Path, runs: int, seed: int = 0) -> None:
    """``runs`` run folders under ``sweep``, varied, their big files linked to ``template``."""
    rng = random.Random(seed)
    config = yaml.safe_load((template / ".hydra" / "config.yaml").read_text())
    metrics = json.loads((template / "metrics.json").read_text())
    for i in range(runs):
        dataset, channels = TIERS[i % len(TIERS)]
        latent = (2, 8, 32)[(i // len(TIERS)) % 3]
        run_seed = i // (len(TIERS) * 3)
        run = sweep / f"job_{i:05d}"
        (run / ".hydra").mkdir(parents=True)
        config["data"].update(name=dataset, channels=channels)
        config["model"]["latent_dim"] = latent
        config["seed"] = run_seed
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        record = {**metrics, "dataset": dataset, "channels": channels, "latent_dim": latent}
        record["seed"] = run_seed
        for key in ("test_elbo", "linear_probe_acc", "knn_acc", "silhouette"):
            if isinstance(record.get(key), float):
                record[key] += rng.gauss(0, 0.01 * abs(record[key]) + 1e-3)
        (run / "metrics.json").write_text(json.dumps(record))
        for name in LINKED:
            if (template / name).is_file():
                os.link(template / name, run / name)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report_scale", description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--data-root", default="data", help="where the template run reads MNIST")
    parser.add_argument("--template", type=Path, help="a run directory to copy instead")
    parser.add_argument("--work", type=Path, help="a folder to keep the sweep in (else a temp)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        where = args.work or Path(tmp)
        template = args.template or template_run(str(Path(args.data_root).resolve()), where)
        sweep = where / "sweep"
        write_sweep(template, sweep, args.runs)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", REPORT, str(sweep)], capture_output=True,
                              text=True)  # fmt: skip
        seconds = time.perf_counter() - start
        peak = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("PEAK_KB")]
        result = {
            "runs": args.runs,
            "report_seconds": round(seconds, 2),
            "report_exit": proc.returncode,
            "report_peak_rss_mb": round(int(peak[0]) / 1024) if peak else None,
            "files": sorted(p.name for p in sweep.iterdir() if p.is_file()),
            "stderr_tail": proc.stderr[-300:],
        }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
