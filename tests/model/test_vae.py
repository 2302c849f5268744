import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributions import ContinuousBernoulli

from vae_latent.model import ConvVAE
from vae_latent.model.elbo import elbo_terms, log_likelihood


@pytest.mark.parametrize(("shape", "params"), [((1, 28, 28), 69_989), ((3, 32, 32), 75_911)])
def test_parameter_count_matches_the_study(shape, params):
    model = ConvVAE(image_shape=shape, latent_dim=2)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("latent", [2, 16])
def test_encode_decode_sample_shapes(shape, latent):
    model = ConvVAE(image_shape=shape, latent_dim=latent)
    x = torch.rand(5, *shape)
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (5, latent)
    assert model.decode(model.reparameterize(mean, logvar)).shape == (5, *shape)
    images = model.sample(4)
    assert images.shape == (4, *shape)
    assert images.min() >= 0 and images.max() <= 1
    eps = torch.zeros(3, latent)
    assert torch.equal(model.sample(eps), model.mean_image(eps))
    assert torch.equal(model.mean_image(eps), torch.sigmoid(model.decode(eps)))


def _hand_elbo(x, logits, z, mean, logvar):
    """The study's formula written out element by element with math, no torch ops."""
    recon = kl = 0.0
    for xi, li in zip(x, logits, strict=True):
        p = 1 / (1 + math.exp(-li))
        recon -= xi * math.log(p) + (1 - xi) * math.log(1 - p)
    for zi, mi, lv in zip(z, mean, logvar, strict=True):
        log_pz = -0.5 * (zi**2 + math.log(2 * math.pi))
        log_qz = -0.5 * ((zi - mi) ** 2 * math.exp(-lv) + lv + math.log(2 * math.pi))
        kl += log_qz - log_pz
    return recon, kl


def test_elbo_matches_hand_computation():
    x = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]], dtype=torch.float64)
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]], dtype=torch.float64)
    z = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    mean = torch.tensor([[0.1, -0.8]], dtype=torch.float64)
    logvar = torch.tensor([[-0.5, 0.4]], dtype=torch.float64)
    recon, kl = elbo_terms(x, logits, z, mean, logvar, kl="mc")
    want_recon, want_kl = _hand_elbo(
        x.flatten().tolist(),
        logits.flatten().tolist(),
        z[0].tolist(),
        mean[0].tolist(),
        logvar[0].tolist(),
    )
    assert recon.item() == pytest.approx(want_recon, rel=1e-12)
    assert kl.item() == pytest.approx(want_kl, rel=1e-12)
    # Closed form: KL(N(m, s^2) || N(0, 1)) = 0.5 * sum(s^2 + m^2 - 1 - log s^2).
    _, kl_analytic = elbo_terms(x, logits, z, mean, logvar, kl="analytic")
    want = 0.5 * sum(
        math.exp(lv) + m**2 - 1 - lv
        for m, lv in zip(mean[0].tolist(), logvar[0].tolist(), strict=True)
    )
    assert kl_analytic.item() == pytest.approx(want, rel=1e-12)


def test_monte_carlo_kl_averages_to_the_closed_form():
    torch.manual_seed(0)
    mean = torch.tensor([[0.5, -1.0, 0.0]]).expand(200_000, 3)
    logvar = torch.tensor([[-1.0, 0.5, 0.0]]).expand(200_000, 3)
    z = ConvVAE.reparameterize(mean, logvar)
    x = logits = torch.zeros(200_000, 1, 1, 1)
    _, kl_mc = elbo_terms(x, logits, z, mean, logvar, kl="mc")
    _, kl_cf = elbo_terms(x, logits, z, mean, logvar, kl="analytic")
    assert kl_mc.mean().item() == pytest.approx(kl_cf[0].item(), abs=0.02)


