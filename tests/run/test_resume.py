"""Resume: after SIGKILL, in a sweep, and refusing what a checkpoint cannot continue."""

import csv
import shutil
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import pytest
import torch
from omegaconf import OmegaConf

from ..conftest import REPO, TINY, assert_one_line_error, file_hashes, read_metrics


def test_sigkill_inside_an_epoch_then_resume(data_root, tmp_path, app):
    run = tmp_path / "run"
    # Batch 1 makes an epoch 100 steps, long enough to kill the run inside epoch 2.
    args = [
        sys.executable,
        "-m",
        "vae_latent",
        f"data.root={data_root}",
        "data.val_size=40",
        "data.batch_size=1",
    ]
    args += ["trainer.limit_train_batches=100", "trainer.max_epochs=2", "trainer.accelerator=cpu"]
    args += ["metrics.iw_samples=16", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"  # saved at the end of epoch 1, atomically
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # a renamed checkpoint is whole: no need to wait
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert last.is_file() and not (run / "metrics.json").exists()

    # The killed process held the run dir's lock; the kernel released it with the process.
    done = app(f"resume={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    grids = sorted(p.name for p in (run / "epochs").iterdir())
    assert grids == ["epoch_001.png", "epoch_002.png"]
    assert iio.imread(run / "training.gif", index=None).shape[0] == 2
    metrics = read_metrics(run)
    assert metrics["status"] == "complete" and metrics["epochs"] == 2
    assert metrics["batch_size"] == 1  # the resumed run kept its own config, not the defaults


def test_a_resumed_run_keeps_its_earlier_latent_metrics_rows(data_root, tmp_path, app):
    run = tmp_path / "run"
    log = "{_target_:vae_latent.callbacks.LatentMetricsLog,images:50}"
    args = [f"data.root={data_root}", *TINY, "callbacks=none", f"+callbacks.latent_metrics={log}"]
    args.append(f"hydra.run.dir={run}")
    assert app(*args, "trainer.max_epochs=1").returncode == 0
    (run / "metrics.json").unlink()
    done = app(*args, "trainer.max_epochs=3", "resume=true")
    assert done.returncode == 0, done.stderr[-3000:]
    with open(run / "latent_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [int(r["step"]) for r in rows] == [4, 8, 12]


def _sigint_default():
    """SIGINT handled as a terminal's, even where the tests run with it ignored (CI jobs)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("sig", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")]
)
def test_sigterm_or_ctrl_c_is_one_line_an_incomplete_record_and_resumable(
    data_root, tmp_path, app, sig, code, name
):
    """A scheduler's stop or Ctrl-C: exit 128 + signal, one line, the run left to resume."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "vae_latent", f"data.root={data_root}", "data.val_size=40"]
    args += ["data.batch_size=1", "trainer.limit_train_batches=100", "trainer.max_epochs=3"]
    args += ["trainer.accelerator=cpu", "callbacks=none", "metrics.iw_samples=16"]
    proc = subprocess.Popen(
        [*args, f"hydra.run.dir={run}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_default,
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    err = proc.communicate()[1]
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"interrupted ({name}) at epoch" in err and f"resume={run}" in err
    record = read_metrics(run)
    assert record["status"] == "incomplete" and name in record["error"]
    if sig == signal.SIGTERM:  # and it resumes (Ctrl-C leaves the same state)
        done = app(f"resume={run}")
        assert done.returncode == 0, done.stderr[-3000:]
        assert read_metrics(run)["global_steps"] == 300


def test_a_resumed_run_ends_where_the_uninterrupted_run_ends(data_root, tmp_path, app):
    """Random states travel in the checkpoint: the same batches and noise, the same weights."""
    args = [f"data.root={data_root}", *TINY, "callbacks=none", "trainer.max_epochs=2"]
    assert app(*args, f"hydra.run.dir={tmp_path / 'whole'}").returncode == 0
    run = tmp_path / "resumed"
    assert app(*args, "trainer.max_epochs=1", f"hydra.run.dir={run}").returncode == 0
    (run / "metrics.json").unlink()
    assert app(f"resume={run}", "trainer.max_epochs=2").returncode == 0
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    for name, value in whole["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][name]), name
    assert read_metrics(run)["test_elbo"] == read_metrics(tmp_path / "whole")["test_elbo"]


@pytest.mark.parametrize("how", ["move", "copy"])
def test_a_moved_or_copied_run_resumes_against_its_own_checkpoints(data_root, tmp_path, app, how):
    first, run = tmp_path / "first", tmp_path / "elsewhere" / "run"
    args = [f"data.root={data_root}", *TINY, "callbacks=none"]
    assert app(*args, "trainer.max_epochs=1", f"hydra.run.dir={first}").returncode == 0
    run.parent.mkdir()
    (shutil.move if how == "move" else shutil.copytree)(first, run)
    (run / "metrics.json").unlink()
    done = app(f"resume={run}")  # killed after its last epoch, before testing: test it now
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(run)
    assert metrics["test_checkpoint"] == "checkpoints/best-epoch000.ckpt"  # not ../../first/...
    assert metrics["best_val_elbo"] is not None and metrics["global_steps"] == 4


@pytest.fixture
def unfinished(data_root, tmp_path, app):
    """A latent-8 run killed after its first epoch (as if): checkpoint, no metrics.json."""
    run = tmp_path / "unfinished"
    proc = app(
        f"data.root={data_root}",
        *TINY,
        "model.latent_dim=8",
        "trainer.max_epochs=1",
        "callbacks=none",
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr
    (run / "metrics.json").unlink()
    return run


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        (
            ["model.latent_dim=2", "resume=true"],
            "model.latent_dim=2 but the run was made with model.latent_dim=8",
        ),
        (["resume=RUN", "model.latent_dim=2"], "model.latent_dim=2"),
        (["resume=RUN", "dataset=fashion_mnist"], "data.name=fashion_mnist"),
        (["resume=RUN", "model.lr=0.01"], "model.lr"),
        (["resume=RUN", "protocol=study"], "data.protocol=study"),
    ],
)
def test_a_resume_the_checkpoint_cannot_continue_is_refused_and_changes_nothing(
    unfinished, app, data_root, command, needle
):
    before = file_hashes(unfinished)
    args = [a.replace("RUN", str(unfinished)) for a in command]
    if "resume=true" in args:  # the same command again, in the run's directory
        args = [
            f"data.root={data_root}",
            *TINY,
            "trainer.max_epochs=1",
            "callbacks=none",
            *args,
            f"hydra.run.dir={unfinished}",
        ]
    assert_one_line_error(app(*args), needle)
    assert file_hashes(unfinished) == before  # .hydra/, log, checkpoints, TensorBoard as they were


def test_resume_composes_group_overrides_deletions_and_new_values_through_hydra(unfinished, app):
    proc = app(
        f"resume={unfinished}",
        "trainer.max_epochs=2",
        "callbacks=default",
        "~callbacks.projector",
        "trainer=cpu",
    )
    assert proc.returncode == 0, proc.stderr
    metrics = read_metrics(unfinished)
    assert metrics["epochs"] == 2 and metrics["latent_dim"] == 8
    saved = OmegaConf.load(unfinished / ".hydra" / "config.yaml")
    assert "projector" not in saved.callbacks and "epoch_grid" in saved.callbacks  # ~ deletes
    assert saved.trainer.max_epochs == 2 and saved.trainer.limit_train_batches == 4
    assert (unfinished / "epochs" / "epoch_002.png").is_file()  # callbacks=default took effect
    assert not (unfinished / "tensorboard" / "projector_config.pbtxt").exists()
    # The saved overrides compose the same run again: a second resume finds it complete.
    overrides = OmegaConf.load(unfinished / ".hydra" / "overrides.yaml")
    assert "trainer=cpu" in overrides and not any(o.startswith("resume=") for o in overrides)
    before = file_hashes(unfinished)
    again = app(f"resume={unfinished}")
    assert again.returncode == 0 and "nothing to train" in again.stdout
    assert file_hashes(unfinished) == before


def test_resume_takes_hydra_flags_and_refuses_a_malformed_override_in_one_line(unfinished, app):
    shown = app(f"resume={unfinished}", "--cfg", "job")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "latent_dim: 8" in shown.stdout  # the run's own config, composed again
    assert_one_line_error(app(f"resume={unfinished}", "trainer.max_epochs"), "trainer.max_epochs")


def test_resume_true_in_the_same_run_dir_does_not_retrain_a_complete_run(data_root, app, tmp_path):
    run = tmp_path / "run"
    command = [
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        *TINY,
        "callbacks=none",
        f"hydra.run.dir={run}",
    ]
    assert app(*command).returncode == 0
    before = file_hashes(run)
    again = app(*command, "resume=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert file_hashes(run) == before  # not even .hydra/ or the log
    # Without resume=, the same command refuses to overwrite the run.
    assert_one_line_error(app(*command), "already holds a run", "resume=true")
    assert file_hashes(run) == before
    # Asked for more epochs, it trains further from last.ckpt.
    more = app(*command, "resume=true", "trainer.max_epochs=2")
    assert more.returncode == 0, more.stderr[-2000:]
    assert read_metrics(run)["epochs"] == 2


@pytest.mark.filterwarnings("ignore:`ModelCheckpoint\\(monitor='val/elbo'\\)` could not find")
def test_a_run_stopped_before_max_epochs_is_complete_under_the_same_command(
    data_root, app, tmp_path
):
    """max_steps (or early stopping) ended it: resume=true, as a sweep's, retrains nothing."""
    run = tmp_path / "run"
    command = [f"data.root={data_root}", *TINY, "callbacks=none", "+trainer.max_steps=6"]
    command += ["trainer.max_epochs=3", f"hydra.run.dir={run}"]
    assert app(*command).returncode == 0
    assert read_metrics(run)["global_steps"] == 6
    before = file_hashes(run)
    again = app(*command, "resume=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert file_hashes(run) == before
    more = app(*command, "resume=true", "trainer.max_steps=10")
    assert more.returncode == 0, more.stderr[-2000:]
    assert read_metrics(run)["global_steps"] > 6  # trained further, from last.ckpt


def test_a_resumed_sweep_reruns_only_the_missing_job_and_averages_seeds(data_root, app, tmp_path):
    sweep = tmp_path / "sweep"
    command = [
        "-m",
        "dataset=mnist,fashion_mnist",
        "seed=1,2",
        "callbacks=none",
        f"data.root={data_root}",
    ]
    command += ["trainer.max_epochs=1", *TINY, f"hydra.sweep.dir={sweep}"]
    first = app(*command)
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(jobs) == 4
    lost = next(j for j in jobs if {"dataset=mnist", "seed=2"} <= set(j.name.split(",")))
    (lost / "metrics.json").unlink()
    shutil.rmtree(lost / "tensorboard")
    kept = {j: file_hashes(j) for j in jobs if j != lost}
    assert all("cli.log" in h and "checkpoints/last.ckpt" in h for h in kept.values())

    again = app(*command, "resume=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {j: file_hashes(j) for j in kept} == kept  # complete jobs untouched, nothing added
    assert read_metrics(lost)["status"] == "complete"

    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["kind"] for r in rows] == ["run"] * 4 + ["seed_mean"] * 2
    by_dataset = {r["dataset"]: r for r in rows if r["kind"] == "seed_mean"}
    assert set(by_dataset) == {"mnist", "fashion_mnist"}
    for name, group in by_dataset.items():
        elbos = [float(r["test_elbo"]) for r in rows if r["kind"] == "run" and r["dataset"] == name]
        assert group["n"] == "2" and group["seed"] == "1 2"
        assert float(group["test_elbo"]) == pytest.approx(sum(elbos) / 2)
        assert float(group["test_elbo_std"]) == pytest.approx(torch.tensor(elbos).std().item())
    report = (sweep / "report.md").read_text()
    table = report.split("## Mean ± std over seeds")[1].split("## Runs")[0]
    rows_md = [
        line for line in table.splitlines() if line.startswith(("| mnist ", "| fashion_mnist "))
    ]
    assert len(rows_md) == 2 and all(" | 2 | " in r and " ± " in r for r in rows_md)


def test_a_run_made_when_another_init_was_the_default_resumes_with_its_own(
    data_root, tmp_path, app
):
    """model.init was torch by default before 2026-11-30: such a run's config.yaml says torch
    while its command line never named it. Resume takes the run's value, not today's default."""
    run = tmp_path / "made-with-torch"
    args = [f"data.root={data_root}", *TINY, "trainer.max_epochs=1", "callbacks=none"]
    proc = app(*args, "model.init=torch", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    overrides = OmegaConf.load(run / ".hydra" / "overrides.yaml")
    OmegaConf.save(
        [o for o in overrides if o != "model.init=torch"], run / ".hydra" / "overrides.yaml"
    )
    (run / "metrics.json").unlink()  # killed after its first epoch, as if
    proc = app(f"resume={run}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = read_metrics(run)
    assert (record["init"], record["epochs"]) == ("torch", 2)
    # Typing another init is still refused: the checkpoint cannot continue as another model.
    assert_one_line_error(app(f"resume={run}", "model.init=keras"), "model.init=keras")
    # resume=true is this command line again: today's default differs, and the line says how to
    # continue the run.
    again = [*args, f"hydra.run.dir={run}", "resume=true", "trainer.max_epochs=3"]
    assert_one_line_error(app(*again), "add model.init=torch to continue it")
    assert app(*again, "model.init=torch").returncode == 0
    assert read_metrics(run)["epochs"] == 3
