"""The CPU fast path: ``ConvVAE.elbo`` and its gradients through NHWC layers, checked against it.

``ConvVAE.elbo`` (model/vae.py) is the reference and the code a user edits. On the CPU the
default step (``model.step=auto``) runs this instead, with the model's own parameters. Its plan
is derived from the model's modules: each module type and every attribute that changes what it
computes is either covered exactly here (``COVERED``) or the fast path declines the model
(``uncovered``) before any data is read, and Lightning's step trains it. What the plan cannot
see (an edited ``encode``, ``decode``, ``elbo`` or likelihood) the first step catches:
``LitVAE`` runs it both ways from the same weights, batch and noise and compares the loss and
every gradient (``first_difference``) before the fast path trains.

How it is faster: activations stay plain contiguous (B, H, W, C) tensors, every layer's
backward is written out (each op of a plan), each ReLU and its backward run in place, the
strided transposed convs' backward is two ordinary convolutions, and the logits layer (a
stride-1 transposed conv to one channel) runs forward as a depthwise conv and a sum over
channels. For the study's recipe (MC KL, Bernoulli) ``elbo_backward`` runs forward and backward
without autograd and puts the gradients in ``.grad``; other recipes go through ``nhwc_elbo``,
where the encoder and the decoder are one autograd node each (``SequentialFunction``). What each
piece buys, measured: docs/speed.md.

Torch internals it uses, each for a reason: ``torch.ops.aten.threshold_backward.grad_input``,
a ReLU's backward in place (measured against the public forms in docs/speed.md), and a module's
hook dictionaries (``_forward_hooks`` and the like, in ``_HOOKS``), read to decline a model
with hooks the fast path would skip. Everything else is public torch API.
"""

from __future__ import annotations

import functools
import math
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_latent.model.elbo import elbo_terms
from vae_latent.model.vae import LOGVAR_RANGE

# A ReLU's backward in place on its incoming gradient, in one pass: the out= form of the op
# autograd runs. The public forms (grad * (y > 0), masked_fill_) take a second pass over a mask.
_threshold_backward_ = torch.ops.aten.threshold_backward.grad_input

# Beyond these, the first step's two ways differ by more than float summation order: the loss
# relatively, each gradient by the L2 norm of the difference over its own (docs/numerics.md).
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-3


class NotCovered(Exception):
    """A module or attribute the fast path has no exact form of (the message names it)."""


# The module types the fast path covers, with the value it covers of every attribute that
# changes what the module computes. Any other type (subclasses too), value, or attribute a fresh
# module of the type does not have, is not covered; nor are hooks.
COVERED: dict[type, dict[str, Any]] = {
    nn.Conv2d: {"padding_mode": "zeros", "dilation": (1, 1), "groups": 1},
    nn.ConvTranspose2d: {"padding_mode": "zeros", "dilation": (1, 1), "groups": 1},
    nn.Linear: {},
    nn.ReLU: {},
    nn.Flatten: {"start_dim": 1, "end_dim": -1},
    nn.Unflatten: {"dim": 1},
}
_HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def uncovered(vae: nn.Module) -> str | None:
    """Why the fast path does not cover ``vae`` (naming the module and attribute), or None.

    Builds the encoder's and the decoder's plans afresh, so a covered model runs what it says.
    """
    try:
        _check_hooks(vae, "vae")
        for name in ("encoder", "decoder"):
            _PLANS.pop(getattr(vae, name, None), None)
            _plan(getattr(vae, name, None), name)
        _check_parameters(vae)
    except NotCovered as e:
        return str(e)
    return None