def test_forward_returns_per_image_terms_and_the_loss_has_gradients():
    torch.manual_seed(0)
    model = ConvVAE(image_shape=(1, 28, 28), latent_dim=4, kl="analytic")
    x = (torch.rand(6, 1, 28, 28) > 0.5).float()
    recon, kl = model(x)
    assert recon.shape == kl.shape == (6,)
    assert (recon > 0).all() and (kl >= 0).all()
    (recon + kl).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_an_unknown_kl_estimator_or_likelihood_is_a_clear_error_in_library_use():
    """The apps refuse them before any work (run/validate.py); a direct call names them too."""
    x = logits = torch.zeros(1, 1, 2, 2)
    z = mean = logvar = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="unknown KL estimator 'exact'"):
        elbo_terms(x, logits, z, mean, logvar, kl="exact")
    with pytest.raises(ValueError, match="unknown likelihood 'gaussian'"):
        ConvVAE(likelihood="gaussian").mean_image(torch.zeros(1, 2))


def test_continuous_bernoulli_is_normalized_and_its_mean_is_what_decode_shows():
    logits = torch.tensor([-2.0, 0.3, 1.5])
    # Integrate each pixel's density over [0, 1] numerically: each integrates to 1.
    x = torch.linspace(0, 1, 20_001)
    for lam in logits:
        lp = log_likelihood(
            x[:, None, None, None], lam.expand(len(x), 1, 1, 1), "continuous_bernoulli"
        )
        assert torch.trapezoid(lp.exp(), x).item() == pytest.approx(1.0, abs=1e-3)
    model = ConvVAE(latent_dim=2, likelihood="continuous_bernoulli")
    z = torch.tensor([[1.5, -2.0]])  # not 0: with zero biases every logit there is 0
    want = ContinuousBernoulli(logits=model.decode(z)).mean
    assert torch.allclose(model.mean_image(z), want)
    assert not torch.allclose(want, torch.sigmoid(model.decode(z)))


def _keras_bound(layer):
    """glorot-uniform's bound from Keras's own kernel layouts and fan computation."""
    if isinstance(layer, nn.Linear):  # Keras Dense kernel: (in, out)
        fan_in, fan_out = layer.in_features, layer.out_features
    else:  # Keras Conv2D kernel (kh, kw, in, out); Conv2DTranspose (kh, kw, filters, in)
        kh, kw = layer.kernel_size
        cin, cout = layer.in_channels, layer.out_channels
        if isinstance(layer, nn.ConvTranspose2d):
            cin, cout = cout, cin  # Keras's fan_in is the filters (its kernel's shape[-2])
        fan_in, fan_out = kh * kw * cin, kh * kw * cout
    return math.sqrt(6 / (fan_in + fan_out))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_the_keras_init_has_glorot_bounds_per_layer_and_zero_biases(shape):
    torch.manual_seed(0)
    model = ConvVAE(image_shape=shape, latent_dim=2, init="keras")
    layers = [
        m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    assert len(layers) == 7
    for layer in layers:
        bound, w = _keras_bound(layer), layer.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound  # uniform up to its bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.25)
        assert torch.count_nonzero(layer.bias) == 0
    # The decoder's first dense layer, 2 -> 32·(H/4)²: Keras starts it at ±0.062 on MNIST,
    # PyTorch's default at ±1/√2 = ±0.71.
    dense = 32 * (shape[1] // 4) ** 2
    assert _keras_bound(model.decoder[0]) == pytest.approx(math.sqrt(6 / (2 + dense)))


def test_the_torch_init_is_pytorchs_layer_defaults():
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=2, init="torch")
    torch.manual_seed(0)
    plain = nn.Sequential(  # the same layers, built in the same order, by PyTorch alone
        nn.Conv2d(1, 32, 3, stride=2), nn.Conv2d(32, 64, 3, stride=2), nn.Linear(2304, 4),
        nn.Linear(2, 1568), nn.ConvTranspose2d(32, 64, 3, 2, 1, 1),
        nn.ConvTranspose2d(64, 32, 3, 2, 1, 1), nn.ConvTranspose2d(32, 1, 3, 1, 1),
    )  # fmt: skip
    ours = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    for a, b in zip(ours, plain, strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_the_study_model_starts_from_the_keras_init_by_default():
    """The default matches the seed model's test ELBO over seeds (docs/numerics.md: Fidelity)."""
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf" / "model" / "cvae.yaml"
    assert OmegaConf.load(conf).init == "keras"
    torch.manual_seed(0)
    model = ConvVAE()
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if hasattr(m, "bias"))
    torch.manual_seed(0)
    assert torch.equal(model.decoder[0].weight, ConvVAE(init="keras").decoder[0].weight)
