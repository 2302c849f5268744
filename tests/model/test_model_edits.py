"""One source of truth: after a user's edit of the model or its ELBO, the default step trains
the model on the screen. The CPU fast path covers the edit, or declines it before any data is
read, or its first step differs from ``ConvVAE.elbo`` and it steps aside; ``model.step=fused``
refuses in one line."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vae_latent.model import ConvVAE, cpu_fast_path, elbo, vae
from vae_latent.model.cpu_fast_path import first_difference, uncovered

from ..conftest import assert_one_line_error, read_metrics, train_tiny

_encoder, _decoder, _blocks = vae.encoder, vae.decoder, vae._blocks


def softplus_variance(monkeypatch):
    """A function body: the variance through a softplus in ``ConvVAE.encode``."""

    def encode(self, x):
        mean, raw = self.encoder(x.contiguous(memory_format=torch.channels_last)).chunk(2, dim=1)
        return mean, torch.log(F.softplus(raw) + 1e-6).clamp(*vae.LOGVAR_RANGE)

    monkeypatch.setattr(ConvVAE, "encode", encode)


def reflect_padding(monkeypatch):
    """A module attribute: ``padding_mode="reflect"`` in the encoder's extra depth blocks."""

    def blocks(conv, c, depth):
        mode = {"padding_mode": "reflect"} if conv is nn.Conv2d else {}
        return [m for _ in range(depth) for m in (conv(c, c, 3, 1, 1, **mode), nn.ReLU())]

    monkeypatch.setattr(vae, "_blocks", blocks)


def smoothed_targets(monkeypatch):
    """The loss: label smoothing of the Bernoulli targets in elbo.py."""

    def log_likelihood(x, logits, likelihood="bernoulli"):
        smoothed = x * 0.9 + 0.05
        nll = F.binary_cross_entropy_with_logits(logits, smoothed, reduction="none")
        return -nll.flatten(1).sum(1)

    monkeypatch.setattr(elbo, "log_likelihood", log_likelihood)


def batch_norm(monkeypatch):
    """A module: BatchNorm2d after the encoder's first conv."""

    def encoder(*args, **kwargs):
        layers = list(_encoder(*args, **kwargs))
        return nn.Sequential(layers[0], nn.BatchNorm2d(layers[0].out_channels), *layers[1:])

    monkeypatch.setattr(vae, "encoder", encoder)


def leaky_relu(monkeypatch):
    """A module: LeakyReLU for the encoder's ReLUs."""

    def encoder(*args, **kwargs):
        layers = _encoder(*args, **kwargs)
        return nn.Sequential(*(nn.LeakyReLU(0.1) if type(m) is nn.ReLU else m for m in layers))

    monkeypatch.setattr(vae, "encoder", encoder)


def dilated_block(monkeypatch):
    """A module attribute: a dilated conv in the extra depth blocks (the same output size)."""

    def blocks(conv, c, depth):
        if conv is not nn.Conv2d:
            return _blocks(conv, c, depth)
        return [m for _ in range(depth) for m in (conv(c, c, 3, 1, 2, dilation=2), nn.ReLU())]

    monkeypatch.setattr(vae, "_blocks", blocks)


def wider_prior(monkeypatch):
    """The loss: a N(0, 1.5²) prior in elbo.py's ``prior_log_prob``."""
    monkeypatch.setattr(
        elbo,
        "prior_log_prob",
        lambda z: torch.distributions.Normal(0.0, 1.5).log_prob(z).sum(-1),
    )


def tempered_noise(monkeypatch):
    """A function body: ``ConvVAE.reparameterize`` draws half the noise."""

    def reparameterize(mean, logvar, eps=None):
        eps = ConvVAE.noise(mean) if eps is None else eps
        return mean + torch.exp(0.5 * logvar) * eps * 0.5

    monkeypatch.setattr(ConvVAE, "reparameterize", staticmethod(reparameterize))


def scaled_by_a_hook(monkeypatch):
    """A module's hook: the decoder's dense layer output scaled by a forward hook."""

    def decoder(*args, **kwargs):
        layers = _decoder(*args, **kwargs)
        layers[0].register_forward_hook(lambda module, inputs, output: output * 0.5)
        return layers

    monkeypatch.setattr(vae, "decoder", decoder)


# edit, extra overrides, what the refusal names (None: only the first step can see the edit)
EDITS = [
    (softplus_variance, [], None),
    (reflect_padding, ["model.depth=1"], "encoder.2.padding_mode='reflect'"),
    (smoothed_targets, [], None),
    (batch_norm, [], "encoder.1 (BatchNorm2d)"),
    (leaky_relu, [], "encoder.1 (LeakyReLU)"),
    (dilated_block, ["model.depth=1"], "encoder.2.dilation=(2, 2)"),
    (wider_prior, [], None),
    (tempered_noise, [], None),
    (scaled_by_a_hook, [], "a hook on decoder.0"),
]
IDS = [edit.__name__ for edit, _, _ in EDITS]