def _check_parameters(vae: nn.Module) -> None:
    """Every parameter in the encoder or the decoder, float32, dense and trained; no buffers."""
    for name, p in vae.named_parameters():
        if not name.startswith(("encoder.", "decoder.")):
            raise NotCovered(f"parameter {name} (outside the encoder and the decoder)")
        if not p.requires_grad:
            raise NotCovered(f"parameter {name} (frozen)")
        if p.dtype != torch.float32 or p.layout != torch.strided:
            raise NotCovered(f"parameter {name} ({p.dtype}, {p.layout}; it covers float32)")
    for name, _ in vae.named_buffers():
        raise NotCovered(f"buffer {name}")


def _check_hooks(module: nn.Module, name: str) -> None:
    if any(getattr(module, hooks, None) for hooks in _HOOKS):
        raise NotCovered(f"a hook on {name} (the fast path runs layers without calling them)")


def _check_module(layer: nn.Module, name: str) -> None:
    """``layer`` is of a covered type, with the covered value of every attribute it has."""
    kind = type(layer)
    if kind not in COVERED:
        raise NotCovered(f"{name} ({kind.__name__})")
    for attr, value in COVERED[kind].items():
        if getattr(layer, attr) != value:
            raise NotCovered(f"{name}.{attr}={getattr(layer, attr)!r} (it covers {value!r})")
    unknown = sorted(set(vars(layer)) - _fresh_attributes(kind))
    if unknown:
        raise NotCovered(f"{name}.{unknown[0]} (an attribute a fresh {kind.__name__} lacks)")
    _check_hooks(layer, name)
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        _check_conv(layer, name)
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and layer.bias is None:
        raise NotCovered(f"{name}.bias=None (it covers layers with a bias)")


def _check_conv(layer: nn.Conv2d | nn.ConvTranspose2d, name: str) -> None:
    """The same stride, padding and output padding in both directions, and a square kernel."""
    for attr in ("kernel_size", "stride", "padding", "output_padding"):
        value = getattr(layer, attr)
        square = isinstance(value, tuple) and len(set(value)) == 1
        if not square or not all(isinstance(v, int) for v in value):
            raise NotCovered(f"{name}.{attr}={value!r} (it covers one integer for both sides)")


@functools.cache
def _fresh_attributes(kind: type) -> frozenset[str]:
    """The attribute names a freshly built module of ``kind`` has (built on the meta device: no
    memory, and no draw from the random generator a seeded run depends on)."""
    weighted = {nn.Conv2d: (1, 1, 1), nn.ConvTranspose2d: (1, 1, 1), nn.Linear: (1, 1)}
    if kind in weighted:
        fresh = kind(*weighted[kind], device="meta")
    else:
        fresh = nn.Unflatten(1, (1, 1, 1)) if kind is nn.Unflatten else kind()
    return frozenset(vars(fresh))


class SequentialFunction(torch.autograd.Function):
    """A ConvVAE Sequential on NHWC tensors as one autograd node: the forward runs each layer
    through aten (oneDNN on the CPU) and keeps what its backward needs; the backward walks the
    layers in reverse with their gradients written out (no autograd graph inside it)."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, plan: tuple, *params: Tensor) -> Tensor:
        kept: list[Tensor] = []
        h = _forward(plan, h, kept)
        ctx.plan = plan
        ctx.save_for_backward(*kept)
        return h

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        if getattr(ctx.plan[-1], "relu", False):  # the layers' backward masks in place: the
            grad = grad.clone()  # gradient autograd hands in may have other readers
        grad, grads = _backward(ctx.plan, grad, list(ctx.saved_tensors), ctx.needs_input_grad[0])
        return (grad, None, *grads)


def _forward(plan: tuple, h: Tensor, kept: list[Tensor]) -> Tensor:
    """``plan``'s layers on NHWC ``h``; each appends to ``kept`` what its backward needs."""
    for op in plan:
        h = op.forward(h, kept)
    return h


