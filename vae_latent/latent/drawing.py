"""Pure drawing functions: tensors in, a PIL image, a matplotlib figure or frames out."""

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


def quantize(images: Tensor) -> Tensor:
    """Values in [0, 1] as uint8, rounded as torchvision's save_image does."""
    return images.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def to_uint8(images: Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) uint8 (``quantize``), gray as three equal channels."""
    array = quantize(images)
    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    return array.permute(1, 2, 0).cpu().numpy()


def grid(images: Tensor, nrow: int | None = None) -> Tensor:
    """Images (N, C, H, W) in [0, 1] tiled by make_grid on a white background."""
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    return make_grid(images.float().cpu(), nrow=nrow, padding=PAD, pad_value=1.0)


def panels(
    named_grids: list[tuple[str, Tensor]], title: str, scale: int = 3, gap: int = GAP
) -> Image.Image:
    """Grids side by side, each enlarged by an integer factor (pixel-exact), labelled, titled."""
    tiles = [to_uint8(g).repeat(scale, axis=0).repeat(scale, axis=1) for _, g in named_grids]
    title_font = ImageFont.load_default(size=18)
    height = max(t.shape[0] for t in tiles)
    width = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
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
        x += tile.shape[1] + gap
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


PROBS = (0.05, 0.95)  # the study's manifold: norm.ppf over 5%..95%


def manifold_quantiles(n: int) -> Tensor:
    """The study's axis values: standard-normal quantiles at 5%..95% (norm.ppf)."""
    return torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(*PROBS, n))


def posterior_quantiles(values: Tensor, n: int) -> Tensor:
    """The same quantile levels, of the data's own posterior means along one axis."""
    return torch.quantile(values.float(), torch.linspace(*PROBS, n))


def grid_z(z1: Tensor, z2: Tensor) -> Tensor:
    """The (z1, z2) grid over two axes' values, row by row, top row = largest z2."""
    rows, cols = torch.meshgrid(z2.flip(0), z1, indexing="ij")
    return torch.stack([cols.flatten(), rows.flatten()], dim=1)


