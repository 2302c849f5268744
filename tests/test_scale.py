"""The Docker image, DDP on two CPU processes, Hydra's joblib launcher and Optuna sweeper."""

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vae_latent.run.keys import names

from .conftest import REPO, TINY, run_app


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if not found:
        pytest.fail("hadolint is missing: it comes with the dev extra (pip install -e '.[dev]')")
    return found


def test_dockerfile_passes_hadolint():
    import subprocess

    proc = subprocess.run([hadolint(), "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _pip_args(line: str) -> list[str]:
    words = line.split()
    args = words[words.index("install") + 1 :]
    return [a.strip("\"'") for a in args if a != "--no-cache-dir"]  # a cache has no use in a layer


def test_the_image_installs_what_the_readme_says():
    docker = (REPO / "Dockerfile").read_text()
    readme = (REPO / "README.md").read_text()
    runs = [line for line in docker.splitlines() if re.match(r"RUN pip install", line)]
    assert len(runs) == 1, runs
    install = re.search(r"^pip install (?!-e)[^\n]*$", readme, re.M)
    assert install, "README has no non-editable `pip install` line for users and the image"
    assert _pip_args(runs[0]) == _pip_args(install.group(0))
    # What the package needs to install is copied before the install runs.
    copied = " ".join(line for line in docker.splitlines() if line.startswith("COPY"))
    for path in ("pyproject.toml", "README.md", "vae_latent/", "conf/"):
        assert path in copied
    assert 'ENTRYPOINT ["vae-latent"]' in docker
    assert re.search(r"^USER (?!root|0\b)", docker, re.M), "the image must not run as root"
    assert "WORKDIR /app" in docker and "/app/outputs" in docker and "/app/data" in docker
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"outputs", "data", ".git"} <= set(ignored)
    # The README's run command mounts the same two folders the image declares.
    assert "-v $PWD/outputs:/app/outputs -v $PWD/data:/app/data" in readme


def test_ddp_on_two_cpu_processes_writes_one_set_of_outputs(data_root, tmp_path):
    run = tmp_path / "ddp"
    proc = run_app(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "dataset=mnist",
        f"data.root={data_root}",
        "trainer.max_epochs=2",
        *TINY,
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(names()) <= set(metrics)
    assert metrics["status"] == "complete" and metrics["world_size"] == 2
    # 2 epochs x 4 batches x 16 images on each of the 2 ranks
    assert metrics["train_images"] == 2 * 4 * 16 * 2
    assert sorted(p.name for p in (run / "epochs").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    # The test split's codes were gathered from both ranks: every test image is in the scatter.
    assert metrics["iw_images"] == 80 and (run / "latent_scatter.png").is_file()
    assert sorted(p.name for p in run.rglob("*.gif")) == ["latent_traversal.gif", "training.gif"]
    assert len(list(run.rglob("metrics.json"))) == 1
    assert len(list(run.rglob("last.ckpt"))) == 1
    assert len(list(run.glob(".hydra/config.yaml"))) == 1  # the second process writes no config
    assert not list(run.glob("*/.hydra")), "a rank wrote a run directory of its own"


def _sweep_rows(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv") as f:
        return [r for r in csv.DictReader(f) if r["kind"] == "run"]


def test_joblib_runs_jobs_in_worker_processes_and_a_failing_one_fails_the_sweep(
    app, data_root, tmp_path
):
    """Jobs run (and one fails) in joblib's worker processes; the report and exit code say so."""
    sweep = tmp_path / "sweep"
    proc = app(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "dataset=mnist",
        "model.lr=1.0e-4,1.0e3",  # 1e3 diverges at once: a failure only the run can find
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        "callbacks=none",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 job(s) failed" in proc.stderr and "model.lr=1000.0" in proc.stderr
    statuses = sorted((float(r["lr"]), r["status"]) for r in _sweep_rows(sweep))
    assert statuses == [(1e-4, "complete"), (1e3, "failed")]
    assert "2 runs: 1 complete, 1 failed" in (sweep / "report.md").read_text()


def test_optuna_sweeper_runs_trials_and_reports_the_best(app, data_root, tmp_path):
    sweep = tmp_path / "search"
    proc = app(
        "-m",
        "experiment=optuna",
        "hydra.sweeper.n_trials=2",
        "callbacks=none",
        "dataset=mnist",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _sweep_rows(sweep)
    assert len(rows) == 2 and all(r["status"] == "complete" for r in rows)
    result = OmegaConf.load(sweep / "optimization_results.yaml")
    best = max(rows, key=lambda r: float(r["best_val_elbo"]))
    assert float(result.best_value) == pytest.approx(float(best["best_val_elbo"]))
    assert set(result.best_params) == {"model.lr", "model.latent_dim"}
    report = (sweep / "report.md").read_text()
    assert "## Best trial (Optuna)" in report and f"run `{best['run']}`" in report


def test_slurm_launcher_preset_composes(tmp_path):
    """Not run here (no cluster): the preset must compose onto the submitit plugin's config."""
    from hydra import compose, initialize_config_dir

    from vae_latent.run.config import conf_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.timeout_min) == (1, 1, 240)