def _backward(
    plan: tuple, grad: Tensor, kept: list[Tensor], need_input: bool
) -> tuple[Tensor | None, list[Tensor]]:
    """The gradient of ``plan``'s input (if ``need_input``) and of its parameters, in order,
    from its output's ``grad`` (which the ReLUs' backward overwrites)."""
    grads: list[Tensor] = []
    for i in reversed(range(len(plan))):
        grad, param_grads = plan[i].backward(grad, kept, i > 0 or need_input)
        grads[:0] = param_grads
    return grad, grads


class _Conv:
    """conv2d or conv_transpose2d (and its ReLU) on NHWC tensors."""

    def __init__(self, layer: nn.Module, relu: bool) -> None:
        self.layer, self.relu = layer, relu
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        self.s, self.p = layer.stride[0], layer.padding[0]
        self.op = layer.output_padding[0] if self.transposed else 0
        # the logits layer: stride 1, one output channel (an ordinary conv, padding k - 1 - p)
        one = self.transposed and layer.out_channels == 1 and self.s == 1 and self.op == 0
        self.depthwise = one and self.p < layer.kernel_size[0]

    def params(self) -> list[Tensor]:
        return [self.layer.weight, self.layer.bias]

    def forward(self, x: Tensor, kept: list[Tensor]) -> Tensor:
        w, b, s, p = self.layer.weight, self.layer.bias, self.s, self.p
        if self.depthwise:
            y = _conv_transpose_depthwise(x, w, b, p)
        else:
            xc = x.permute(0, 3, 1, 2)  # a channels-last NCHW view: no copy
            if self.transposed:
                y = F.conv_transpose2d(xc, w, b, s, p, self.op).permute(0, 2, 3, 1)
            else:
                y = F.conv2d(xc, w, b, s, p).permute(0, 2, 3, 1)
            y = y if y.is_contiguous() else y.contiguous()
        if self.relu:
            y.relu_()
        kept += [x, y] if self.relu else [x]
        return y

    def backward(self, grad: Tensor, kept: list[Tensor], need_input: bool) -> tuple:
        y = kept.pop() if self.relu else None
        x = kept.pop()
        w, s, p = self.layer.weight, self.s, self.p
        if y is not None:  # in place: the next layer's backward made this gradient for it alone
            grad = _threshold_backward_(grad, y, 0, grad_input=grad)
        g, xc = grad.permute(0, 3, 1, 2), x.permute(0, 3, 1, 2)  # channels-last views
        if self.transposed:
            # As TensorFlow runs it: a transposed conv's input gradient is the ordinary conv of
            # its output's gradient with the same weights, and its weights' gradient is that
            # conv's weight gradient with input and output swapped.
            gx = F.conv2d(g, w, None, s, p) if need_input else None
            gw = torch.nn.grad.conv2d_weight(g, w.shape, xc, s, p)
        else:
            gx = torch.nn.grad.conv2d_input(xc.shape, w, g, s, p) if need_input else None
            gw = torch.nn.grad.conv2d_weight(xc, w.shape, g, s, p)
        return (None if gx is None else gx.permute(0, 2, 3, 1)), [gw, grad.sum((0, 1, 2))]


class _FlattenDense:
    """Flatten then Linear in the NHWC order: the dense weights are permuted to it instead
    (nn.Flatten of an NCHW tensor orders its features C, H, W)."""

    def __init__(self, dense: nn.Linear) -> None:
        self.dense = dense

    def params(self) -> list[Tensor]:
        return [self.dense.weight, self.dense.bias]

    def forward(self, h: Tensor, kept: list[Tensor]) -> Tensor:
        n, hh, ww, c = h.shape
        out = len(self.dense.weight)
        weight = self.dense.weight.view(out, c, hh, ww).permute(0, 2, 3, 1).reshape(out, -1)
        kept += [h, weight]  # h, not its flat view: the backward reads the shape from it
        return torch.addmm(self.dense.bias, h.reshape(n, -1), weight.t())

    def backward(self, grad: Tensor, kept: list[Tensor], need_input: bool) -> tuple:
        weight = kept.pop()
        h = kept.pop()
        n, hh, ww, c = h.shape
        gw = grad.t().mm(h.reshape(n, -1)).view(-1, hh, ww, c).permute(0, 3, 1, 2)
        gx = grad.mm(weight).view(n, hh, ww, c) if need_input else None
        return gx, [gw.reshape(len(weight), -1), grad.sum(0)]


