"""Checkpoint files: earlier versions' still load and evaluate; what is not ours is refused."""

from pathlib import Path

import pytest
import torch

import vae_latent
from vae_latent.run.checkpoints import module_from, read_checkpoint

from ..conftest import read_metrics

# Written by the code of 61ffff5 (before the network was its own nn.Module, whose weights are
# now under vae.*): MNIST fixture data (conftest.write_idx, seed 0), latent 2, 1 epoch of 4
# steps of 16 images, test ELBO -557.08 nats in that run.
OLD = Path(__file__).resolve().parents[1] / "fixtures" / "written-by-61ffff5.ckpt"


def test_a_checkpoint_written_before_the_redesign_loads():
    model = vae_latent.load(OLD)
    assert (model.latent_dim, model.image_shape, model.checkpoint_epoch) == (2, (1, 28, 28), 1)
    saved = torch.load(OLD, weights_only=True)["state_dict"]
    torch.testing.assert_close(model.encoder[0].weight, saved["encoder.0.weight"])
    torch.testing.assert_close(model.decoder[-1].bias, saved["decoder.7.bias"])
    assert model.sample(3).shape == (3, 1, 28, 28) and not model.training
    assert (
        module_from(read_checkpoint(OLD)).hparams["init"] == "torch"
    )  # how it was trained, not today's default


def test_a_checkpoint_written_before_the_redesign_evaluates(app, data_root, tmp_path):
    out = tmp_path / "eval"
    proc = app(
        f"ckpt={OLD}", f"data.root={data_root}", "metrics.iw_samples=8", f"hydra.run.dir={out}",
        main="eval",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = read_metrics(out)
    assert (record["dataset"], record["latent_dim"], record["checkpoint_epoch"]) == ("mnist", 2, 1)
    # Settings added later are those the checkpoint was trained with, whatever today's defaults.
    assert [record[k] for k in ("init", "width", "depth", "beta")] == ["torch", 1, 0, 1.0]
    # The same weights on the same 80 test images; only the Monte Carlo draws differ.
    assert record["test_elbo"] == pytest.approx(-557.08, abs=1.0)
    assert (out / "latent_manifold.png").is_file()
