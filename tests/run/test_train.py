"""The train app end to end: the run directory, multiruns, every dataset, the record."""

import csv
import subprocess
import sys

import pytest
import torch

from vae_latent.run.keys import RUN_KEYS, names

from ..conftest import TINY, assert_one_line_error, read_metrics, train_tiny


def test_the_app_writes_the_run_directory(app, data_root, tmp_path):
    """The console app's entry point: files, record, TensorBoard, checkpoints."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    proc = app(
        "dataset=mnist",
        f"data.root={data_root}",
        "trainer.max_epochs=2",
        *TINY,
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    metrics = read_metrics(run)
    assert metrics["status"] == "complete" and metrics["protocol"] == "validation"
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
    assert metrics["test_checkpoint"].startswith("checkpoints/best-epoch")
    assert (run / metrics["test_checkpoint"]).is_file()
    assert metrics["checkpoint_epoch"] == int(metrics["test_checkpoint"][-8:-5]) + 1
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert {"config.yaml", "overrides.yaml", "hydra.yaml"} <= {
        p.name for p in (run / ".hydra").iterdir()
    }
    assert "test ELBO" in (run / "cli.log").read_text()
    assert set(metrics["versions"]) == {
        "python",
        "torch",
        "torchvision",
        "lightning",
        "hydra",
        "numpy",
        "scikit-learn",
    }
    assert metrics["device"] and metrics["iw_nll_se"] > 0 and metrics["post_fit_seconds"] > 0
    # Checkpoints hold plain types only: they load with weights_only=True.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["image_shape"] == (1, 28, 28)

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/elbo", "val/elbo", "val/recon", "val/kl", "test/elbo", "test/iw_nll"} <= tags
    assert len(events.Scalars("val/elbo")) == 2
    assert events.Scalars("test/elbo")[0].value == pytest.approx(metrics["test_elbo"], rel=1e-5)


def test_a_model_loads_from_its_checkpoint_alone_in_any_directory(trained, tmp_path, monkeypatch):
    import vae_latent

    monkeypatch.chdir(tmp_path)
    model = vae_latent.load(trained / "checkpoints" / "last.ckpt")
    assert tuple(model.sample(4).shape) == (4, 1, 28, 28) and not model.training
    assert model.checkpoint_epoch == 2


TRAIN_ONLY = {
    "epochs",
    "global_steps",
    "best_val_elbo",
    "test_checkpoint",
    "train_seconds",
    "train_images",
    "images_per_second",
    "world_size",
    "fit_seconds",
    "post_fit_seconds",
    "step",
}
EVAL_ONLY = {"checkpoint", "trained_on", "same_data_as_training", "seconds"}


def test_train_and_eval_records_share_one_set_of_keys(trained, app, data_root, tmp_path):
    train = read_metrics(trained)
    assert set(names()) <= set(train)  # every run key (run/keys.py), as the objects hold it
    out = tmp_path / "eval"
    ckpt = trained / train["test_checkpoint"]
    proc = app(
        f"ckpt={ckpt}",
        f"data.root={data_root}",
        "metrics.iw_samples=0",
        "callbacks=none",
        f"hydra.run.dir={out}",
        main="eval",
    )
    assert proc.returncode == 0, proc.stderr
    evaluated = read_metrics(out)
    assert set(train) - TRAIN_ONLY == set(evaluated) - EVAL_ONLY
    assert set(train) >= TRAIN_ONLY and set(evaluated) >= EVAL_ONLY
    same = [k.name for k in RUN_KEYS if k.section != "trainer"]  # eval trains nothing
    assert {k: evaluated[k] for k in same} == {k: train[k] for k in same}


def test_missing_data_is_one_line_naming_the_path(app, tmp_path):
    missing = tmp_path / "nonexistent"
    proc = app(f"data.root={missing}", "data.download=false", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(
        proc, str(missing), "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"
    )


def test_help_lists_the_config_groups(app):
    proc = app("--help")
    assert proc.returncode == 0
    for group in (
        "dataset: cifar10, fashion_mnist, mnist",
        "channels: gray, native, rgb",
        "protocol: study, validation",
        "model:",
        "trainer:",
        "logger:",
        "callbacks:",
    ):
        assert group in proc.stdout


def test_a_multirun_with_a_job_that_cannot_run_is_refused_before_its_first(app, tmp_path):
    """Validated as a whole: every combination (rgb on MNIST is bad), and, past
    ``WHOLE_SWEEP`` jobs, every value of each swept key, before anything is written."""
    sweep = tmp_path / "sweep"
    proc = app("-m", "channels=native,rgb", "model.latent_dim=2,3", f"hydra.sweep.dir={sweep}")
    assert_one_line_error(proc, "the sweep of 4 job(s) is refused", "channels=rgb",
                          "needs a colour dataset")  # fmt: skip
    huge = app("-m", "model.latent_dim=range(2000,12000)", f"hydra.sweep.dir={sweep}")
    assert_one_line_error(huge, "the sweep of 10,000 job(s) is refused", "model.latent_dim=2000")
    unknown = app("-m", "dataset=mnist,svhn", f"hydra.sweep.dir={sweep}")
    assert_one_line_error(unknown, "dataset=svhn does not compose")
    assert not sweep.exists()


def test_multirun_runs_every_combination_and_fails_only_bad_ones(app, data_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = app(
        "-m",
        "model.lr=1.0e-4,1.0e3",  # 1e3 diverges at once: a failure only the run can find
        "model.latent_dim=2,3",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        "callbacks=none",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 1  # the two diverging jobs failed
    status = {p.parent.name: read_metrics(p.parent)["status"] for p in sweep.glob("*/metrics.json")}
    assert len(status) == 4
    complete = {k for k, v in status.items() if v == "complete"}
    assert complete == {k for k in status if "model.lr=0.0001" in k}
    failed = next(k for k, v in status.items() if v == "failed")
    assert "non-finite loss" in read_metrics(sweep / failed)["error"]
    assert not list(sweep.glob("*/error.txt"))  # one failure record: metrics.json
    assert "2 job(s) failed" in proc.stderr
    assert {read_metrics(sweep / k)["latent_dim"] for k in complete} == {2, 3}
    # The Hydra callback wrote the report at the end of the multirun, failures included.
    with open(sweep / "summary.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "run"]
    assert sorted(r["status"] for r in rows) == ["complete"] * 2 + ["failed"] * 2
    assert "failed" in (sweep / "report.md").read_text()


@pytest.mark.usefixtures("cifar_md5")
@pytest.mark.parametrize(
    ("channels", "shape", "params"), [("rgb", [3, 32, 32], 75_911), ("gray", [1, 32, 32], None)]
)
def test_cifar10_trains_from_cifar_format_files(data_root, tmp_path, channels, shape, params):
    metrics = train_tiny(
        tmp_path,
        data_root,
        "dataset=cifar10",
        f"channels={channels}",
        "trainer.max_epochs=1",
        "callbacks=none",
    )
    assert metrics["image_shape"] == shape and metrics["binarize"] is False
    if params:
        assert metrics["params"] == params
    assert read_metrics(tmp_path) == metrics
    assert metrics["test_elbo"] < 0 and (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_callbacks_none_writes_no_figures(data_root, tmp_path):
    train_tiny(tmp_path, data_root, "callbacks=none", "trainer.max_epochs=1")
    assert (tmp_path / "metrics.json").is_file() and (
        tmp_path / "checkpoints" / "last.ckpt"
    ).is_file()
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("*.gif"))
    assert not (tmp_path / "tensorboard" / "projector_config.pbtxt").exists()


def test_two_sweeps_started_together_get_two_directories():
    """The sweep dir has microseconds and the process id: two processes never share it."""
    code = (
        "from hydra import compose, initialize_config_dir; "
        "from vae_latent.run.config import conf_dir; "
        "initialize_config_dir(config_dir=conf_dir(), version_base='1.3'); "
        "from hydra.core.hydra_config import HydraConfig; "
        "cfg = compose('train', return_hydra_config=True); HydraConfig.instance().set_config(cfg); "
        "print(cfg.hydra.sweep.dir)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    dirs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(d.startswith("outputs/multirun/") for d in dirs) and dirs[0] != dirs[1], dirs


@pytest.mark.parametrize("nvml", [False, True])
def test_the_cuda_check_stops_retrying_nvml_only_where_nvml_cannot_load(monkeypatch, nvml):
    """Lightning's NVML-based CUDA check, where NVML is missing, reloads it at every Adam step."""
    import ctypes

    from vae_latent.run.build import ask_cuda_without_nvml_retries

    def cdll(name):
        if not nvml:
            raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    ask_cuda_without_nvml_retries()
    import os

    assert (os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1") is nvml