class _DenseUnflatten:
    """Linear (and its ReLU) then Unflatten to (C, H, W), giving NHWC: the weights permuted."""

    def __init__(self, dense: nn.Linear, relu: bool, shape: tuple) -> None:
        self.dense, self.relu, (self.c, self.hh, self.ww) = dense, relu, shape

    def params(self) -> list[Tensor]:
        return [self.dense.weight, self.dense.bias]

    def forward(self, z: Tensor, kept: list[Tensor]) -> Tensor:
        c, hh, ww = self.c, self.hh, self.ww
        weight = self.dense.weight.view(c, hh, ww, -1).permute(1, 2, 0, 3).reshape(c * hh * ww, -1)
        bias = self.dense.bias.view(c, hh, ww).permute(1, 2, 0).reshape(-1)
        y = torch.addmm(bias, z, weight.t())
        if self.relu:
            y.relu_()
        kept += [z, weight, y] if self.relu else [z, weight]
        return y.view(len(y), hh, ww, c)

    def backward(self, grad: Tensor, kept: list[Tensor], need_input: bool) -> tuple:
        y = kept.pop() if self.relu else None
        weight = kept.pop()
        z = kept.pop()
        c, hh, ww = self.c, self.hh, self.ww
        g = grad.reshape(len(z), -1)
        if y is not None:
            g = _threshold_backward_(g, y, 0, grad_input=g)
        gw = g.t().mm(z).view(hh, ww, c, -1).permute(2, 0, 1, 3).reshape(c * hh * ww, -1)
        gb = g.sum(0).view(hh, ww, c).permute(2, 0, 1).reshape(-1)
        return (g.mm(weight) if need_input else None), [gw, gb]


def _plan(layers: nn.Module, name: str = "layers") -> tuple:
    """The NHWC operations of a ConvVAE Sequential: each conv with its ReLU, and Flatten /
    Unflatten folded into the dense layer beside them. Built once per Sequential (the ops read
    their layers' parameters when they run), again if its layers change; ``NotCovered`` names
    the first module or attribute it has no exact form of."""
    if type(layers) is not nn.Sequential:
        raise NotCovered(f"{name} ({type(layers).__name__}, not an nn.Sequential)")
    modules = tuple(layers)
    cached = _PLANS.get(layers)
    same = cached is not None and len(cached[0]) == len(modules)
    if same and all(a is b for a, b in zip(cached[0], modules, strict=True)):
        return cached[1]
    _check_hooks(layers, name)
    plan = _build_plan(list(modules), name)
    _PLANS[layers] = (modules, plan)
    return plan


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _build_plan(layers: list[nn.Module], name: str) -> tuple:
    for i, layer in enumerate(layers):
        _check_module(layer, f"{name}.{i}")
    ops, i = [], 0

    def at(j: int, *kinds: type) -> bool:
        return j < len(layers) and isinstance(layers[j], kinds)

    while i < len(layers):
        layer, relu = layers[i], at(i + 1, nn.ReLU)
        if at(i, nn.Conv2d, nn.ConvTranspose2d):
            ops.append(_Conv(layer, relu))
            i += 2 if relu else 1
        elif at(i, nn.Flatten) and at(i + 1, nn.Linear):
            ops.append(_FlattenDense(layers[i + 1]))
            i += 2
        elif at(i, nn.Linear) and at(i + 1 + relu, nn.Unflatten):
            unflatten = layers[i + 1 + relu]
            if len(unflatten.unflattened_size) != 3:
                size = tuple(unflatten.unflattened_size)
                raise NotCovered(f"{name}.{i + 1 + relu} (Unflatten to {size}, not to (C, H, W))")
            ops.append(_DenseUnflatten(layer, relu, tuple(unflatten.unflattened_size)))
            i += 3 if relu else 2
        else:
            raise NotCovered(
                f"{name}.{i} ({type(layer).__name__}) in that place (it covers convs and "
                "transposed convs, each with an optional ReLU, Flatten + Linear, and Linear "
                "with an optional ReLU + Unflatten)"
            )
    return tuple(ops)