def _weights(run):
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("edit, overrides, names", EDITS, ids=IDS)
def test_after_an_edit_the_default_step_trains_the_same_weights_as_lightnings(
    edit, overrides, names, monkeypatch, data_root, tmp_path, caplog
):
    edit(monkeypatch)
    args = ["callbacks=none", "trainer.max_epochs=1", "metrics.iw_samples=0", *overrides]
    with caplog.at_level(logging.WARNING, logger="vae_latent"):
        auto = train_tiny(tmp_path / "auto", data_root, *args)
    lightning = train_tiny(tmp_path / "lightning", data_root, *args, "model.step=lightning")
    assert lightning["step"] == "lightning" and auto["global_steps"] == 4
    want, got = _weights(tmp_path / "lightning"), _weights(tmp_path / "auto")
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)
    # It stepped aside, said why in one warning, and metrics.json says so.
    warned = [r.getMessage() for r in caplog.records if "model.step=auto" in r.getMessage()]
    assert len(warned) == 1, warned
    assert auto["step"].startswith("lightning (") and auto["step"][11:-1] in warned[0]
    if names:  # before any data: the plan names the module and the attribute
        assert f"does not cover {names}" in auto["step"]
    else:  # at the first step, naming the parameter that differs most
        assert "differs from ConvVAE.elbo at its first step" in auto["step"]
        assert "'s gradient differs by" in auto["step"]


