import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import REPO

TINY = [
    "data.val_size=40",
    "data.batch_size=16",
    "trainer.limit_train_batches=4",
    "trainer.accelerator=cpu",
    "metrics.iw_samples=16",
]


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vae_latent", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_cli_smoke_run_writes_the_run_directory(data_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    proc = run_cli(
        "dataset=mnist",
        f"data.root={data_root}",
        "trainer.max_epochs=2",
        *TINY,
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert (metrics["dataset"], metrics["channels"], metrics["latent_dim"]) == (
        "mnist",
        "native",
        2,
    )
    assert metrics["params"] == 69_989 and metrics["epochs"] == 2
    assert metrics["train_images"] == 2 * 4 * 16 and metrics["images_per_second"] > 0
    assert metrics["test_elbo"] == pytest.approx(
        -(metrics["test_recon"] + metrics["test_kl"]), rel=1e-5
    )
    assert (run / metrics["test_checkpoint"]).is_file()
    assert metrics["test_checkpoint"].startswith("checkpoints/best-")
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()

    assert set(metrics["versions"]) == {
        "python",
        "torch",
        "torchvision",
        "lightning",
        "hydra",
        "numpy",
        "scikit-learn",
    }
    assert metrics["device"]
    # A model from its checkpoint alone, from any working directory.
    ckpt = run / "checkpoints" / "last.ckpt"
    code = f"import vae_latent; m = vae_latent.load({str(ckpt)!r}); "
    code += "print(tuple(m.sample(4).shape), m.training)"
    load = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert load.stdout.strip() == "(4, 1, 28, 28) False", load.stderr[-2000:]
    # Checkpoints hold plain types only: they load with weights_only=True.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["image_shape"] == (1, 28, 28)

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/elbo", "val/elbo", "val/recon", "val/kl", "test/elbo"} <= tags
    assert len(events.Scalars("val/elbo")) == 2
    assert events.Scalars("test/elbo")[0].value == pytest.approx(metrics["test_elbo"], rel=1e-5)


def test_missing_data_is_one_line_naming_the_path(tmp_path):
    missing = tmp_path / "nonexistent"
    proc = run_cli(f"data.root={missing}", "data.download=false", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(
        proc, str(missing), "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"
    )


def test_rgb_on_mnist_is_one_line(tmp_path, data_root):
    proc = run_cli("channels=rgb", f"data.root={data_root}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(proc, "channels=rgb", "mnist")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.latent_dim=0", "model.latent_dim"),
        ("model.lr=-1", "model.lr"),
        ("data.batch_size=0", "data.batch_size"),
    ],
)
def test_non_positive_settings_are_one_line(tmp_path, override, key):
    assert_one_line_error(run_cli(override, f"hydra.run.dir={tmp_path / 'r'}"), key)


def test_help_lists_the_config_groups():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for group in (
        "dataset: cifar10, fashion_mnist, mnist",
        "channels: gray, native, rgb",
        "model:",
        "trainer:",
        "logger:",
        "callbacks:",
    ):
        assert group in proc.stdout


def test_multirun_composes_every_combination_and_fails_only_bad_ones(data_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        "dataset=mnist,fashion_mnist",
        "channels=native,rgb",
        "model.latent_dim=2,3",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 1  # two rgb jobs failed
    done = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    failed = sorted(p.parent.name for p in sweep.glob("*/error.txt"))
    assert len(done) == 4 and all("channels=native" in d for d in done)
    assert len(failed) == 4 and all("channels=rgb" in f for f in failed)
    assert "needs a colour dataset" in (sweep / failed[0] / "error.txt").read_text()
    latents = {json.loads((sweep / d / "metrics.json").read_text())["latent_dim"] for d in done}
    assert latents == {2, 3}
    # The Hydra callback wrote the report at the end of the multirun, failures included.
    with open(sweep / "summary.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "run"]
    assert sorted(r["status"] for r in rows) == ["complete"] * 4 + ["failed"] * 4
    assert "failed" in (sweep / "report.md").read_text()


@pytest.mark.usefixtures("cifar_md5")
@pytest.mark.parametrize(
    ("channels", "shape", "params"), [("rgb", [3, 32, 32], 75_911), ("gray", [1, 32, 32], None)]
)
def test_cifar10_trains_from_cifar_format_files(data_root, tmp_path, channels, shape, params):
    from vae_latent.cli import compose_config, train

    cfg = compose_config(
        [
            "dataset=cifar10",
            f"channels={channels}",
            f"data.root={data_root}",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            *TINY,
        ]
    )
    metrics = train(cfg, tmp_path)
    assert metrics["image_shape"] == shape and metrics["binarize"] is False
    if params:
        assert metrics["params"] == params
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert metrics["test_elbo"] < 0 and (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_callbacks_none_writes_no_figures(data_root, tmp_path):
    run = tmp_path / "run"
    proc = run_cli(
        "callbacks=none",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        *TINY,
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "metrics.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert not list(run.rglob("*.png")) and not list(run.rglob("*.gif"))
    assert not (run / "tensorboard" / "projector_config.pbtxt").exists()


def test_two_sweeps_started_together_get_two_directories(data_root, tmp_path):
    args = [
        sys.executable,
        "-m",
        "vae_latent",
        "-m",
        "callbacks=none",
        "model.latent_dim=2",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        *TINY,
    ]
    procs = [
        subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert len(list((tmp_path / "outputs" / "multirun").iterdir())) == 2
