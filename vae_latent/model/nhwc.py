"""The ELBO of a ``ConvVAE`` through NHWC layers: the same numbers, fewer passes on the CPU.

``ConvVAE.elbo`` is the readable reference. The fused training step on the CPU runs this
instead, with the model's own parameters (same state_dict): activations stay plain contiguous
(B, H, W, C) tensors, each conv's ReLU is applied in place inside the conv's autograd Function
(no separate pass, and its backward on contiguous NHWC tensors), and the stride-1 transposed
conv to one output channel (the logits) runs forward as a depthwise conv and a sum over
channels, which oneDNN's deconvolution does ~4x slower for a single channel. For the study's
recipe the ELBO's tail is two autograd Functions with their gradients written out
(``ReparamKL``, ``BernoulliNLL``) instead of two dozen tiny autograd nodes. Gradients equal the
reference's to float summation order (tests/model/test_fused_step.py,
tests/model/test_nhwc.py); measured speed: docs/speed.md.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_latent.model.elbo import elbo_terms
from vae_latent.model.vae import LOGVAR_RANGE

_threshold_backward_ = torch.ops.aten.threshold_backward.grad_input  # the out= form
_convolution_backward = torch.ops.aten.convolution_backward


class ConvReLU(torch.autograd.Function):
    """relu?(conv2d or conv_transpose2d) on NHWC tensors through aten (oneDNN on the CPU)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, w: Tensor, b: Tensor, layer: tuple, relu: bool, depthwise: bool
    ) -> Tensor:
        transposed, s, p, op = layer
        if depthwise:  # the one-channel transposed conv (see the module's doc)
            y = _conv_transpose_depthwise(x, w, b, p)
        else:
            xc = x.permute(0, 3, 1, 2)  # a channels-last NCHW view: no copy
            conv = (
                F.conv_transpose2d(xc, w, b, s, p, op) if transposed else F.conv2d(xc, w, b, s, p)
            )
            y = conv.permute(0, 2, 3, 1)
            y = y if y.is_contiguous() else y.contiguous()
        if relu:
            y.relu_()
        ctx.save_for_backward(x, w, y)
        ctx.layer, ctx.relu = layer, relu
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, w, y = ctx.saved_tensors
        transposed, s, p, op = ctx.layer
        if ctx.relu:  # in place: each layer's output feeds one consumer, whose backward made
            # this gradient for it alone (no second reader), and it is hot in cache
            grad = _threshold_backward_(grad, y, 0, grad_input=grad)
        if transposed and s > 1:  # as TensorFlow runs it: two convolutions (docs/speed.md)
            return (*_transposed_backward(ctx, x, w, grad), None, None, None)
        gx, gw, gb = _convolution_backward(
            grad.permute(0, 3, 1, 2),
            x.permute(0, 3, 1, 2),
            w,
            [w.shape[1] if transposed else w.shape[0]],
            [s, s],
            [p, p],
            [1, 1],
            transposed,
            [op, op],
            1,
            [ctx.needs_input_grad[0], True, True],
        )
        gx = None if gx is None else gx.permute(0, 2, 3, 1)
        return gx, gw, gb, None, None, None


def _transposed_backward(ctx: Any, x: Tensor, w: Tensor, grad: Tensor) -> tuple:
    """A strided transposed conv's gradients as ordinary convolutions: the input's gradient is
    the conv of the output's gradient with the same weights, the weights' gradient that conv's
    weight gradient with input and output swapped. oneDNN runs these faster than its
    deconvolution backward (measured here: 2.35 vs 2.70 ms for the 64->32 layer)."""
    _, s, p, _ = ctx.layer
    g = grad.permute(0, 3, 1, 2)  # channels-last NCHW views: no copies
    xc = x.permute(0, 3, 1, 2)
    gx = F.conv2d(g, w, None, s, p).permute(0, 2, 3, 1) if ctx.needs_input_grad[0] else None
    _, gw, _ = _convolution_backward(
        xc, g, w, [w.shape[0]], [s, s], [p, p], [1, 1], False, [0, 0], 1, [False, True, False]
    )
    return gx, gw, grad.sum((0, 1, 2))


def _conv_transpose_depthwise(x: Tensor, w: Tensor, b: Tensor, p: int) -> Tensor:
    """A stride-1 transposed conv to one channel on NHWC ``x``: each input channel correlated
    with its own flipped kernel (a depthwise conv, which oneDNN runs at about memory speed),
    then summed over the channels."""
    k = w.shape[-1]
    kernels = w.flip(2, 3).contiguous(memory_format=torch.channels_last)  # (C_in, 1, k, k)
    per_channel = F.conv2d(x.permute(0, 3, 1, 2), kernels, None, 1, k - 1 - p, 1, len(w))
    return per_channel.permute(0, 2, 3, 1).sum(3, keepdim=True) + b


def _conv(h: Tensor, layer: nn.Module, relu: bool) -> Tensor:
    transposed = isinstance(layer, nn.ConvTranspose2d)
    op = layer.output_padding[0] if transposed else 0
    geometry = (transposed, layer.stride[0], layer.padding[0], op)
    # the logits layer: stride 1, one output channel (as an ordinary conv, padding k - 1 - p)
    depthwise = transposed and layer.out_channels == 1 and layer.stride[0] == 1 and op == 0
    depthwise = depthwise and layer.padding[0] < layer.kernel_size[0]
    return ConvReLU.apply(h, layer.weight, layer.bias, geometry, relu, depthwise)