def _run(layers: nn.Sequential, h: Tensor) -> Tensor:
    """``layers`` (a ConvVAE's Sequential) on NHWC ``h``, as one ``SequentialFunction`` node."""
    plan = _plan(layers)
    return SequentialFunction.apply(h, plan, *[t for op in plan for t in op.params()])


def _conv_transpose_depthwise(x: Tensor, w: Tensor, b: Tensor, p: int) -> Tensor:
    """A stride-1 transposed conv to one channel on NHWC ``x``: each input channel correlated
    with its own flipped kernel (a depthwise conv, which oneDNN runs at about memory speed),
    then summed over the channels."""
    k = w.shape[-1]
    kernels = w.flip(2, 3).contiguous(memory_format=torch.channels_last)  # (C_in, 1, k, k)
    per_channel = F.conv2d(x.permute(0, 3, 1, 2), kernels, None, 1, k - 1 - p, 1, len(w))
    return per_channel.permute(0, 2, 3, 1).sum(3, keepdim=True) + b


def _reparam_kl(h: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, tuple]:
    """z = mean + exp(logvar / 2) * eps and the single-sample KL term log q(z|x) - log p(z),
    which is (z² - eps² - logvar) / 2 summed per image (log 2π cancels; (z - mean)² / σ² is
    eps²), from the encoder's output (mean, raw logvar) clamped as ``ConvVAE.encode`` clamps;
    and what its backward needs."""
    mean, raw = h.chunk(2, dim=1)
    logvar = raw.clamp(*LOGVAR_RANGE)
    std = torch.exp(0.5 * logvar)
    z = torch.addcmul(mean, std, eps)
    kl_term = 0.5 * (z.square() - eps.square() - logvar).sum(1)
    return z, kl_term, (raw, std, eps, z)


def _reparam_kl_backward(saved: tuple, gz: Tensor, gkl: float) -> Tensor:
    """The gradient of the encoder's output from z's gradient and each KL term's weight."""
    raw, std, eps, z = saved
    lo, hi = LOGVAR_RANGE
    gmean = torch.add(gz, z, alpha=gkl)  # through z, and the KL's own z² / 2
    glogvar = (0.5 * gmean * std * eps).sub_(0.5 * gkl)
    glogvar.mul_((raw >= lo) & (raw <= hi))  # clamp passes gradients inside its range
    return torch.cat((gmean, glogvar), 1)