@pytest.mark.parametrize("edit, overrides, names", EDITS, ids=IDS)
def test_after_an_edit_the_fused_step_refuses_in_one_line(
    edit, overrides, names, monkeypatch, app, data_root, tmp_path
):
    edit(monkeypatch)
    if names:  # before any data: a data root without the dataset is never read
        empty = tmp_path / "no-data"
        empty.mkdir()
        args = [f"data.root={empty}", "data.download=false"]
    else:
        args = [f"data.root={data_root}", "data.val_size=40", "data.batch_size=16"]
    proc = app(
        *args,
        *overrides,
        "model.step=fused",
        "trainer.accelerator=cpu",
        "trainer.limit_train_batches=2",
        "callbacks=none",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(proc, "model.step=fused")
    line = proc.stderr.strip()
    assert f"does not cover {names}" in line if names else "at its first step" in line, line


def test_a_broken_fast_path_falls_back_with_a_warning_and_ends_on_lightnings_weights(
    monkeypatch, data_root, tmp_path, caplog
):
    """The first step's check itself: the fast path's KL gradient made wrong on purpose."""
    real, off = cpu_fast_path._reparam_kl_backward, torch.tensor([1.0, 1.0, 1.3, 1.0])
    monkeypatch.setattr(cpu_fast_path, "_reparam_kl_backward", lambda *a: real(*a) * off)
    args = ["callbacks=none", "metrics.iw_samples=0"]
    with caplog.at_level(logging.WARNING, logger="vae_latent"):
        auto = train_tiny(tmp_path / "auto", data_root, *args)
    warned = [r.getMessage() for r in caplog.records if "model.step=auto" in r.getMessage()]
    assert len(warned) == 1 and "encoder." in warned[0], warned
    assert auto["step"].startswith("lightning (the CPU fast path differs from ConvVAE.elbo")
    lightning = train_tiny(tmp_path / "lightning", data_root, *args, "model.step=lightning")
    assert auto["global_steps"] == lightning["global_steps"] == 8
    want, got = _weights(tmp_path / "lightning"), _weights(tmp_path / "auto")
    for key in want:
        assert torch.equal(got[key], want[key]), key  # the same steps, from the first one
    assert auto["test_elbo"] == lightning["test_elbo"]


def test_the_check_runs_again_after_a_resume(monkeypatch, app, data_root, tmp_path):
    """A run resumed under a fast path that no longer matches falls back at its first step."""
    run = tmp_path / "run"
    args = [f"data.root={data_root}", "data.val_size=40", "data.batch_size=16", "callbacks=none",
            "trainer.limit_train_batches=4", "trainer.accelerator=cpu", "metrics.iw_samples=0",
            f"hydra.run.dir={run}"]  # fmt: skip
    assert app(*args, "trainer.max_epochs=1").returncode == 0
    assert read_metrics(run)["step"].startswith("fused: CPU fast path")
    (run / "metrics.json").unlink()
    real = cpu_fast_path._bernoulli_nll
    monkeypatch.setattr(cpu_fast_path, "_bernoulli_nll", lambda logits, x: real(logits, x) * 1.01)
    assert app(*args, "trainer.max_epochs=2", "resume=true").returncode == 0
    metrics = read_metrics(run)
    assert metrics["global_steps"] == 8
    assert (
        metrics["step"].startswith("lightning (the CPU fast path differs")
        and "loss" in (metrics["step"])
    )
    log = (run / "cli.log").read_text()
    assert log.count("model.step=auto: Lightning's step from here") == 1


# --- what the plan covers, module by module --------------------------------------------------


def _study_vae(**kwargs):
    return ConvVAE((1, 28, 28), 2, **kwargs)


def _with(path, change):
    """The study's model with one change to the module at ``path`` (e.g. 'encoder.0')."""
    model = _study_vae(depth=1)
    seq, index = path.split(".")
    change(getattr(model, seq), int(index))
    return model


def _set(attr, value):
    return lambda seq, i: setattr(seq[i], attr, value)


def _replace(module):
    return lambda seq, i: seq.__setitem__(i, module)


class _MyConv(nn.Conv2d):
    pass


@pytest.mark.parametrize(
    "path, change, named",
    [
        ("encoder.0", _set("padding_mode", "circular"), "encoder.0.padding_mode='circular'"),
        ("encoder.2", _set("groups", 2), "encoder.2.groups=2"),
        ("encoder.0", _set("stride", (2, 1)), "encoder.0.stride=(2, 1)"),
        ("encoder.0", _set("padding", "same"), "encoder.0.padding='same'"),
        ("decoder.5", _set("output_padding", (1, 0)), "decoder.5.output_padding=(1, 0)"),
        ("encoder.0", _set("bias", None), "encoder.0.bias=None"),
        ("encoder.0", _set("scale", 2.0), "encoder.0.scale"),
        ("encoder.1", _replace(nn.SiLU()), "encoder.1 (SiLU)"),
        ("encoder.0", _replace(_MyConv(1, 32, 3, 2)), "encoder.0 (_MyConv)"),
        ("encoder.1", _replace(nn.Dropout(0.1)), "encoder.1 (Dropout)"),
        ("decoder.2", _replace(nn.Unflatten(1, (32, 49))), "decoder.2 (Unflatten to (32, 49)"),
        ("encoder.8", _set("start_dim", 0), "encoder.8.start_dim=0"),
    ],
)
def test_the_plan_declines_each_module_or_attribute_it_has_no_exact_form_of(path, change, named):
    assert uncovered(_study_vae(depth=1)) is None
    found = uncovered(_with(path, change))
    assert found is not None and named in found, found


def test_the_plan_declines_weights_it_would_not_train_as_the_reference():
    frozen = _study_vae()
    frozen.encoder[0].weight.requires_grad_(False)
    assert "parameter encoder.0.weight (frozen)" in uncovered(frozen)
    extra = _study_vae()
    extra.prior_scale = nn.Parameter(torch.ones(2))
    assert "parameter prior_scale (outside the encoder and the decoder)" in uncovered(extra)
    double = _study_vae().double()
    assert "float64" in uncovered(double)


def test_each_covered_module_computes_what_the_reference_does():
    """The plan's coverage in one sentence: every recipe and shape the app builds is covered."""
    for kwargs in ({}, {"width": 2, "depth": 1}, {"kl": "analytic"}, {"latent_dim": 32}):
        model = ConvVAE((3, 32, 32), kwargs.pop("latent_dim", 2), **kwargs)
        assert uncovered(model) is None, kwargs


# --- the first step's comparison ------------------------------------------------------------


def test_the_comparison_passes_float_noise_and_names_the_parameter_that_differs_most():
    gen = torch.Generator().manual_seed(0)
    ref = [torch.randn(10, generator=gen) for _ in range(3)]
    noise = [g * (1 + 1e-6 * torch.randn(10, generator=gen)) for g in ref]
    loss = torch.tensor(150.0)
    names = ["a", "b", "c"]
    assert first_difference((loss * (1 + 1e-7), loss), (noise, ref), names) is None
    off = [ref[0], ref[1] * 1.05, ref[2] * 1.2]
    assert (
        first_difference((loss, loss), (off, ref), names)
        == "c's gradient differs by 0.2 of its norm"
    )
    assert "the loss 150.15 against 150, every gradient within" in first_difference(
        (loss * 1.001, loss), (ref, ref), names
    )
    nan = [ref[0], ref[1] * float("nan"), ref[2]]
    assert "b's gradient" in first_difference((loss, loss), (nan, ref), names)
    assert "a gets a gradient only from the reference" in first_difference(
        (loss, loss), ([None, *ref[1:]], ref), names
    )
