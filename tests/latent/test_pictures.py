"""The pictures: files, sizes, pixels, GIF frames and TensorBoard contents, on fixture data."""

import imageio.v3 as iio
import lightning as L
import numpy as np
import pytest
import torch

from vae_latent import load
from vae_latent.latent import drawing, pictures
from vae_latent.latent.codes import evaluating
from vae_latent.model import ConvVAE
from vae_latent.run.build import build, skip_idle_batch_hooks

from ..conftest import TINY, compose, read_metrics, train_tiny

N_IMAGES = 4  # a 2x2 grid per panel (the `trained` fixture's)
FIGURES = ["latent_manifold.png", "latent_traversal.png", "latent_scatter.png", "interpolation.png"]


@pytest.fixture
def run(trained):
    return trained


def _panel(image: np.ndarray, index: int, size: int = 28, scale: int = 3) -> np.ndarray:
    """Crop panel ``index`` of an EpochGrid image, from figures' public layout constants."""
    side = (2 * (size + drawing.PAD) + drawing.PAD) * scale
    x = drawing.MARGIN + index * (side + drawing.GAP)
    y = drawing.MARGIN + drawing.TITLE_H + drawing.LABEL_H
    return image[y : y + side, x : x + side]


def test_every_file_is_written(run):
    for name in [
        "epochs/epoch_001.png",
        "epochs/epoch_002.png",
        "training.gif",
        "grid.png",
        *FIGURES,
    ]:
        assert (run / name).is_file(), name
    # every_n_epochs=1 also keeps one scatter per epoch under latent/.
    assert sorted(p.name for p in (run / "latent").iterdir()) == [
        "epoch_001_latent_scatter.png",
        "epoch_002_latent_scatter.png",
    ]


def test_epoch_grid_has_the_size_of_its_layout(run):
    image = iio.imread(run / "epochs" / "epoch_001.png")
    side = (2 * (28 + drawing.PAD) + drawing.PAD) * 3  # 2x2 tiles of 28 px, padded, x3
    height = side + drawing.TITLE_H + drawing.LABEL_H + 2 * drawing.MARGIN
    width = 3 * side + 2 * drawing.GAP + 2 * drawing.MARGIN
    assert image.shape == (height, width, 3)


def test_fixed_batch_is_the_same_every_epoch_and_run(run):
    first, second = (iio.imread(run / "epochs" / f"epoch_00{e}.png") for e in (1, 2))
    assert np.array_equal(_panel(first, 0), _panel(second, 0))  # the test images
    assert not np.array_equal(_panel(first, 1), _panel(second, 1))  # reconstructions moved


def test_decoding_known_latents_gives_the_saved_pixels(run):
    # epoch_002 is drawn after the last training step, so last.ckpt holds the same weights.
    model = load(run / "checkpoints" / "last.ckpt")
    gen = torch.Generator().manual_seed(42)  # EpochGrid's seed is ${seed}
    torch.randperm(len(range(80)), generator=gen)  # the fixed test batch draws first
    eps = torch.randn(N_IMAGES, 2, generator=gen)
    want = drawing.to_uint8(drawing.grid(model.sample(eps))).repeat(3, 0).repeat(3, 1)
    saved = _panel(iio.imread(run / "epochs" / "epoch_002.png"), 2)
    assert np.abs(saved.astype(int) - want.astype(int)).max() <= 1


def test_gif_has_one_frame_per_epoch_and_loops(run):
    frames = iio.imread(run / "training.gif", index=None)
    assert frames.shape[0] == 2
    meta = iio.immeta(run / "training.gif")
    assert meta["loop"] == 0 and meta["duration"] == 600


