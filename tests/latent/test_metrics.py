"""Each latent-space metric on constructed cases whose answer is known."""

import math

import pytest
import torch

from vae_latent.data import VAEDataModule
from vae_latent.latent.codes import Codes, encode_split
from vae_latent.latent.metrics import active_units, iw_log_px, iw_nll, probes, score_test_set
from vae_latent.model import ConvVAE
from vae_latent.model.elbo import elbo_terms


def test_only_the_dims_that_vary_are_active():
    torch.manual_seed(0)
    means = torch.zeros(500, 8)
    means[:, [1, 4, 6]] = torch.randn(500, 3)  # variance ~1
    means[:, 2] = 0.05 * torch.randn(500)  # variance ~0.0025: below the 0.01 threshold
    assert active_units(means) == 3


def test_kl_per_dim_is_the_closed_form_averaged_over_images():
    means = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    logvars = torch.tensor([[0.0, math.log(4.0)], [0.0, math.log(4.0)]])
    # dim 0: q = N(0, 1) = prior -> 0; dim 1: 0.5 * (4 + 1 - 1 - ln 4)
    want = [0.0, 0.5 * (4 + 1 - 1 - math.log(4.0))]
    assert Codes(means, logvars, torch.zeros(2)).kl_per_dim().tolist() == pytest.approx(want)


def test_separated_classes_score_perfectly_and_mixed_ones_do_not():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(600) % 3
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    means = centres[labels] + 0.1 * torch.randn(600, 2, generator=gen)
    scores = probes(means[:400], labels[:400], means[400:], labels[400:])
    assert scores["linear_probe_acc"] == 1.0 and scores["knn_acc"] == 1.0
    assert scores["silhouette"] > 0.95
    noise = torch.randn(600, 2, generator=gen)  # labels carry no information
    mixed = probes(noise[:400], labels[:400], noise[400:], labels[400:])
    assert mixed["linear_probe_acc"] < 0.5 and abs(mixed["silhouette"]) < 0.1


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # PyTorch's start: an untrained encoder whose posterior is far from the prior (Keras's zero
    # biases and small weights leave it near N(0, I), where importance weighting gains ~nothing).
    return ConvVAE(latent_dim=3, init="torch").eval()


def test_iw_with_one_sample_is_the_single_sample_elbo_on_the_same_draw(model):
    x = (torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    got = iw_log_px(model, x, k=1, generator=torch.Generator().manual_seed(7))
    eps = torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(7))[0]
    with torch.no_grad():
        mean, logvar = model.encode(x)
        z = mean + torch.exp(0.5 * logvar) * eps
        recon, kl = elbo_terms(x, model.decode(z), z, mean, logvar, kl="mc")
    torch.testing.assert_close(got, -(recon + kl))


def test_iw_bound_tightens_as_k_grows(model):
    x = (torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    bounds = [
        iw_log_px(model, x, k, torch.Generator().manual_seed(3)).mean().item() for k in (1, 10, 100)
    ]
    assert bounds[0] < bounds[1] < bounds[2]


def test_iw_nll_chunks_do_not_change_the_estimate(model):
    x = (torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(4)) > 0.5).float()
    whole = iw_log_px(model, x, 30, torch.Generator().manual_seed(5), chunk=10_000)
    pieces = iw_log_px(model, x, 30, torch.Generator().manual_seed(5), chunk=25)
    torch.testing.assert_close(whole, pieces)
    nll, se = iw_nll(model, x, k=5, n_images=4, seed=1)
    assert nll > 0 and se > 0


def test_latent_metrics_on_fixture_data(data_root, model):
    dm = VAEDataModule(root=str(data_root), download=False, val_size=40)
    dm.prepare_data()
    dm.setup()
    m = score_test_set(model, dm.splits, iw_samples=8, iw_images=30)
    assert m["iw_images"] == 30 and m["iw_samples"] == 8 and m["iw_nll_se"] > 0
    assert m["bits_per_dim"] == pytest.approx(m["iw_nll"] / (784 * math.log(2)))
    assert len(m["kl_per_dim"]) == 3 and 0 <= m["active_units"] <= 3
    for key in ("linear_probe_acc", "knn_acc"):
        assert 0 <= m[key] <= 1
    assert -1 <= m["silhouette"] <= 1
    assert score_test_set(model, dm.splits, iw_samples=0)["iw_nll"] is None
    # Codes the test loop already computed give the same numbers as encoding the split again.
    codes = encode_split(model, dm.splits["test"])
    again = score_test_set(model, dm.splits, codes, iw_samples=8, iw_images=30)
    assert again == m


def test_iw_nll_standard_error_is_over_the_images(model):
    x = (torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(6)) > 0.5).float()
    nll, se = iw_nll(model, x, k=4, n_images=40, seed=2)
    index = torch.randperm(40, generator=torch.Generator().manual_seed(2))
    per_image = -iw_log_px(model, x[index], 4, _after_randperm(2, 40))
    assert nll == pytest.approx(per_image.mean().item(), rel=1e-5)
    assert se == pytest.approx(per_image.double().std().item() / math.sqrt(40), rel=1e-4)


def _after_randperm(seed, n):
    """The generator iw_nll uses for its draws: seeded, after choosing the image subset."""
    gen = torch.Generator().manual_seed(seed)
    torch.randperm(n, generator=gen)
    return gen
