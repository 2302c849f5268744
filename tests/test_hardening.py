"""Resume after SIGKILL, fault-isolated sweeps, non-finite loss, and one line for bad input."""

import csv
import errno
import json
import pickle
import shutil
import signal
import subprocess
import sys
import time
from argparse import Namespace

import pytest
import torch

from vae_latent.callbacks import save_atomic
from vae_latent.cli import check_checkpoint
from vae_latent.errors import DataError, user_error

from .conftest import REPO
from .test_cli import TINY, assert_one_line_error, run_cli


def test_sigkill_after_first_epoch_then_resume(data_root, tmp_path):
    run = tmp_path / "run"
    # Batch 1 makes an epoch ~200 steps, long enough to kill the run inside epoch 2.
    args = [
        sys.executable,
        "-m",
        "vae_latent",
        f"data.root={data_root}",
        "data.val_size=40",
        "data.batch_size=1",
        "trainer.limit_train_batches=200",
        "trainer.max_epochs=3",
        "trainer.accelerator=cpu",
        "metrics.iw_samples=16",
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"  # saved at the end of epoch 1
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let the write finish; epoch 2 (200 steps) is still running
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "metrics.json").exists()

    done = run_cli(f"resume={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    grids = sorted(p.name for p in (run / "epochs").iterdir())
    assert grids == ["epoch_001.png", "epoch_002.png", "epoch_003.png"]
    import imageio.v3 as iio

    assert iio.imread(run / "training.gif", index=None).shape[0] == 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["epochs"] == 3
    # The resumed run kept its own config (batch 1), not this command's defaults.
    assert metrics["batch_size"] == 1

    # A complete run is not retrained: same command, nothing changes.
    files = [run / "metrics.json", run / "checkpoints" / "last.ckpt", run / "training.gif"]
    before = [f.stat().st_mtime_ns for f in files]
    assert run_cli(f"resume={run}").returncode == 0
    assert [f.stat().st_mtime_ns for f in files] == before


def test_a_failing_job_does_not_stop_the_sweep(data_root, tmp_path):
    sweep = tmp_path / "sweep"
    # "bogus" is not a precision Lightning knows: that job crashes in Trainer(...).
    proc = run_cli(
        "-m",
        "trainer.precision=32-true,bogus,32",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 1
    with open(sweep / "summary.csv") as f:
        runs = [r for r in csv.DictReader(f) if r["kind"] == "run"]
    status = {r["run"].rsplit(",", 1)[1]: r["status"] for r in runs}
    assert status == {
        "trainer.precision=32-true": "complete",
        "trainer.precision=bogus": "failed",
        "trainer.precision=32": "complete",
    }
    report = (sweep / "report.md").read_text()
    assert "trainer.precision=bogus`: **failed**" in report
    assert "1 job(s) failed" in proc.stderr


def test_lr_1e3_stops_on_non_finite_loss_with_a_usable_checkpoint(data_root, tmp_path):
    run = tmp_path / "run"
    proc = run_cli(
        "model.lr=1e3",
        f"data.root={data_root}",
        "trainer.max_epochs=2",
        *TINY,
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "non-finite loss at epoch 1, step" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    last = run / "checkpoints" / "last.ckpt"
    check_checkpoint(last)  # loads weights-only and is ours
    state = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "non-finite loss" in metrics["error"]


def _truncated_mnist(data_root, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(data_root / "MNIST", root / "MNIST")
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    return root


def _corrupt_cifar(data_root, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(data_root / "cifar-10-batches-py", root / "cifar-10-batches-py")
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:1000])
    return root


def _foreign_checkpoint(run):
    (run / "checkpoints").mkdir()
    torch.save({"state_dict": {}, "epoch": 1}, run / "checkpoints" / "last.ckpt")


def _unsafe_checkpoint(run):
    (run / "checkpoints").mkdir()
    # Needs a full unpickle (an arbitrary class), which weights-only loading refuses.
    (run / "checkpoints" / "last.ckpt").write_bytes(pickle.dumps({"hparams": Namespace(a=1)}))


BAD = {
    "unknown dataset": (["dataset=svhn"], "dataset"),
    "unknown channels": (["channels=grey"], "channels"),
    "rgb on mnist": (["channels=rgb"], "channels=rgb"),
    "latent 0": (["model.latent_dim=0"], "model.latent_dim"),
    "latent negative": (["model.latent_dim=-3"], "model.latent_dim"),
    "batch 0": (["data.batch_size=0"], "data.batch_size"),
    "epochs 0": (["trainer.max_epochs=0"], "trainer.max_epochs"),
    "lr 0": (["model.lr=0"], "model.lr"),
    "lr negative": (["model.lr=-0.1"], "model.lr"),
    "lr not a number": (["model.lr=fast"], "model.lr"),
    "unknown key": (["model.latentdim=4"], "model.latentdim"),
    "missing data root": (
        ["data.root=/nonexistent/data", "data.download=false"],
        "/nonexistent/data",
    ),
    "truncated IDX": ([], "cannot be read"),
    "corrupt CIFAR batch": (["dataset=cifar10"], "cannot be read"),
    "output dir not writable": ([], "cannot write"),
    "resume a non-run": ([], "is not a run directory"),
    "foreign checkpoint": ([], "not a vae_latent checkpoint"),
    "unsafe checkpoint": ([], "cannot be loaded weights-only"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_keeps_files(case, data_root, tmp_path):
    overrides, needle = BAD[case]
    run = tmp_path / "run"
    run.mkdir()
    sentinel = run / "metrics.json"
    sentinel.write_text('{"status": "failed", "sentinel": true}')
    root, target = data_root, [f"hydra.run.dir={run}"]
    if case == "truncated IDX":
        root = _truncated_mnist(data_root, tmp_path)
    elif case == "corrupt CIFAR batch":
        root = _corrupt_cifar(data_root, tmp_path)
    elif case == "output dir not writable":
        blocker = tmp_path / "a_file"
        blocker.write_text("not a directory")
        target = [f"hydra.run.dir={blocker / 'run'}"]
    elif case == "resume a non-run":
        target = [f"resume={run}"]
    elif case in ("foreign checkpoint", "unsafe checkpoint"):
        (run / ".hydra").mkdir()
        shutil.copy(_saved_config(tmp_path, root), run / ".hydra" / "config.yaml")
        (_foreign_checkpoint if case == "foreign checkpoint" else _unsafe_checkpoint)(run)
        target = [f"resume={run}"]
    proc = run_cli(f"data.root={root}", "data.val_size=40", *overrides, *target)
    assert_one_line_error(proc, needle)
    assert sentinel.read_text() == '{"status": "failed", "sentinel": true}'


def _saved_config(tmp_path, root):
    """A run's .hydra/config.yaml, as Hydra writes it (from a real composition)."""
    from omegaconf import OmegaConf

    from vae_latent.cli import compose_config

    cfg = compose_config([f"data.root={root}", "data.val_size=40"])
    path = tmp_path / "config.yaml"
    OmegaConf.save(cfg, path)
    return path


def test_disk_full_leaves_no_half_file_and_reads_as_one_line(tmp_path):
    target = tmp_path / "latent_scatter.png"
    target.write_bytes(b"previous picture")

    def fill_disk(path):
        path.write_bytes(b"half a pic")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with pytest.raises(OSError) as err:
        save_atomic(target, fill_disk)
    assert target.read_bytes() == b"previous picture"
    assert [p.name for p in tmp_path.iterdir()] == ["latent_scatter.png"]
    message = str(user_error(err.value))
    assert "No space left on device" in message and "\n" not in message


def test_checkpoint_check_accepts_ours_and_names_the_file(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(DataError, match="x.ckpt cannot be loaded weights-only"):
        check_checkpoint(bad)


def test_resume_true_in_the_same_run_dir_does_not_retrain_a_complete_run(data_root, tmp_path):
    run = tmp_path / "run"
    command = [f"data.root={data_root}", "trainer.max_epochs=1", *TINY, f"hydra.run.dir={run}"]
    assert run_cli(*command).returncode == 0
    files = [
        run / "metrics.json",
        run / "checkpoints" / "last.ckpt",
        run / "epochs" / "epoch_001.png",
    ]
    before = [f.stat().st_mtime_ns for f in files]
    again = run_cli(*command, "resume=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert [f.stat().st_mtime_ns for f in files] == before
    # With metrics.json gone the same command finishes the run again from last.ckpt.
    (run / "metrics.json").unlink()
    assert run_cli(*command, "resume=true").returncode == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["epochs"] == 1