def test_tensorboard_has_images_projector_and_hparams(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    images = set(events.Tags()["images"])
    assert {
        "epoch_grid",
        "latent_manifold",
        "latent_traversal",
        "latent_scatter",
        "interpolation",
        "tested_grid",
    } <= images
    assert len(events.Images("epoch_grid")) == 2
    metrics = read_metrics(run)
    assert events.Scalars("hp/test_elbo")[0].value == pytest.approx(metrics["test_elbo"], rel=1e-5)
    assert "dataset: mnist" in (run / "tensorboard" / "hparams.yaml").read_text()
    config = (run / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "test_latent_means" in config and "sprite" in config and "metadata_path" in config
    metadata = next((run / "tensorboard").glob("*/test_latent_means/metadata.tsv")).read_text()
    assert len(metadata.splitlines()) == 80 and "7 - seven" in metadata


def test_latent_8_has_no_manifold_and_traversals_of_every_dim(tmp_path, data_root):
    train_tiny(tmp_path, data_root, "model.latent_dim=8", "trainer.max_epochs=1")
    assert not (tmp_path / "latent_manifold.png").exists()
    for name in FIGURES[1:]:
        assert (tmp_path / name).is_file()


def test_traversal_rows_follow_kl_and_sweep_one_dim_each():
    means = torch.zeros(5, 8)
    kl = torch.tensor([0.1, 3.0, 0.2, 2.0, 0.0, 1.0, 0.3, 0.4])
    z, dims, values, _ = pictures.traversal_codes(means, kl, max_dims=3, steps=5, span=3.0)
    assert dims == [1, 3, 5]
    z = z.view(3, 5, 8)
    for row, d in enumerate(dims):
        assert torch.equal(z[row, :, d], torch.linspace(-3, 3, 5)) and torch.equal(
            values[row], z[row, :, d]
        )
        assert z[row].abs().sum() == z[row, :, d].abs().sum()  # nothing else moves


def test_manifold_grid_is_the_studys_quantile_grid():
    q = drawing.manifold_quantiles(3)
    z = drawing.grid_z(q, q)
    assert torch.allclose(q, torch.distributions.Normal(0, 1).icdf(torch.tensor([0.05, 0.5, 0.95])))
    assert torch.allclose(z[:3, 0], q) and torch.allclose(z[:3, 1], q[2].expand(3))  # top row
    assert torch.allclose(z[-1], torch.stack([q[2], q[0]]))  # bottom right: z1 max, z2 min


def test_fixed_inputs_are_deterministic(data_root):
    from vae_latent.data import VAEDataModule

    dm = VAEDataModule(root=str(data_root), download=False, val_size=40)
    dm.prepare_data()
    dm.setup()
    test = dm.splits["test"]
    xa, ea = pictures.fixed_inputs(test, 4, 2, seed=3)
    xb, eb = pictures.fixed_inputs(test, 4, 2, seed=3)
    assert torch.equal(xa, xb) and torch.equal(ea, eb)
    assert not torch.equal(pictures.fixed_inputs(test, 4, 2, seed=4)[1], ea)


def test_idle_batch_hooks_are_hidden_and_the_others_still_run(tmp_path, data_root):
    class Steps(L.Callback):
        def __init__(self) -> None:
            self.n = 0

        def on_before_zero_grad(self, trainer, pl_module, optimizer) -> None:
            self.n += 1

    from vae_latent.callbacks import EpochGrid

    steps, grid = Steps(), EpochGrid(n_images=N_IMAGES)
    skip_idle_batch_hooks([steps, grid])
    assert grid.on_train_batch_end is None and steps.on_train_batch_start is None
    assert callable(steps.on_before_zero_grad) and callable(grid.on_validation_end)

    run = build(compose(f"data.root={data_root}", *TINY, "trainer.max_epochs=1"), tmp_path)
    assert run.trainer.checkpoint_callback.on_before_backward is None  # Lightning's own too
    assert callable(run.clock.on_train_batch_end)  # overridden: kept
    run.trainer.callbacks.append(steps)
    run.trainer.fit(run.model, datamodule=run.datamodule)
    assert steps.n == 4  # limit_train_batches=4
    assert run.clock.images == 4 * 16
    assert (tmp_path / "epochs" / "epoch_001.png").is_file()


def test_fit_end_pictures_come_from_the_tested_checkpoint(trained, app, data_root, tmp_path):
    """The manifold drawn after training equals eval's on test_checkpoint, pixel for pixel."""
    ckpt = trained / read_metrics(trained)["test_checkpoint"]
    out = tmp_path / "eval"
    proc = app(
        f"ckpt={ckpt}",
        f"data.root={data_root}",
        "metrics.iw_samples=0",
        f"hydra.run.dir={out}",
        main="eval",
    )
    assert proc.returncode == 0, proc.stderr
    for name in (
        "latent_manifold.png",
        "latent_traversal.png",
        "latent_scatter.png",
        "interpolation.png",
    ):
        assert np.array_equal(iio.imread(trained / name), iio.imread(out / name)), name


def test_pictures_restore_the_model_mode_even_when_drawing_fails():
    model = ConvVAE(latent_dim=2).train()
    with pytest.raises(RuntimeError), evaluating(model):
        assert not model.training
        raise RuntimeError("drawing failed")
    assert model.training


def test_the_posterior_grid_spans_the_test_means_quantiles():
    means = torch.randn(500, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor(
        [0.5, 2.0]
    )
    z1 = drawing.posterior_quantiles(means[:, 0], 20)
    z2 = drawing.posterior_quantiles(means[:, 1], 20)
    for axis, values in ((0, z1), (1, z2)):
        want = torch.quantile(means[:, axis], torch.tensor([0.05, 0.95]))
        torch.testing.assert_close(values[[0, -1]], want)  # the grid's range: 5%..95% of the means
        assert torch.all(values[1:] >= values[:-1])
    z = drawing.grid_z(z1, z2)
    assert torch.equal(z[0], torch.stack([z1[0], z2[-1]]))  # top left: smallest z1, largest z2
    assert torch.equal(z[-1], torch.stack([z1[-1], z2[0]]))


def test_traversal_ranges_prior_and_posterior():
    means = torch.tensor([[0.0, 1.0], [2.0, -1.0], [4.0, 0.0], [6.0, 3.0]])
    prior, labels = drawing.traversal_values(means, [1, 0], 3, 2.0, 1, "prior")
    assert torch.allclose(prior, torch.tensor([[-3.0, -1.0, 1.0], [0.0, 2.0, 4.0]]))
    assert labels == ["-2.0", "+0.0", "+2.0"]
    post, labels = drawing.traversal_values(means, [0], 3, 2.0, 1, "posterior")
    want = torch.quantile(means[:, 0], torch.tensor([0.01, 0.5, 0.99]))
    assert torch.allclose(post[0], want) and labels == ["1%", "50%", "99%"]


def test_traversal_gif_sweeps_there_and_back(trained):
    frames = iio.imread(trained / "latent_traversal.gif", index=None)
    steps = 11  # the default sweep: 11 steps, then 9 back (the ends are not repeated)
    assert frames.shape[0] == 2 * steps - 2
    assert np.array_equal(frames[1], frames[-1])  # step 1 comes again on the way back
    assert not np.array_equal(frames[0], frames[steps - 1])  # the sweep moves the pictures
    assert iio.immeta(trained / "latent_traversal.gif")["loop"] == 0


def test_latent_metrics_are_logged_every_epoch(trained):
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open(trained / "latent_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"active_units", "kl_total", "linear_probe_acc", "knn_acc", "kl_z1", "kl_z2"} <= set(
        rows[0]
    )
    assert float(rows[0]["kl_total"]) == pytest.approx(
        float(rows[0]["kl_z1"]) + float(rows[0]["kl_z2"])
    )
    events = EventAccumulator(str(trained / "tensorboard")).Reload()
    assert len(events.Scalars("latent/linear_probe_acc")) == 2
    assert [e.step for e in events.Scalars("latent/kl_z2")] == [4, 8]


def test_a_1d_latent_draws_its_pictures_one_row_per_class(data_root, tmp_path):
    record = train_tiny(tmp_path, data_root, "model.latent_dim=1", "trainer.max_epochs=1")
    assert record["status"] == "complete" and record["latent_dim"] == 1
    scatter = iio.imread(tmp_path / "latent_scatter.png")
    assert scatter.ndim == 3 and scatter.std() > 0  # drawn, not blank
    assert not (tmp_path / "latent_manifold.png").exists()  # latent 2 only


def test_the_training_gif_takes_epoch_grids_of_different_widths(tmp_path):
    """A longer title ("epoch 10/10") can widen one epoch's grid: frames are padded, in order."""
    from types import SimpleNamespace

    from vae_latent.callbacks import TrainingGif

    (tmp_path / "epochs").mkdir()
    for epoch, width in ((1, 479), (2, 489)):
        frame = np.full((60, width, 3), 40 * epoch, dtype=np.uint8)
        iio.imwrite(tmp_path / "epochs" / f"epoch_{epoch:03d}.png", frame)
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), is_global_zero=True)
    TrainingGif(duration_ms=100).on_fit_end(trainer, None)
    gif = iio.imread(tmp_path / "training.gif", index=None)
    assert gif.shape[:3] == (2, 60, 489)
    assert gif[0, 0, 0, 0] == 40 and gif[1, 0, 0, 0] == 80 and gif[0, 0, -1, 0] == 255  # padded
