"""Model capacity (model.width, model.depth) and the KL weight (model.beta) as settings."""

import pytest
import torch
from torch import nn

from vae_latent.model import ConvVAE, LitVAE
from vae_latent.model.elbo import elbo_terms

from ..conftest import TINY, assert_one_line_error, read_metrics


def study_layers(latent_dim=2):
    """The study's encoder and decoder as they were written before the knobs (61ffff5)."""
    enc = nn.Sequential(
        nn.Conv2d(1, 32, 3, stride=2), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 6 * 6, 2 * latent_dim),
    )  # fmt: skip
    dec = nn.Sequential(
        nn.Linear(latent_dim, 32 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (32, 7, 7)),
        nn.ConvTranspose2d(32, 64, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 3, stride=1, padding=1),
    )  # fmt: skip
    return enc.to(memory_format=torch.channels_last), dec.to(memory_format=torch.channels_last)


def test_the_defaults_are_the_studys_model_bit_for_bit():
    # From PyTorch's layer defaults, as the model was written then (init is tested in test_vae).
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=2, width=1, depth=0, init="torch")
    torch.manual_seed(0)
    enc, dec = study_layers()
    assert sum(p.numel() for p in model.parameters()) == 69_989
    ours, theirs = nn.ModuleList([model.encoder, model.decoder]), nn.ModuleList([enc, dec])
    assert [type(m) for m in ours.modules()][1:] == [type(m) for m in theirs.modules()][1:]
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # One seeded step of each: the same loss, gradients and Adam update, bit for bit.
    x = (torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    eps = torch.randn(16, 2, generator=torch.Generator().manual_seed(2))
    losses, updated = [], []
    for encode, decode, params in (
        (model.encoder, model.decoder, list(model.parameters())),
        (enc, dec, [*enc.parameters(), *dec.parameters()]),
    ):
        opt = torch.optim.Adam(params, lr=1e-4)
        mean, logvar = encode(x).chunk(2, dim=1)
        logvar = logvar.clamp(-30, 20)
        z = mean + torch.exp(0.5 * logvar) * eps
        recon, kl = elbo_terms(x, decode(z), z, mean, logvar)
        loss = (recon + kl).mean()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        updated.append([p.detach().clone() for p in params])
    assert torch.equal(losses[0], losses[1])
    for a, b in zip(*updated, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("width", "depth"), [(2, 0), (1, 1), (2, 1), (4, 1)])
def test_width_multiplies_channels_and_depth_adds_same_size_blocks(width, depth):
    model = ConvVAE(latent_dim=2, width=width, depth=depth)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 5 + 4 * depth
    assert convs[0].out_channels == 32 * width and convs[-1].in_channels == 32 * width
    x = torch.rand(3, 1, 28, 28)
    mean, logvar = model.encode(x)
    assert mean.shape == (3, 2) and model.decode(mean).shape == (3, 1, 28, 28)


def test_beta_weighs_the_kl_in_the_loss_only():
    torch.manual_seed(0)
    module = LitVAE(latent_dim=2, beta=4.0)
    recon, kl = torch.tensor([100.0, 120.0]), torch.tensor([3.0, 5.0])
    assert module._loss(recon, kl).item() == pytest.approx(110 + 4 * 4)
    assert LitVAE(latent_dim=2)._loss(recon, kl).item() == pytest.approx(110 + 4)


def test_a_wider_deeper_beta_4_run_trains_resumes_evaluates_and_draws(app, data_root, tmp_path):
    run = tmp_path / "run"
    args = [f"data.root={data_root}", *TINY, "model.width=2", "model.depth=1", "model.beta=4"]
    args += ["metrics.iw_samples=0", "callbacks=none"]
    assert app(*args, "trainer.max_epochs=1", f"hydra.run.dir={run}").returncode == 0
    (run / "metrics.json").unlink()
    # Resumed with the pictures on: they are drawn from the wider, deeper model.
    done = app(f"resume={run}", "trainer.max_epochs=2", "callbacks=default",
               "callbacks.explorer.grid=10")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    record = read_metrics(run)
    assert (record["width"], record["depth"], record["beta"], record["epochs"]) == (2, 1, 4.0, 2)
    assert record["params"] > 69_989 * 3
    # The reported ELBO is the β = 1 bound: recon + KL, whatever β trained.
    assert record["test_elbo"] == pytest.approx(-(record["test_recon"] + record["test_kl"]))
    for name in ("latent_manifold.png", "latent_scatter.png", "explorer.html", "grid.png"):
        assert (run / name).is_file(), name
    out = tmp_path / "eval"
    ckpt = run / record["test_checkpoint"]
    args = [f"ckpt={ckpt}", f"data.root={data_root}", "callbacks=none", "metrics.iw_samples=0"]
    proc = app(*args, f"hydra.run.dir={out}", main="eval")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_metrics(out)["params"] == record["params"]
    refused = app(f"resume={run}", "model.width=1", "trainer.max_epochs=3")
    assert_one_line_error(refused, "model.width=1 but the run was made with model.width=2")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.width=0", "model.width=0 must be an integer in [1, 16]"),
        ("model.depth=-1", "model.depth=-1 must be an integer in [0, 8]"),
        ("model.beta=-0.5", "model.beta=-0.5 must be a number ≥ 0"),
        ("model.width=2.5", "model.width=2.5 must be an integer"),
    ],
)
def test_a_bad_capacity_or_beta_is_one_line(app, tmp_path, override, needle):
    assert_one_line_error(app(override, f"hydra.run.dir={tmp_path / 'r'}"), needle)


def test_checkpoints_from_before_the_knobs_load_as_the_studys_model():
    import vae_latent

    from ..run.test_checkpoints import OLD

    model = vae_latent.load(OLD)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 5 and sum(p.numel() for p in model.parameters()) == 69_989


def test_the_record_of_a_default_run_says_the_study_model(trained):
    record = read_metrics(trained)
    knobs = (record["width"], record["depth"], record["beta"], record["params"])
    assert knobs == (1, 0, 1.0, 69_989)
