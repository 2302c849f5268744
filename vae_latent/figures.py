"""Pure drawing functions: tensors in, a PIL image or a matplotlib figure out."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only, never a window (headless servers, CI)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from torch import Tensor  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

# Layout of `panels` in pixels, public so tests can find each panel in the saved image.
MARGIN, TITLE_H, LABEL_H, GAP, PAD = 10, 30, 24, 20, 2


def to_uint8(images: Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) uint8, rounded as torchvision's save_image does."""
    array = images.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    return array.permute(1, 2, 0).cpu().numpy()


def grid(images: Tensor, nrow: int | None = None) -> Tensor:
    """Images (N, C, H, W) in [0, 1] tiled by make_grid on a white background."""
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    return make_grid(images.float().cpu(), nrow=nrow, padding=PAD, pad_value=1.0)


def panels(named_grids: list[tuple[str, Tensor]], title: str, scale: int = 3) -> Image.Image:
    """Grids side by side, each enlarged by an integer factor (pixel-exact), labelled, titled."""
    tiles = [to_uint8(g).repeat(scale, axis=0).repeat(scale, axis=1) for _, g in named_grids]
    title_font = ImageFont.load_default(size=18)
    height = max(t.shape[0] for t in tiles)
    width = sum(t.shape[1] for t in tiles) + GAP * (len(tiles) - 1)
    width = max(width, math.ceil(title_font.getlength(title)))  # a few small grids: keep it whole
    canvas = Image.new(
        "RGB", (width + 2 * MARGIN, height + TITLE_H + LABEL_H + 2 * MARGIN), "white"
    )
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, MARGIN), title, fill="black", font=title_font)
    label_font = ImageFont.load_default(size=15)
    x, top = MARGIN, MARGIN + TITLE_H + LABEL_H
    for (label, _), tile in zip(named_grids, tiles, strict=True):
        draw.text((x, MARGIN + TITLE_H), label, fill="black", font=label_font)
        canvas.paste(Image.fromarray(tile), (x, top))
        x += tile.shape[1] + GAP
    return canvas


def rendered(fig: Figure) -> np.ndarray:
    """Draw a figure once into an (H, W, 3) uint8 array, then close it."""
    fig.canvas.draw()
    array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return array


def _image_axes(ax: plt.Axes, big: Tensor) -> None:
    """Show a make_grid tensor in its own colours (gray stays gray), pixels square."""
    ax.imshow(to_uint8(big), interpolation="nearest")
    ax.set_aspect("equal")


def _tile_centres(count: int, size: int) -> np.ndarray:
    """Pixel centres of the tiles of one make_grid row or column."""
    return PAD + np.arange(count) * (size + PAD) + size / 2


def manifold_quantiles(n: int) -> Tensor:
    """The study's axis values: standard-normal quantiles at 5%..95% (norm.ppf)."""
    return torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))


def manifold_z(n: int) -> Tensor:
    """The study's grid of (z1, z2) over ``manifold_quantiles``, top row = largest z2."""
    q = manifold_quantiles(n)
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")  # top row = largest z2
    return torch.stack([z1.flatten(), z2.flatten()], dim=1)


def manifold_figure(images: Tensor, n: int, title: str) -> Figure:
    """Decoded images of ``manifold_z(n)`` as one picture with z1/z2 ticks."""
    q = manifold_quantiles(n).tolist()
    size = images.shape[-1]
    fig, ax = plt.subplots(figsize=(8, 8.4), dpi=120)
    _image_axes(ax, grid(images, nrow=n))
    every = max(1, n // 8)
    centres = _tile_centres(n, size)
    ax.set_xticks(centres[::every], [f"{v:.2f}" for v in q[::every]])
    ax.set_yticks(centres[::every], [f"{v:.2f}" for v in q[::-1][::every]])
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def traversal_figure(
    images: Tensor, dims: list[int], kl: list[float], offsets: list[float], title: str
) -> Figure:
    """Rows: one latent dimension each (labelled with its KL); columns: offsets from the mean."""
    rows, steps = len(dims), len(offsets)
    size = images.shape[-1]
    fig, ax = plt.subplots(figsize=(2.0 + 0.8 * steps, 1.6 + 0.8 * rows), dpi=120)
    _image_axes(ax, grid(images, nrow=steps))
    ax.set_xticks(
        _tile_centres(steps, size), [f"{round(o, 1) + 0.0:+.1f}" for o in offsets]
    )  # no "-0.0"
    ax.set_yticks(
        _tile_centres(rows, size),
        [f"z{d + 1}  KL {k:.2f}" for d, k in zip(dims, kl, strict=True)],  # z1, z2, ...
    )
    ax.set_xlabel("offset from the reference image's mean code (prior standard deviations)")
    ax.set_ylabel("dimension (by KL)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def interpolation_figure(
    images: Tensor, pairs: list[tuple[str, str]], steps: int, title: str
) -> Figure:
    """Rows: straight lines between two class centroids in latent space, decoded."""
    size = images.shape[-1]
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * steps, 1.0 + 0.75 * len(pairs)), dpi=120)
    _image_axes(ax, grid(images, nrow=steps))
    ts = np.linspace(0, 1, steps)
    ax.set_xticks(_tile_centres(steps, size), [f"{t:.2f}" for t in ts])
    ax.set_yticks(_tile_centres(len(pairs), size), [f"{a} → {b}" for a, b in pairs])
    ax.set_xlabel("t along the line from the first centroid to the second")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def scatter_figure(
    points: Tensor, labels: Tensor, classes: list[str], axes: tuple[str, str], title: str
) -> Figure:
    """Latent means in 2-D, one colour per class, class names in the legend."""
    fig, ax = plt.subplots(figsize=(8.5, 7), dpi=120)
    cmap = plt.get_cmap("tab10")
    points, labels = points.cpu().numpy(), labels.cpu().numpy()
    for k, name in enumerate(classes):
        sel = labels == k
        ax.scatter(
            points[sel, 0],
            points[sel, 1],
            s=3,
            alpha=0.6,
            color=cmap(k % 10),
            label=name,
            rasterized=True,
        )
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    ax.legend(
        title="class", markerscale=4, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False
    )
    fig.tight_layout()
    return fig


def pca_2d(x: Tensor) -> tuple[Tensor, list[float]]:
    """Projection on the top two principal components, and their explained-variance ratios."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(x.cpu().numpy())
    return torch.from_numpy(pca.transform(x.cpu().numpy())), pca.explained_variance_ratio_.tolist()
