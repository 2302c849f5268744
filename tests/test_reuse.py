"""Reusing what was trained: vae-latent-eval on a checkpoint alone, resumed sweeps, seed means."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

from .test_cli import TINY, assert_one_line_error, run_cli

FIGURES = {
    "grid.png",
    "latent_manifold.png",
    "latent_scatter.png",
    "latent_traversal.png",
    "interpolation.png",
}


def run_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vae_latent.evaluate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """One tiny MNIST run (latent 2), trained once for every test here."""
    run = tmp_path_factory.mktemp("trained") / "run"
    proc = run_cli(
        "dataset=mnist",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        *TINY,
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_eval_from_another_directory_reproduces_the_test_metrics(trained, data_root, tmp_path):
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    ckpt = trained / trained_metrics["test_checkpoint"]  # the checkpoint training tested
    out = tmp_path / "eval"
    proc = run_eval(
        f"ckpt={ckpt}",
        f"data.root={data_root}",
        "metrics.iw_samples=16",
        "sample.n=16",
        "sample.seed=3",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(ckpt) and metrics["checkpoint_epoch"] == 1
    assert (metrics["dataset"], metrics["channels"]) == ("mnist", "native")
    assert metrics["same_data_as_training"] is True
    # The test ELBO is a single-sample Monte Carlo estimate: same weights, other noise.
    assert metrics["test_elbo"] == pytest.approx(trained_metrics["test_elbo"], abs=1.0)
    for key in ("active_units", "linear_probe_acc", "knn_acc", "iw_nll", "versions", "device"):
        assert metrics[key] is not None, key
    # The probes fit on the training run's own train split: same images, same numbers.
    assert metrics["active_units"] == trained_metrics["active_units"]
    assert FIGURES | {"samples.png"} <= {p.name for p in out.glob("*.png")}
    samples = iio.imread(out / "samples.png")
    assert samples.ndim == 3 and samples.shape[0] > 200
    assert not (tmp_path / "outputs").exists()  # hydra.run.dir was honoured

    # Another dataset of the same shape: the out-of-distribution question. It says so, and
    # the same sample.seed draws the same prior samples.
    ood = tmp_path / "ood"
    proc = run_eval(
        f"ckpt={ckpt}",
        f"data.root={data_root}",
        "dataset=fashion_mnist",
        "data.val_size=40",  # another dataset's split: the fixture has 240 training images
        "metrics.iw_samples=0",
        "callbacks=none",
        "sample.n=16",
        "sample.seed=3",
        f"hydra.run.dir={ood}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = json.loads((ood / "metrics.json").read_text())
    assert (other["dataset"], other["same_data_as_training"]) == ("fashion_mnist", False)
    assert other["trained_on"] == {"name": "mnist", "channels": "native", "binarize": True}
    assert other["test_elbo"] != metrics["test_elbo"]
    assert {p.name for p in ood.glob("*.png")} == {"samples.png"}  # callbacks=none: no figures
    assert (iio.imread(ood / "samples.png") == samples).all()


def test_eval_on_data_of_another_shape_is_one_line_naming_both(trained, data_root, tmp_path):
    proc = run_eval(
        f"ckpt={trained / 'checkpoints' / 'last.ckpt'}",
        f"data.root={data_root}",
        "dataset=cifar10",
        "channels=rgb",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert_one_line_error(proc, "vae-latent-eval: error:", "1×28×28", "3×32×32")
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_eval_rejects_a_missing_checkpoint_and_one_without_its_data(trained, tmp_path):
    proc = run_eval(f"ckpt={tmp_path / 'nope.ckpt'}", cwd=tmp_path)
    assert_one_line_error(proc, "nope.ckpt", "no such file")
    # A checkpoint from before the datamodule's settings travelled in it still loads...
    old = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    del old["datamodule_hyper_parameters"]
    torch.save(old, tmp_path / "old.ckpt")
    import vae_latent

    model = vae_latent.load(tmp_path / "old.ckpt")
    z = torch.zeros(3, 2)
    assert model.decode(z).shape == (3, 1, 28, 28) and not model.training
    # ...and the eval app asks for the data it cannot know.
    proc = run_eval(f"ckpt={tmp_path / 'old.ckpt'}", cwd=tmp_path)
    assert_one_line_error(proc, "old.ckpt", "dataset=")


def test_resumed_sweep_reruns_only_the_missing_job_and_averages_seeds(data_root, tmp_path):
    sweep = tmp_path / "sweep"
    command = [
        "-m",
        "dataset=mnist,fashion_mnist",
        "seed=1,2,3",
        "callbacks=none",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    ]
    first = run_cli(*command)
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(jobs) == 6
    lost = next(j for j in jobs if {"dataset=mnist", "seed=2"} <= set(j.name.split(",")))
    (lost / "metrics.json").unlink()
    kept = {f: f.stat().st_mtime_ns for j in jobs if j != lost for f in j.rglob("*")}
    assert any(f.name == "cli.log" for f in kept) and any(f.suffix == ".ckpt" for f in kept)

    again = run_cli(*command, "resume=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {f: f.stat().st_mtime_ns for f in kept} == kept  # complete jobs untouched
    assert {f for j in jobs if j != lost for f in j.rglob("*")} == set(kept)  # nothing added
    assert json.loads((lost / "metrics.json").read_text())["status"] == "complete"

    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["kind"] for r in rows] == ["run"] * 6 + ["seed_mean"] * 2
    by_dataset = {r["dataset"]: r for r in rows if r["kind"] == "seed_mean"}
    assert set(by_dataset) == {"mnist", "fashion_mnist"}
    for name, group in by_dataset.items():
        elbos = [float(r["test_elbo"]) for r in rows if r["kind"] == "run" and r["dataset"] == name]
        assert group["n"] == "3" and group["seed"] == "1 2 3"
        assert float(group["test_elbo"]) == pytest.approx(sum(elbos) / 3)
        assert float(group["test_elbo_std"]) == pytest.approx(torch.tensor(elbos).std().item())
    report = (sweep / "report.md").read_text()
    assert "## Mean ± std over seeds" in report
    table = report.split("## Mean ± std over seeds")[1].split("## Runs")[0]
    rows_md = [line for line in table.splitlines() if line.startswith("| mnist ")]
    rows_md += [line for line in table.splitlines() if line.startswith("| fashion_mnist ")]
    assert len(rows_md) == 2 and all(" | 3 | " in r and " ± " in r for r in rows_md)
