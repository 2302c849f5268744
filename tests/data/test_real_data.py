"""On the real MNIST and Fashion-MNIST files; set VAE_LATENT_DATA to their root (CI does)."""

import os
from pathlib import Path

import lightning as L
import pytest

from vae_latent.data import VAEDataModule
from vae_latent.model import LitVAE

ROOT = os.environ.get("VAE_LATENT_DATA")
pytestmark = pytest.mark.skipif(
    not ROOT or not Path(ROOT, "MNIST", "raw").is_dir(),
    reason="real data absent: set VAE_LATENT_DATA to a folder with MNIST/raw and FashionMNIST/raw",
)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_splits_have_the_official_sizes(name):
    dm = VAEDataModule(name=name, root=ROOT, download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {
        "train": 55_000,
        "val": 5_000,
        "test": 10_000,
    }
    assert dm.splits["train"].labels.bincount().min() > 4_000  # every class present


def test_a_few_hundred_steps_on_real_mnist_improve_the_test_elbo():
    L.seed_everything(0, verbose=False)
    dm = VAEDataModule(name="mnist", root=ROOT, download=False)
    model = LitVAE(image_shape=dm.image_shape, latent_dim=2)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=300,
        limit_val_batches=0,
        limit_test_batches=10,  # 2,560 test images: plenty to see the ELBO move
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (before,) = trainer.test(model, datamodule=dm, verbose=False)
    trainer.fit(model, datamodule=dm)
    (after,) = trainer.test(model, datamodule=dm, verbose=False)
    # An untrained decoder predicts ~0.5 everywhere: about 784 * ln 2 = 543 nats per image.
    assert before["test/elbo"] < -500
    assert after["test/elbo"] > before["test/elbo"] + 200, (before, after)
