"""The ELBO of a ``ConvVAE`` through NHWC layers: the same numbers, fewer passes on the CPU.

``ConvVAE.elbo`` is the readable reference. The fused training step on the CPU runs this
instead, with the model's own parameters (same state_dict). Activations stay plain contiguous
(B, H, W, C) tensors, and every layer's backward is written out (each op of ``_plan``): convs
through oneDNN, each ReLU in place (and its backward in place on the incoming gradient), the
strided transposed convs' backward as two ordinary convolutions, as TensorFlow runs it, and the
stride-1 transposed conv to one output channel (the logits) forward as a depthwise conv and a
sum over channels, which oneDNN's deconvolution does ~4x slower for a single channel. For the
study's recipe (MC KL, Bernoulli) ``elbo_backward`` runs the whole forward and backward without
autograd and puts the gradients in ``.grad``; other recipes go through ``nhwc_elbo``, where the
encoder and the decoder are one autograd node each (``Stack``). Gradients equal the reference's
to float summation order (tests/model/test_nhwc.py, tests/model/test_fused_step.py); measured
speed: docs/speed.md.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_latent.model.elbo import elbo_terms
from vae_latent.model.vae import LOGVAR_RANGE

_threshold_backward_ = torch.ops.aten.threshold_backward.grad_input  # the out= form
_convolution_backward = torch.ops.aten.convolution_backward


class Stack(torch.autograd.Function):
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
        if self.transposed and s > 1:
            # As TensorFlow runs it: the input's gradient is the conv of the output's gradient
            # with the same weights, the weights' gradient that conv's weight gradient with
            # input and output swapped; oneDNN runs these faster than its deconvolution
            # backward (2.35 vs 2.70 ms for the 64->32 layer, docs/speed.md).
            gx = F.conv2d(g, w, None, s, p).permute(0, 2, 3, 1) if need_input else None
            _, gw, _ = _convolution_backward(
                xc, g, w, [w.shape[0]], [s, s], [p, p], [1, 1], False, [0, 0], 1,
                [False, True, False],
            )  # fmt: skip
            return gx, [gw, grad.sum((0, 1, 2))]
        channels = w.shape[1] if self.transposed else w.shape[0]
        gx, gw, gb = _convolution_backward(
            g, xc, w, [channels], [s, s], [p, p], [1, 1], self.transposed, [self.op] * 2, 1,
            [need_input, True, True],
        )  # fmt: skip
        return (None if gx is None else gx.permute(0, 2, 3, 1)), [gw, gb]


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


def _plan(layers: nn.Sequential) -> tuple:
    """The NHWC operations of a ConvVAE Sequential: each conv with its ReLU, and Flatten /
    Unflatten folded into the dense layer beside them. Built once per Sequential (the ops read
    their layers' parameters when they run), again if its layers change."""
    modules = tuple(layers)
    cached = _PLANS.get(layers)
    same = cached is not None and len(cached[0]) == len(modules)
    if same and all(a is b for a, b in zip(cached[0], modules, strict=True)):
        return cached[1]
    plan = _build_plan(list(modules))
    _PLANS[layers] = (modules, plan)
    return plan


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _build_plan(layers: list[nn.Module]) -> tuple:
    ops, i = [], 0
    while i < len(layers):
        layer = layers[i]
        relu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            ops.append(_Conv(layer, relu))
            i += 2 if relu else 1
        elif isinstance(layer, nn.Flatten):  # Flatten, Linear
            ops.append(_FlattenDense(layers[i + 1]))
            i += 2
        elif isinstance(layer, nn.Linear):  # Linear, ReLU, Unflatten to (C, H, W)
            unflatten = layers[i + 2 if relu else i + 1]
            ops.append(_DenseUnflatten(layer, relu, tuple(unflatten.unflattened_size)))
            i += 3 if relu else 2
        else:
            raise ValueError(f"no NHWC form of {type(layer).__name__}")
    return tuple(ops)


def _run(layers: nn.Sequential, h: Tensor) -> Tensor:
    """``layers`` (a ConvVAE's Sequential) on NHWC ``h``, as one ``Stack`` node."""
    plan = _plan(layers)
    return Stack.apply(h, plan, *[t for op in plan for t in op.params()])


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
    relu(l) - x l + log(1 + exp(-|l|)); its gradient is sigmoid(l) - x. log1p has no vectorised
    CPU kernel here (4x slower than log); the two differ by under 6e-8 a pixel."""
    nll = logits.abs().neg_().exp_().add_(1).log_()
    return nll.add_(logits.clamp_min(0)).sub_(x * logits).sum(1)


def hand_written(vae: Any) -> bool:
    """Whether ``elbo_backward`` covers ``vae``'s recipe: the study's (MC KL, Bernoulli)."""
    return (vae.kl, vae.likelihood) == ("mc", "bernoulli")


@torch.no_grad()
def elbo_backward(vae: Any, x: Tensor, beta: float = 1.0) -> tuple[Tensor, Tensor]:
    """The study recipe's per-image (recon, KL term) of ``vae.elbo(x)``, with the gradient of
    the training loss mean(recon + β KL) put in each parameter's ``.grad``: forward and backward
    written out, no autograd graph (its recording and engine cost ~0.6 ms a step here)."""
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
    what the fused step runs for the recipes ``elbo_backward`` does not cover."""
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
