"""What each picture shows, as functions of (VAE, data): the callbacks and eval both call these.

Each function decodes what it needs under ``torch.inference_mode`` with the VAE in eval mode
(restored afterwards, also on an exception) and returns a PIL image or an (H, W, 3) array from
``drawing.py``. Latent dimensions are numbered z1, z2, ... everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vae_latent.latent import drawing
from vae_latent.latent.codes import Codes, evaluating

# The choices of the manifold's grid and of the traversal's ranges (callbacks' settings).
ManifoldGrid = Literal["prior", "posterior", "both"]
TraversalRanges = Literal["prior", "posterior"]
MANIFOLD_GRIDS: tuple[str, ...] = get_args(ManifoldGrid)
TRAVERSAL_RANGES: tuple[str, ...] = get_args(TraversalRanges)


@dataclass(frozen=True)
class LatentView:
    """What the latent pictures are drawn from: a VAE, its test split's codes, the title."""

    model: Any  # a ConvVAE
    codes: Codes
    test: Any  # the test split (InMemorySplit): images for the projector's thumbnails
    classes: list[str]
    title: str

    def decode(self, z: Tensor) -> Tensor:
        return self.model.mean_image(z.to(self.model.device)).float().cpu()


def fixed_inputs(test: Any, n_images: int, latent_dim: int, seed: int) -> tuple[Tensor, Tensor]:
    """The same test images and prior draws every epoch and every run with this seed."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(test), generator=gen)[:n_images]
    eps = torch.randn(n_images, latent_dim, generator=gen)
    return test.take(index)[0], eps


def epoch_grid(
    model: Any, test: Any, n_images: int, seed: int, title: str, scale: int = 3
) -> Image.Image:
    """A fixed test batch, its reconstructions (decoded posterior means) and fixed prior samples."""
    x, eps = fixed_inputs(test, n_images, model.latent_dim, seed)
    with evaluating(model):
        mean, _ = model.encode(x.to(model.device))
        recon = model.mean_image(mean)
        samples = model.sample(eps)
    named = [
        ("test images", x),
        ("reconstructions (posterior mean)", recon),
        ("prior samples", samples),
    ]
    return drawing.panels([(name, drawing.grid(images)) for name, images in named], title, scale)


def manifold(view: LatentView, size: int = 20, grid: str = "both") -> np.ndarray | None:
    """Latent 2 only: the decoded 2-D manifold, over the study's grid and/or the data's own.

    ``prior``: the study's grid of N(0, 1) quantiles 5%..95%. ``posterior``: the same quantile
    levels of the test split's posterior means per axis (where the data lives). ``both``: side
    by side. The test means are drawn as marginal ticks on each.
    """
    means = view.codes.means
    if means.shape[1] != 2:
        return None
    q = drawing.manifold_quantiles(size)
    axes = {
        "prior": (q, q, "the study's grid: N(0, 1) quantiles 5%–95%"),
        "posterior": (
            drawing.posterior_quantiles(means[:, 0], size),
            drawing.posterior_quantiles(means[:, 1], size),
            "where the data lives: quantiles 5%–95% of the test means",
        ),
    }
    panels = []
    with evaluating(view.model):
        for name in ["prior", "posterior"] if grid == "both" else [grid]:
            z1, z2, subtitle = axes[name]
            images = view.decode(drawing.grid_z(z1, z2))
            panels.append(
                {"images": images, "z1": z1, "z2": z2, "subtitle": subtitle, "means": means}
            )
    title = f"{view.title}\ndecoded latent manifold"
    return drawing.rendered(drawing.manifold_figure(panels, title))


def traversal_codes(
    means: Tensor,
    kl: Tensor,
    max_dims: int,
    steps: int,
    span: float,
    reference_index: int = 0,
    ranges: str = "prior",
) -> tuple[Tensor, list[int], Tensor, list[str]]:
    """Codes (rows * steps, D) to decode: the reference code with one dimension swept per row.

    The rows are the ``max_dims`` dimensions of highest KL; also returns their (rows, steps)
    values and the column labels.
    """
    dims = kl.argsort(descending=True)[:max_dims].tolist()
    values, labels = drawing.traversal_values(means, dims, steps, span, reference_index, ranges)
    z = means[reference_index].repeat(len(dims), steps, 1)
    for row, d in enumerate(dims):
        z[row, :, d] = values[row]
    return z.flatten(0, 1), dims, values, labels


def traversal(
    view: LatentView,
    max_dims: int = 10,
    steps: int = 11,
    span: float = 3.0,
    reference_index: int = 0,
    ranges: str = "prior",
) -> tuple[np.ndarray, np.ndarray]:
    """The most informative dimensions swept one at a time around a test image's code.

    Returns the picture (rows = dimensions) and its animation (all dimensions side by side,
    one frame per step of the same sweep, there and back).
    """
    kl = view.codes.kl_per_dim()
    z, dims, values, labels = traversal_codes(
        view.codes.means, kl, max_dims, steps, span, reference_index, ranges
    )
    with evaluating(view.model):
        images = view.decode(z)
    shown = f"{len(dims)} of {len(kl)} dims" if len(dims) < len(kl) else f"all {len(kl)} dims"
    title = f"{view.title}\nlatent traversals ({shown}, test image #{reference_index})"
    fig = drawing.traversal_figure(images, dims, kl[dims].tolist(), values, labels, title, ranges)
    gif_title = view.title.replace(" — ", "  |  ")  # PIL's built-in font has no em dash
    where = "quantile" if ranges == "posterior" else "offset"
    frames = drawing.traversal_frames(images, dims, [f"{where} {x}" for x in labels], gif_title)
    return drawing.rendered(fig), frames


def scatter(view: LatentView) -> np.ndarray:
    """Test-split posterior means by class: the 2-D latent itself, or its top two PCs."""
    means, labels = view.codes.means, view.codes.labels
    if means.shape[1] == 2:
        points, axes, how = means, ("z1 (posterior mean)", "z2 (posterior mean)"), "latent means"
    elif means.shape[1] == 1:  # one row per class, jittered so that the points do not overlap
        jitter = torch.rand(len(labels), generator=torch.Generator().manual_seed(0)) - 0.5
        points = torch.stack((means[:, 0], labels.float() + 0.4 * jitter), dim=1)
        axes, how = ("z1 (posterior mean)", "class (index, jittered)"), "1-D latent means"
    else:
        points, ratio = drawing.pca_2d(means)
        axes = (f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%} of variance)")
        how = f"PCA of the {means.shape[1]}-D latent means"
    title = f"{view.title}\n{how}, test split (n={len(labels):,})"
    return drawing.rendered(drawing.scatter_figure(points, labels, view.classes, axes, title))


def interpolation(
    view: LatentView, pairs: list[list[int]] | None = None, steps: int = 10
) -> np.ndarray:
    """Decoded straight lines between class centroids (of test-split means) in latent space."""
    means, labels, classes = view.codes.means, view.codes.labels, view.classes
    present = [k for k in range(len(classes)) if (labels == k).any()]
    centroids = {k: means[labels == k].mean(0) for k in present}
    # Default: a chain through all classes, 0 -> 1 -> ... -> 9.
    pairs = pairs or [[a, b] for a, b in zip(present, present[1:], strict=False)]
    t = torch.linspace(0, 1, steps)[:, None]
    z = torch.cat([(1 - t) * centroids[a] + t * centroids[b] for a, b in pairs])
    with evaluating(view.model):
        decoded = view.decode(z)
    names = [(classes[a], classes[b]) for a, b in pairs]
    title = f"{view.title}\ninterpolation between class centroids"
    return drawing.rendered(drawing.interpolation_figure(decoded, names, steps, title))


def projector(writer: Any, view: LatentView, max_points: int, step: int) -> None:
    """Test-split latent means in TensorBoard's Embedding Projector, with thumbnails."""
    n = min(max_points, len(view.codes))
    images = view.test.take(torch.arange(n))[0].cpu()
    names = [view.classes[k] for k in view.codes.labels[:n].tolist()]
    means = view.codes.means[:n]
    # The projector's 3-D PCA view draws nothing for 1- or 2-D data (NaN variance): zero columns
    # make it 3-D without moving a point (z1, z2 stay its first components).
    if means.shape[1] < 3:
        means = torch.cat([means, means.new_zeros(n, 3 - means.shape[1])], dim=1)
    writer.add_embedding(
        means,
        metadata=names,
        label_img=images,
        global_step=step,
        tag="test_latent_means",
    )


def samples(model: Any, n: int, seed: int, title: str) -> Image.Image:
    """``n`` prior samples drawn with ``seed``: the same pictures for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    with evaluating(model):
        images = model.sample(n, generator=generator)
    return drawing.panels([("z ~ N(0, I)", drawing.grid(images))], title)