def manifold_figure(panels: list[dict], title: str) -> Figure:
    """Decoded grids side by side, each with z1/z2 ticks and the test means as marginal rugs.

    A panel is a dict: ``images`` (n*n decoded), ``z1``/``z2`` (axis values), ``subtitle``
    and ``means`` (the test split's posterior means, drawn as ticks along both axes).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(7.6 * len(panels), 8.2), dpi=120)
    for ax, panel in zip(np.atleast_1d(axes), panels, strict=True):
        z1, z2, n = panel["z1"].tolist(), panel["z2"].tolist(), len(panel["z1"])
        size = panel["images"].shape[-1]
        _image_axes(ax, grid(panel["images"], nrow=n))
        every, centres = max(1, n // 8), _tile_centres(n, size)
        ax.set_xticks(centres[::every], [f"{v:.2f}" for v in z1[::every]])
        ax.set_yticks(centres[::every], [f"{v:.2f}" for v in z2[::-1][::every]])
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
        subtitle = panel["subtitle"]
        if panel.get("means") is not None:
            subtitle += "\n" + _rug(ax, panel["means"], z1, z2, centres)
        ax.set_title(subtitle, fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _rug(ax: plt.Axes, means: Tensor, z1: list[float], z2: list[float], centres: np.ndarray) -> str:
    """Ticks where the test means lie along each axis (those inside the grid's span)."""
    m = means[:2000].cpu().numpy()  # the first 2,000: a rug, not every point
    inside = (m[:, 0] >= z1[0]) & (m[:, 0] <= z1[-1]) & (m[:, 1] >= z2[0]) & (m[:, 1] <= z2[-1])
    x = np.interp(m[:, 0], z1, centres)
    y = np.interp(m[:, 1], z2, centres[::-1])  # rows run from the largest z2 down
    # Just outside the picture (one data unit is one pixel of the grid), not over the tiles;
    # the axes keep the picture's extent (the ticks are drawn unclipped beyond it).
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    bottom, left = ylim[0] + 7, xlim[0] - 7
    style = {"color": "tab:red", "alpha": 0.12, "markersize": 10, "clip_on": False}
    keep_x = (m[:, 0] >= z1[0]) & (m[:, 0] <= z1[-1])
    keep_y = (m[:, 1] >= z2[0]) & (m[:, 1] <= z2[-1])
    ax.plot(x[keep_x], np.full(keep_x.sum(), bottom), "|", **style)
    ax.plot(np.full(keep_y.sum(), left), y[keep_y], "_", **style)
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    ax.tick_params(pad=16)
    return f"red ticks: test means; {1 - inside.mean():.0%} of them fall outside this grid"


def traversal_values(
    means: Tensor, dims: list[int], steps: int, span: float, reference_index: int, ranges: str
) -> tuple[Tensor, list[str]]:
    """Each swept dimension's values (rows, steps), and the column labels.

    ``prior``: the reference code ± span (prior standard deviations); ``posterior``: the 1%..99%
    quantiles of that dimension's test means (where the data lives).
    """
    if ranges == "posterior":
        probs = torch.linspace(0.01, 0.99, steps)
        values = torch.stack([torch.quantile(means[:, d].float(), probs) for d in dims])
        return values, [f"{p:.0%}" for p in probs.tolist()]
    offsets = torch.linspace(-span, span, steps)
    values = torch.stack([means[reference_index, d] + offsets for d in dims])
    return values, [f"{round(o, 1) + 0.0:+.1f}" for o in offsets.tolist()]  # no "-0.0"


def traversal_figure(
    images: Tensor,
    dims: list[int],
    kl: list[float],
    values: Tensor,
    labels: list[str],
    title: str,
    ranges: str,
) -> Figure:
    """Rows: one latent dimension each (labelled with its KL and range); columns: the sweep."""
    rows, steps = len(dims), len(labels)
    size = images.shape[-1]
    fig, ax = plt.subplots(figsize=(2.6 + 0.8 * steps, 1.6 + 0.8 * rows), dpi=120)
    _image_axes(ax, grid(images, nrow=steps))
    ax.set_xticks(_tile_centres(steps, size), labels)
    ticks = [  # z1, z2, ...: numbered from 1 everywhere
        f"z{d + 1}  KL {k:.2f}  [{v[0]:.1f}, {v[-1]:.1f}]"
        for d, k, v in zip(dims, kl, values.tolist(), strict=True)
    ]
    ax.set_yticks(_tile_centres(rows, size), ticks)
    ax.set_xlabel(
        "quantile of the dimension's test means (where the data lives)"
        if ranges == "posterior"
        else "offset from the reference image's mean code (prior standard deviations)"
    )
    ax.set_ylabel("dimension (by KL), [swept range]")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def traversal_frames(
    images: Tensor, dims: list[int], labels: list[str], title: str, scale: int = 4
) -> np.ndarray:
    """The sweep animated: every dimension side by side, one frame per step, there and back."""
    steps = len(labels)
    by_step = images.view(len(dims), steps, *images.shape[1:])
    order = list(range(steps)) + list(range(steps - 2, 0, -1))  # ping-pong, loops smoothly
    frames = []
    for s in order:
        named = [(f"z{d + 1}", grid(by_step[r, s : s + 1], nrow=1)) for r, d in enumerate(dims)]
        frames.append(np.asarray(panels(named, f"{title}  |  {labels[s]}", scale, gap=8)))
    return same_size(frames)


def same_size(frames: list[np.ndarray]) -> np.ndarray:
    """RGB frames padded with white to the largest one's size: a GIF's frames share one size."""
    height, width = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)
    padded = np.full((len(frames), height, width, 3), 255, dtype=np.uint8)
    for i, f in enumerate(frames):
        padded[i, : f.shape[0], : f.shape[1]] = f[..., :3]
    return padded


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