def _bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x | logits) summed per image, softplus(l) - x l, in a few in-place passes as
    relu(l) - x l + log(1 + exp(-|l|)); its gradient is sigmoid(l) - x. ``log1p`` has no
    vectorised CPU kernel here (docs/speed.md); the two differ by under 6e-8 a pixel."""
    nll = logits.abs().neg_().exp_().add_(1).log_()
    return nll.add_(logits.clamp_min(0)).sub_(x * logits).sum(1)


def is_mc_bernoulli(vae: Any) -> bool:
    """Whether ``vae``'s recipe is the study's (MC KL, Bernoulli): ``elbo_backward`` writes its
    backward out; other recipes take ``nhwc_elbo`` under autograd."""
    return (vae.kl, vae.likelihood) == ("mc", "bernoulli")


@torch.no_grad()
def elbo_backward(vae: Any, x: Tensor, beta: float = 1.0) -> tuple[Tensor, Tensor]:
    """The study recipe's per-image (recon, KL term) of ``vae.elbo(x)``, with the gradient of
    the training loss mean(recon + β KL) put in each parameter's ``.grad``: forward and backward
    written out, no autograd graph."""
    n = len(x)
    pixels, shape = _pixels(x)
    encoder, decoder = _plan(vae.encoder), _plan(vae.decoder)
    kept_encoder: list[Tensor] = []
    kept_decoder: list[Tensor] = []
    h = _forward(encoder, pixels.view(shape), kept_encoder)
    eps = vae.noise(h[:, : vae.latent_dim])  # the draw reparameterize makes (tests fix it)
    z, kl_term, saved = _reparam_kl(h, eps)
    logits = _forward(decoder, z, kept_decoder).reshape(n, -1)
    recon = _bernoulli_nll(logits, pixels)
    # Backward: each image's recon weighs 1/n in the mean, its KL term β/n.
    grad_logits = torch.sigmoid(logits).sub_(pixels).mul_(1.0 / n)
    gz, decoder_grads = _backward(decoder, grad_logits.view(shape), kept_decoder, True)
    grad_h = _reparam_kl_backward(saved, gz, beta / n)
    _, encoder_grads = _backward(encoder, grad_h, kept_encoder, False)
    params = [p for op in (*encoder, *decoder) for p in op.params()]
    for p, grad in zip(params, [*encoder_grads, *decoder_grads], strict=True):
        p.grad = grad
    return recon, kl_term


def nhwc_elbo(vae: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    """``vae.elbo(x)``'s per-image (recon, KL term) through the NHWC layers, for autograd:
    what the fast path runs for the recipes ``elbo_backward`` does not write out."""
    n = len(x)
    pixels, shape = _pixels(x)
    h = _run(vae.encoder, pixels.view(shape))
    mean, logvar = h.chunk(2, dim=1)
    logvar = logvar.clamp(*LOGVAR_RANGE)
    z = vae.reparameterize(mean, logvar)  # draws through ConvVAE.noise
    logits = _run(vae.decoder, z).reshape(n, -1)
    return elbo_terms(pixels, logits, z, mean, logvar, vae.kl, vae.likelihood)


def _pixels(x: Tensor) -> tuple[Tensor, torch.Size]:
    """An NCHW batch as (n, H·W·C) rows in NHWC order, and its NHWC shape."""
    x_nhwc = x.permute(0, 2, 3, 1)
    pixels = x_nhwc if x_nhwc.is_contiguous() else x_nhwc.contiguous()
    return pixels.reshape(len(x), -1), x_nhwc.shape


def first_difference(
    losses: tuple[Tensor, Tensor],
    grads: tuple[list[Tensor | None], list[Tensor | None]],
    names: list[str],
) -> str | None:
    """Where the fast step (first of each pair) differs from the reference beyond float
    summation order: the parameter whose gradient differs most and by how much, and the loss
    where it differs too; None where they agree."""
    worst, where = 0.0, ""
    for name, fast, ref in zip(names, *grads, strict=True):
        if (fast is None) != (ref is None):
            return f"{name} gets a gradient only {'from the reference' if fast is None else 'here'}"
        if fast is None:
            continue
        diff = float((fast - ref).norm()) / max(float(ref.norm()), 1e-30)
        if not math.isfinite(diff):
            return f"{name}'s gradient is not finite on one side"
        if diff > worst:
            worst, where = diff, name
    fast_loss, ref_loss = (float(t) for t in losses)
    loss_differs = not math.isclose(fast_loss, ref_loss, rel_tol=LOSS_RTOL)
    loss = f"the loss {fast_loss:.6g} against {ref_loss:.6g}"
    if worst > GRAD_RTOL:
        return f"{where}'s gradient differs by {worst:.3g} of its norm" + (
            f"; {loss}" if loss_differs else ""
        )
    return f"{loss}, every gradient within {GRAD_RTOL:g} of its norm" if loss_differs else None
