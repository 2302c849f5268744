"""vae-latent-eval: a checkpoint alone, scored and drawn on its own data or other data."""

import re

import imageio.v3 as iio
import pytest
import torch
import yaml

from ..conftest import REPO, assert_one_line_error, read_metrics

FIGURES = {
    "grid.png",
    "latent_manifold.png",
    "latent_scatter.png",
    "latent_traversal.png",
    "interpolation.png",
}


def test_eval_from_another_directory_reproduces_the_test_metrics(
    trained, app, data_root, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    trained_metrics = read_metrics(trained)
    ckpt = trained / trained_metrics["test_checkpoint"]  # the checkpoint training tested
    out = tmp_path / "eval"
    proc = app(
        f"ckpt={ckpt}",
        f"data.root={data_root}",
        "metrics.iw_samples=16",
        "sample.n=16",
        "sample.seed=3",
        f"hydra.run.dir={out}",
        main="eval",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_metrics(out)
    assert metrics["checkpoint"] == str(ckpt)
    assert metrics["checkpoint_epoch"] == trained_metrics["checkpoint_epoch"]
    assert (metrics["dataset"], metrics["channels"]) == ("mnist", "native")
    assert metrics["same_data_as_training"] is True
    # The test ELBO is a single-sample Monte Carlo estimate: same weights, other noise.
    assert metrics["test_elbo"] == pytest.approx(trained_metrics["test_elbo"], abs=1.0)
    for key in ("active_units", "linear_probe_acc", "knn_acc", "iw_nll", "versions", "device"):
        assert metrics[key] is not None, key
    # The probes fit on the training run's own train split: same images, same numbers.
    assert metrics["active_units"] == trained_metrics["active_units"]
    assert metrics["linear_probe_acc"] == trained_metrics["linear_probe_acc"]
    assert FIGURES | {"samples.png"} <= {p.name for p in out.glob("*.png")}
    samples = iio.imread(out / "samples.png")
    assert samples.ndim == 3 and samples.shape[0] > 200
    assert not (tmp_path / "outputs").exists()  # hydra.run.dir was honoured

    # Another dataset of the same shape: the out-of-distribution question. It says so, and
    # the same sample.seed draws the same prior samples.
    ood = tmp_path / "ood"
    proc = app(
        f"ckpt={ckpt}",
        f"data.root={data_root}",
        "dataset=fashion_mnist",
        "data.val_size=40",  # another dataset's split: the fixture has 240 training images
        "metrics.iw_samples=0",
        "callbacks=none",
        "sample.n=16",
        "sample.seed=3",
        f"hydra.run.dir={ood}",
        main="eval",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = read_metrics(ood)
    assert (other["dataset"], other["same_data_as_training"]) == ("fashion_mnist", False)
    assert other["trained_on"] == {"name": "mnist", "channels": "native", "binarize": True}
    assert other["test_elbo"] != metrics["test_elbo"]
    assert {p.name for p in ood.glob("*.png")} == {"samples.png"}  # callbacks=none: no figures
    assert (iio.imread(ood / "samples.png") == samples).all()


def test_eval_on_data_of_another_shape_is_one_line_naming_both(trained, app, data_root, tmp_path):
    proc = app(
        f"ckpt={trained / 'checkpoints' / 'last.ckpt'}",
        f"data.root={data_root}",
        "dataset=cifar10",
        "channels=rgb",
        f"hydra.run.dir={tmp_path / 'eval'}",
        main="eval",
    )
    assert_one_line_error(proc, "vae-latent-eval: error:", "1×28×28", "3×32×32")
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_eval_rejects_a_missing_checkpoint_and_one_without_its_data(trained, app, tmp_path):
    proc = app(f"hydra.run.dir={tmp_path / 'unset'}", main="eval")
    assert_one_line_error(proc, "vae-latent-eval: error: ckpt is not set; pass ckpt=")
    proc = app(f"ckpt={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'a'}", main="eval")
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
    proc = app(f"ckpt={tmp_path / 'old.ckpt'}", f"hydra.run.dir={tmp_path / 'b'}", main="eval")
    assert_one_line_error(proc, "old.ckpt", "dataset=")


def test_an_eval_multirun_with_a_failing_job_exits_1(trained, app, data_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = app(
        "-m",
        f"ckpt={trained / 'checkpoints' / 'last.ckpt'}",
        f"data.root={data_root}",
        "dataset=mnist,cifar10",  # CIFAR-10 is another image shape: that job fails
        "channels=native",
        "callbacks=none",
        "metrics.iw_samples=0",
        f"hydra.sweep.dir={sweep}",
        main="eval",
    )
    assert proc.returncode == 1, proc.stderr
    assert "1 job(s) failed" in proc.stderr and "dataset=cifar10" in proc.stderr
    status = sorted(read_metrics(p.parent)["status"] for p in sweep.glob("*/metrics.json"))
    assert status == ["complete", "failed"]


def test_eval_help_lists_the_groups_it_takes_with_their_options_on_disk(app):
    """conf/ is shared with vae-latent: the eval help names only eval.yaml's groups."""
    proc = app("--help", main="eval")
    assert proc.returncode == 0
    listed = dict(re.findall(r"^(\w+): ([\w, ]+)$", proc.stdout.split("== Config ==")[0], re.M))
    defaults = yaml.safe_load((REPO / "conf" / "eval.yaml").read_text())["defaults"]
    groups = {next(iter(d)).removeprefix("optional ") for d in defaults if isinstance(d, dict)}
    groups.discard("override hydra/job_logging")
    assert set(listed) == groups
    for group, options in listed.items():
        on_disk = sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
        assert options.split(", ") == on_disk, group