def _run(layers: list[nn.Module], h: Tensor) -> Tensor:
    """``layers`` (a ConvVAE's Sequential) on NHWC ``h``. Flatten and Unflatten keep the NHWC
    order: the neighbouring dense layer's weights are permuted instead (nn.Flatten of an NCHW
    tensor orders its features C, H, W), and autograd takes the permutation back."""
    i = 0
    while i < len(layers):
        layer = layers[i]
        relu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            h, i = _conv(h, layer, relu), i + (2 if relu else 1)
        elif isinstance(layer, nn.Flatten):  # Flatten, Linear
            dense, (n, hh, ww, c) = layers[i + 1], h.shape
            weight = (
                dense.weight.view(-1, c, hh, ww).permute(0, 2, 3, 1).reshape(len(dense.weight), -1)
            )
            h, i = F.linear(h.reshape(n, -1), weight, dense.bias), i + 2
        elif isinstance(layer, nn.Linear):  # Linear, ReLU, Unflatten to (C, H, W)
            unflatten = layers[i + 2 if relu else i + 1]
            c, hh, ww = unflatten.unflattened_size
            weight = layer.weight.view(c, hh, ww, -1).permute(1, 2, 0, 3).reshape(c * hh * ww, -1)
            bias = layer.bias.view(c, hh, ww).permute(1, 2, 0).reshape(-1)
            h = F.linear(h, weight, bias)
            h = (h.relu_() if relu else h).view(len(h), hh, ww, c)
            i += 3 if relu else 2
        else:
            raise ValueError(f"no NHWC form of {type(layer).__name__}")
    return h


class ReparamKL(torch.autograd.Function):
    """z = mean + exp(logvar / 2) * eps and the single-sample KL term log q(z|x) - log p(z),
    which is (z² - eps² - logvar) / 2 summed per image (log 2π cancels; (z - mean)² / σ² is
    eps²), from the encoder's output (mean, raw logvar) clamped as ``ConvVAE.encode`` clamps."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, eps: Tensor, lo: float, hi: float) -> tuple[Tensor, Tensor]:
        mean, raw = h.chunk(2, dim=1)
        logvar = raw.clamp(lo, hi)
        std = torch.exp(0.5 * logvar)
        z = torch.addcmul(mean, std, eps)
        kl = 0.5 * (z.square() - eps.square() - logvar).sum(1)
        ctx.save_for_backward(raw, std, eps, z)
        ctx.range = lo, hi
        return z, kl

    @staticmethod
    def backward(ctx: Any, gz: Tensor, gkl: Tensor) -> tuple[Tensor, None, None, None]:
        raw, std, eps, z = ctx.saved_tensors
        lo, hi = ctx.range
        gmean = torch.addcmul(gz, gkl[:, None], z)  # through z, and the KL's own z² / 2
        glogvar = (0.5 * gmean * std * eps).sub_(0.5 * gkl[:, None])
        glogvar.mul_((raw >= lo) & (raw <= hi))  # clamp passes gradients inside its range
        return torch.cat((gmean, glogvar), 1), None, None, None


class BernoulliNLL(torch.autograd.Function):
    """-log p(x | logits) summed per image, softplus(l) - x l, in a few in-place passes as
    relu(l) - x l + log(1 + exp(-|l|)); gradient sigmoid(l) - x. log1p has no vectorised CPU
    kernel here (4x slower than log); the two differ by under 6e-8 a pixel."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(logits, x)
        nll = logits.abs().neg_().exp_().add_(1).log_()
        return nll.add_(logits.clamp_min(0)).sub_(x * logits).sum(1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        logits, x = ctx.saved_tensors
        return torch.sigmoid(logits).sub_(x).mul_(grad[:, None]), None


def nhwc_elbo(vae: Any, x: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``vae.elbo(x)``'s per-image (recon, KL term) through the NHWC layers (noise ``eps``)."""
    n = len(x)
    x_nhwc = x.permute(0, 2, 3, 1)
    pixels = (x_nhwc if x_nhwc.is_contiguous() else x_nhwc.contiguous()).reshape(n, -1)
    h = _run(list(vae.encoder), pixels.view(x_nhwc.shape))
    eps = vae.noise(h[:, : vae.latent_dim]) if eps is None else eps  # as reparameterize draws
    if (vae.kl, vae.likelihood) == ("mc", "bernoulli"):  # the study's recipe
        z, kl_term = ReparamKL.apply(h, eps, *LOGVAR_RANGE)
        return BernoulliNLL.apply(_run(list(vae.decoder), z).reshape(n, -1), pixels), kl_term
    mean, logvar = h.chunk(2, dim=1)
    logvar = logvar.clamp(*LOGVAR_RANGE)
    z = vae.reparameterize(mean, logvar, eps)
    logits = _run(list(vae.decoder), z).reshape(n, -1)
    return elbo_terms(pixels, logits, z, mean, logvar, vae.kl, vae.likelihood)
