"""The CPU fast path (NHWC layers, written-out backward) against ``ConvVAE.elbo``."""

import copy

import pytest
import torch
import torch.nn.functional as F

from vae_latent.model import ConvVAE
from vae_latent.model.cpu_fast_path import (
    _bernoulli_nll,
    _conv_transpose_depthwise,
    _plan,
    _reparam_kl,
    _reparam_kl_backward,
    _run,
    elbo_backward,
    is_mc_bernoulli,
    nhwc_elbo,
)
from vae_latent.model.vae import LOGVAR_RANGE


def _grads(vae, recon, kl_term):
    (recon + kl_term).mean().backward()
    return {name: p.grad.clone() for name, p in vae.named_parameters()}


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((1, 28, 28), {}),  # the study's model
        ((1, 28, 28), {"latent_dim": 8}),
        ((3, 32, 32), {"latent_dim": 4}),
        ((1, 28, 28), {"width": 2, "depth": 1}),
        ((1, 28, 28), {"kl": "analytic"}),
        ((1, 28, 28), {"likelihood": "continuous_bernoulli"}),
    ],
)
def test_the_nhwc_elbo_and_its_gradients_equal_the_reference(monkeypatch, shape, kwargs):
    torch.manual_seed(0)
    args = {"latent_dim": 2, "likelihood": "bernoulli", "kl": "mc", "init": "torch", **kwargs}
    ref = ConvVAE(shape, args.pop("latent_dim"), args.pop("likelihood"), args.pop("kl"), **args)
    fast = copy.deepcopy(ref)
    x = (torch.rand(8, *shape, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    eps = torch.randn(8, ref.latent_dim, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(ConvVAE, "noise", staticmethod(lambda like: eps.clone()))

    recon, kl_term, _, _ = ref.elbo(x)
    fast_recon, fast_kl = nhwc_elbo(fast, x)

    torch.testing.assert_close(fast_recon, recon, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fast_kl, kl_term, rtol=1e-5, atol=1e-5)
    want, got = _grads(ref, recon, kl_term), _grads(fast, fast_recon, fast_kl)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)


STUDY_RECIPES = [
    ((1, 28, 28), {}),  # the study's model
    ((1, 28, 28), {"latent_dim": 8}),
    ((3, 32, 32), {"latent_dim": 4}),
    ((1, 28, 28), {"width": 2, "depth": 1}),
]


@pytest.mark.parametrize("beta", [1.0, 0.25])
@pytest.mark.parametrize("shape, kwargs", STUDY_RECIPES)
def test_the_written_out_backward_equals_autograds(monkeypatch, shape, kwargs, beta):
    """``elbo_backward``: the same terms, and in .grad the gradient of mean(recon + β KL)."""
    torch.manual_seed(0)
    latent = kwargs.get("latent_dim", 2)
    args = {k: v for k, v in kwargs.items() if k != "latent_dim"}
    ref = ConvVAE(shape, latent, "bernoulli", "mc", init="torch", **args)
    fast = copy.deepcopy(ref)
    assert is_mc_bernoulli(fast)
    x = (torch.rand(8, *shape, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    eps = torch.randn(8, latent, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(ConvVAE, "noise", staticmethod(lambda like: eps.clone()))

    recon, kl_term, _, _ = ref.elbo(x)
    (recon + beta * kl_term).mean().backward()
    fast_recon, fast_kl = elbo_backward(fast, x, beta)

    assert not fast_recon.requires_grad and not fast_kl.requires_grad  # no graph recorded
    torch.testing.assert_close(fast_recon, recon.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fast_kl, kl_term.detach(), rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(ref.named_parameters(), fast.parameters(), strict=True):
        assert q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_other_recipes_are_not_written_out():
    assert not is_mc_bernoulli(ConvVAE((1, 28, 28), 2, "bernoulli", "analytic"))
    assert not is_mc_bernoulli(ConvVAE((1, 28, 28), 2, "continuous_bernoulli", "mc"))


def test_the_bernoulli_nll_matches_torchs_at_saturated_logits():
    logits = torch.tensor([[-120.0, -30.0, -17.0, -1.0, 0.0, 2.5, 17.0, 30.0, 120.0]] * 2)
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.5]]).expand(2, -1)
    got = _bernoulli_nll(logits.clone(), x)
    want = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_the_reparam_kl_is_exact_at_the_clamps_and_passes_no_gradient_there():
    """Against the reference formula in float64: in float32 the reference's (z - mean)² / σ²
    cancels badly where σ is tiny (logvar at -30); eps² does not."""
    lo, hi = LOGVAR_RANGE
    h = torch.tensor([[0.3, -0.2, lo - 5.0, 0.1], [0.0, 1.0, 0.5, hi + 5.0]])
    eps = torch.tensor([[0.5, -1.0], [2.0, 0.3]])
    z, kl_term, saved = _reparam_kl(h, eps)
    grad_h = _reparam_kl_backward(saved, torch.ones_like(z), 1.0)  # of z.sum() + kl_term.sum()

    ref = h.detach().double().requires_grad_()
    mean, logvar = ref[:, :2], ref[:, 2:].clamp(lo, hi)
    ref_z = mean + torch.exp(0.5 * logvar) * eps.double()
    ref_kl = 0.5 * (ref_z.square() - (ref_z - mean).square() * torch.exp(-logvar) - logvar)
    (ref_z.sum() + ref_kl.sum()).backward()
    torch.testing.assert_close(z, ref_z.float())
    torch.testing.assert_close(kl_term, ref_kl.sum(1).float())
    torch.testing.assert_close(grad_h, ref.grad.float())
    assert grad_h[0, 2] == 0 and grad_h[1, 3] == 0


@pytest.mark.parametrize("kernel, padding", [(3, 1), (3, 0), (5, 2)])
def test_the_depthwise_transposed_conv_equals_torchs(kernel, padding):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 7, 7, 16, generator=gen)  # NHWC
    w = torch.randn(16, 1, kernel, kernel, generator=gen)
    b = torch.randn(1, generator=gen)
    got = _conv_transpose_depthwise(x, w, b, padding)
    want = F.conv_transpose2d(x.permute(0, 3, 1, 2), w, b, 1, padding)
    torch.testing.assert_close(got, want.permute(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_a_sequential_ending_in_a_relu_leaves_a_shared_incoming_gradient_alone():
    """``a + b`` hands both stacks the same gradient tensor; each masks its own copy."""
    torch.manual_seed(0)
    stacks = [torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()) for _ in range(2)]
    x = torch.randn(2, 8, 8, 3)  # NHWC
    weights = torch.randn(2, 6, 6, 4)
    out = _run(stacks[0], x) + _run(stacks[1], x)
    (out * weights).sum().backward()
    got = [s[0].weight.grad.clone() for s in stacks]
    for s in stacks:
        s.zero_grad()
    ref = sum(s(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) for s in stacks)
    (ref * weights).sum().backward()
    for g, s in zip(got, stacks, strict=True):
        torch.testing.assert_close(g, s[0].weight.grad)


def test_a_sequentials_plan_is_reused_and_keeps_no_state_between_passes():
    """The plan is built once per Sequential (again if its layers change), so its ops hold no
    per-pass state: two forwards of different batch sizes before either backward are exact."""
    torch.manual_seed(0)
    vae = ConvVAE((1, 28, 28), 2, "bernoulli", "mc", init="torch")
    assert _plan(vae.encoder) is _plan(vae.encoder)
    xs = [torch.rand(n, 28, 28, 1) for n in (5, 3)]  # NHWC
    weights = [torch.randn(n, 4) for n in (5, 3)]
    outs = [_run(vae.encoder, x) for x in xs]
    sum((o * w).sum() for o, w in zip(outs, weights, strict=True)).backward()
    got = {n: p.grad.clone() for n, p in vae.encoder.named_parameters()}
    vae.zero_grad()
    refs = [vae.encoder(x.permute(0, 3, 1, 2)) for x in xs]
    sum((r * w).sum() for r, w in zip(refs, weights, strict=True)).backward()
    for name, p in vae.encoder.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-5, msg=name)
    before = _plan(vae.encoder)
    vae.encoder[0] = torch.nn.Conv2d(1, 32, 3, stride=2)
    assert _plan(vae.encoder) is not before and _plan(vae.encoder)[0].layer is vae.encoder[0]


def test_the_package_uses_only_the_torch_internals_the_fast_path_names():
    """``torch._*`` and ``torch.ops`` only where model/cpu_fast_path.py's docstring says why."""
    import ast
    from pathlib import Path

    from vae_latent.model import cpu_fast_path

    package = Path(cpu_fast_path.__file__).parents[1]
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            chain, inner = [], node
            while isinstance(inner, ast.Attribute):
                chain.insert(0, inner.attr)
                inner = inner.value
            torch_chain = isinstance(inner, ast.Name) and inner.id == "torch" and chain
            if torch_chain and (chain[0] == "ops" or any(p.startswith("_") for p in chain)):
                found.add((path.name, ".".join(["torch", *chain])))
    # ast.walk also meets each chain's prefixes (torch.ops, torch.ops.aten, ...): keep the longest
    found = {
        (f, c) for f, c in found if not any(g == f and d.startswith(c + ".") for g, d in found)
    }
    named = {("cpu_fast_path.py", "torch.ops.aten.threshold_backward.grad_input")}
    assert found == named
    for _, internal in named:
        assert internal in cpu_fast_path.__doc__
