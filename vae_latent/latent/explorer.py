"""The latent-space explorer: one self-contained HTML page per run, and one for a sweep.

A run page shows the test split's posterior means on a plane of the latent space (pan, zoom,
hover, click) and, beside it, the decoded image under the cursor, taken from a dense grid of
decodes made here (the nearest grid point). A sweep page decodes one latent coordinate with
every selected run of one latent size, side by side. Everything the page needs (JSON, PNG sprite
sheets as base64, CSS, JS) is inline: it works from file:// with no network.

The data flow: ``run_data(model, ...)`` decodes once and returns a JSON-able dict (the page's
data, see DATA LAYOUT below); ``explorer_page.run_page(data)`` renders it into ``explorer.html``,
the data in a ``<script type="application/json">`` element; ``read_run`` reads that element back
(JSON, never code), so ``sweep_page([read_run(p) for p in pages])`` builds a sweep from the
pages the runs wrote, without the models (each page already holds the prior-range grid the sweep
decodes from). The pages' CSS and vanilla JS are the files in ``explorer_assets/``.

The page exposes ``window.explorer`` for tests and the curious (browser console). Run page:
``ready``; ``planes()``, ``plane()``, ``setPlane(id)``; ``setGridMode("auto" | "posterior" |
"prior")``; ``setCursor(x, y)`` moves the cursor to plane coordinates and returns the tile shown
``{plane, grid, ix, iy, index, x, y, clamped}``; ``tile()``; ``tileCanvas``, ``tileScale``;
``pointCount()``; ``clickPoint(i)``, ``selectedPoint()``, ``pointClientXY(i)``;
``pointImageCanvas``, ``pointReconCanvas``, ``thumbScale``; ``resetView()``. Sweep page:
``ready``, ``latentSizes()``, ``setLatent(d)``, ``selected()``, ``setSelected(ids)``,
``setCursor(x, y)`` (returns ``tiles()``), ``tiles()``.

DATA LAYOUT (``run_data``'s dict; schema ``SCHEMA``)::

    schema, title, tier ("mnist", ...), tier_name ("MNIST", ...), latent_dim D, classes [names]
    image: {channels C, height H, width W}, tile_scale (integer upscaling of the cursor's tile)
    numbers: [{key, label, value}]            # as passed in, in order
    kl_per_dim: [D floats]                    # mean over the test split of KL(q(z_d|x) || N(0,1))
    reference: {code: [D], note} | null       # D > 2: where the off-plane dimensions are held
    points: {count n, total N, thumbnails t, index <int32 n>, labels <int32 n>,
             means <float32 n x D>, images <sprite t>, recons <sprite t>}
             # images of the first t points: test images and decoded posterior means
    planes: [{id, name, axes [x label, y label], axis_names, dims, origin [D], u [D], v [D],
              y_kind ("latent" | "class"), note, explained (PCA only),
              grids: {posterior: GRID, prior: GRID}}]
    default_plane, linked: {plane, grid}     # what a sweep page decodes from
    build: {decodes, seconds, batch_size}

    <dtype n ...> = {dtype, shape, b64}: a little-endian array, base64 (compact and exact)
    GRID = {kind, note, x [nx floats], y [ny floats], sprite <sprite nx*ny>}
           tile k = iy * nx + ix decodes z = origin + x[ix] * u + y[iy] * v (float32)
    <sprite n> = {png (base64 PNG), count n, columns, height, width, channels}
           image k sits at column k % columns, row k // columns; uint8 = round(value * 255)

A point's plane coordinates are not stored: the page projects ``means`` itself,
(mean - origin) . u and (mean - origin) . v, which is exact for the axis-aligned planes.
"""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vae_latent.data.datasets import tier_names
from vae_latent.latent.codes import evaluating
from vae_latent.latent.drawing import quantize
from vae_latent.model.elbo import kl_to_prior

SCHEMA = "vae_latent.explorer/1"


# How the page names the usual numbers; any other key is shown with "_" as a space.
NUMBER_LABELS = {
    "test_elbo": "test ELBO",
    "test_recon": "test recon. NLL",
    "test_kl": "test KL",
    "iw_nll": "IW NLL",
    "bits_per_dim": "bits/dim",
    "active_units": "active units",
    "linear_probe_acc": "linear-probe acc.",
    "knn_acc": "k-NN acc.",
    "silhouette": "silhouette",
}

# Default grid points per axis: a page's size is mostly its tiles (2 grids per plane), so a
# latent with two planes (D > 2) gets a coarser grid. MNIST: about 410 bytes of base64 per tile.
GRID_ONE_PLANE, GRID_TWO_PLANES = 40, 32
# Images with more values than MNIST's 28 x 28 x 1 get sparser defaults (see ``defaults``).
BASE_VALUES = 28 * 28


def defaults(values: int, planes: int, max_points: int) -> tuple[int, int]:
    """Default (grid, thumbnails) for images of ``values`` = C * H * W numbers.

    Up to 784 values (the MNIST family): 40 x 40 grids (32 x 32 with two planes) and an image
    for every point. Larger images: the grid shrinks by sqrt(784 / values) per axis (the same
    pixels in all), and thumbnails by (784 / values)^2, since natural images also compress far
    worse than binarized digits: 32 x 32 x 3 gets 20 (16) and 130 of 2,000 points.
    """
    scale = min(1.0, BASE_VALUES / values)
    base = GRID_ONE_PLANE if planes == 1 else GRID_TWO_PLANES
    return max(2, round(base * math.sqrt(scale))), round(max_points * scale * scale)


# A 1-D latent gets one grid axis: this many points along z1 per grid (cheap: one row).
GRID_1D = 256


# --- images -------------------------------------------------------------------------------


def to_uint8(images: Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W, C) uint8, rounded as torchvision's ``save_image``."""
    return quantize(images.detach().float().cpu()).permute(0, 2, 3, 1).contiguous().numpy()


def sprite(images: np.ndarray, columns: int | None = None) -> dict[str, Any]:
    """Pack (N, H, W, C) uint8 images into one lossless PNG sheet, row-major, base64.

    One PNG per sheet rather than per image: the page loads one image, and zlib sees the
    images' shared structure. The sheet stays under 4096 px a side where it can (Safari's and
    older browsers' comfortable canvas and image sizes).
    """
    n, h, w, c = images.shape
    if columns is None:
        columns = max(1, min(n, math.ceil(math.sqrt(n * h / w)), 4096 // w))
    rows = max(1, -(-n // columns))
    sheet = np.zeros((rows * h, columns * w, c), np.uint8)
    for k in range(n):
        r, col = divmod(k, columns)
        sheet[r * h : (r + 1) * h, col * w : (col + 1) * w] = images[k]
    mode = "L" if c == 1 else "RGB"
    picture = Image.fromarray(sheet[..., 0] if c == 1 else sheet, mode)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")  # zlib level 6, not optimize=True (docs/speed.md)
    return {
        "png": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "count": n,
        "columns": columns,
        "height": h,
        "width": w,
        "channels": c,
    }


def sprite_images(spec: Mapping[str, Any]) -> np.ndarray:
    """The (N, H, W, C) uint8 images of a sprite sheet made by ``sprite`` (tests use this)."""
    picture = Image.open(io.BytesIO(base64.b64decode(spec["png"])))
    sheet = np.asarray(picture)
    if sheet.ndim == 2:
        sheet = sheet[..., None]
    h, w, cols = spec["height"], spec["width"], spec["columns"]
    out = np.empty((spec["count"], h, w, spec["channels"]), np.uint8)
    for k in range(spec["count"]):
        r, col = divmod(k, cols)
        out[k] = sheet[r * h : (r + 1) * h, col * w : (col + 1) * w]
    return out


def packed(array: np.ndarray, dtype: str) -> dict[str, Any]:
    """A little-endian array as base64: a Float32Array/Int32Array on the page, exact values."""
    a = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": dtype, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}


def unpacked(spec: Mapping[str, Any]) -> np.ndarray:
    """The array that ``packed`` stored."""
    raw = base64.b64decode(spec["b64"])
    return np.frombuffer(raw, np.dtype(spec["dtype"]).newbyteorder("<")).reshape(spec["shape"])


# --- decoding -----------------------------------------------------------------------------


def decode(model: Any, z: Tensor, batch_size: int = 128) -> Tensor:
    """``model.mean_image`` on (N, D) codes in chunks, in eval mode without autograd; the
    model's mode is restored afterwards. Returns float32 on the CPU.

    Chunks start at 0 and are ``batch_size`` long: decoding the same codes with the same chunks
    gives the same bits (a batch of 1 can differ from a batch of 128 in the last float bit,
    which moves a handful of uint8 pixels by one level).
    """
    param = next(model.parameters())
    with evaluating(model):
        # max(.., 1): no codes still makes one (empty) call, so the result has the image shape
        parts = [
            model.mean_image(z[i : i + batch_size].to(param.device, param.dtype)).float().cpu()
            for i in range(0, max(len(z), 1), batch_size)
        ]
    return torch.cat(parts)


def kl_per_dim(means: Tensor, logvars: Tensor) -> Tensor:
    """Mean over images of the analytic KL(q(z_d|x) || N(0, 1)) per latent dimension (nats)."""
    return kl_to_prior(means.double(), logvars.double()).mean(0)


def grid_axis(lo: float, hi: float, n: int) -> list[float]:
    """n evenly spaced float32 values from lo to hi (as Python floats: exact in JSON)."""
    values = np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2])
    return [float(v) for v in values.astype(np.float32)]


def grid_codes(plane: Mapping[str, Any], xs: Sequence[float], ys: Sequence[float]) -> Tensor:
    """The (len(ys) * len(xs), D) codes of a plane's grid, row-major: k = iy * nx + ix."""
    o, u, v = (torch.tensor(plane[k], dtype=torch.float32) for k in ("origin", "u", "v"))
    x = torch.tensor(xs, dtype=torch.float32).repeat(len(ys))
    y = torch.tensor(ys, dtype=torch.float32).repeat_interleave(len(xs))
    return o + x[:, None] * u + y[:, None] * v


# --- planes -------------------------------------------------------------------------------


def _unit(d: int, i: int) -> list[float]:
    e = [0.0] * d
    e[i] = 1.0
    return e


def planes_for(means: Tensor, kl: Tensor) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The planes a run page offers, each as origin + x * u + y * v, and the reference code.

    D = 1: z1 against the class (the y axis is the class row, not a latent: one decode per x).
    D = 2: the latent plane itself.
    D > 2: the two dimensions of highest mean KL with the others at the reference code (the
    mean of the test means: the centre of where the data lives), and the PCA plane of the means
    (decoding PC coordinates (a, b) = mean + a * PC1 + b * PC2).
    """
    d = means.shape[1]
    if d == 1:
        plane = {
            "id": "z1",
            "name": "z1 by class",
            "axes": ["z1 (posterior mean)", "class"],
            "axis_names": ["z1", "class"],
            "dims": [0],
            "origin": [0.0],
            "u": [1.0],
            "v": [0.0],
            "y_kind": "class",
            "note": "The latent is 1-D: x is z1, y is the class row (points jittered within "
            "it). The decoded image depends on z1 only.",
        }
        return [plane], None
    if d == 2:
        plane = {
            "id": "latent",
            "name": "z1 × z2 plane",
            "axes": ["z1", "z2"],
            "axis_names": ["z1", "z2"],
            "dims": [0, 1],
            "origin": [0.0, 0.0],
            "u": [1.0, 0.0],
            "v": [0.0, 1.0],
            "y_kind": "latent",
            "note": "The 2-D latent space itself: each point is a test image's posterior mean.",
        }
        return [plane], None
    # Highest KL first; a stable sort keeps the lower index on ties.
    order = sorted(range(d), key=lambda i: -float(kl[i]))
    i, j = order[0], order[1]
    ref = means.double().mean(0).float()
    origin = ref.clone()
    origin[i] = origin[j] = 0.0  # x and y are then the absolute values of z_i and z_j
    reference = {
        "code": [float(x) for x in ref],
        "note": "the mean of the test split's posterior means",
    }
    kl_plane = {
        "id": "kl",
        "name": f"top-KL plane z{i + 1} × z{j + 1}",
        "axes": [
            f"z{i + 1} (KL {float(kl[i]):.2f} nats)",
            f"z{j + 1} (KL {float(kl[j]):.2f} nats)",
        ],
        "axis_names": [f"z{i + 1}", f"z{j + 1}"],
        "dims": [i, j],
        "origin": [float(x) for x in origin],
        "u": _unit(d, i),
        "v": _unit(d, j),
        "y_kind": "latent",
        "note": f"z{i + 1} and z{j + 1} have the highest average KL of the {d} dimensions; "
        f"decodes hold the other {d - 2} at the reference code (the mean of the test means). "
        "Points are the test means' (z"
        f"{i + 1}, z{j + 1}) coordinates; their other coordinates vary.",
    }
    centre = means.double().mean(0)
    _, s, vt = torch.linalg.svd(means.double() - centre, full_matrices=False)
    pcs = []
    for row in vt[:2]:  # sign fixed: the largest component positive (reproducible)
        pcs.append(row * torch.sign(row[row.abs().argmax()]))
    var = (s.square() / s.square().sum()).tolist()
    pca_plane = {
        "id": "pca",
        "name": "PCA plane PC1 × PC2",
        "axes": [f"PC1 ({var[0]:.0%} var)", f"PC2 ({var[1]:.0%} var)"],
        "axis_names": ["PC1", "PC2"],
        "dims": None,
        "origin": [float(x) for x in centre.float()],
        "u": [float(x) for x in pcs[0].float()],
        "v": [float(x) for x in pcs[1].float()],
        "y_kind": "latent",
        "explained": var[:2],
        "note": "The top two principal components of the test means; a point (a, b) decodes "
        "mean + a·PC1 + b·PC2 (the mean of the test means plus the PC coordinates mapped back).",
    }
    return [kl_plane, pca_plane], reference


def _coords(plane: Mapping[str, Any], means: Tensor) -> tuple[np.ndarray, np.ndarray]:
    o = torch.tensor(plane["origin"], dtype=torch.float64)
    u = torch.tensor(plane["u"], dtype=torch.float64)
    v = torch.tensor(plane["v"], dtype=torch.float64)
    centred = means.double() - o
    return (centred @ u).numpy(), (centred @ v).numpy()


def plane_grids(
    plane: dict[str, Any],
    means: Tensor,
    grid: int,
    prior_range: float,
    quantiles: tuple[float, float],
    pad: float,
) -> dict[str, dict[str, Any]]:
    """The plane's two grid specs (axes only; tiles come later): posterior and prior range."""
    x, y = _coords(plane, means)
    o = np.asarray(plane["origin"], np.float64)
    # The prior's centre z = 0 seen in plane coordinates: ±prior_range around it.
    cx = float(-o @ np.asarray(plane["u"], np.float64))
    cy = float(-o @ np.asarray(plane["v"], np.float64))
    q_lo, q_hi = quantiles

    def posterior_axis(values: np.ndarray, n: int) -> list[float]:
        lo, hi = np.quantile(values, [q_lo, q_hi]).tolist()
        span = hi - lo if hi > lo else 1.0
        return grid_axis(lo - pad * span, hi + pad * span, n)

    one_d = plane["y_kind"] == "class"
    n = min(GRID_1D, grid * grid) if one_d else grid
    where = f"the {q_lo:.1%}–{q_hi:.1%} quantiles of the test means per axis, padded {pad:.0%}"
    return {
        "posterior": {
            "kind": "posterior",
            "note": f"posterior range: {where}",
            "x": posterior_axis(x, n),
            "y": [0.0] if one_d else posterior_axis(y, n),
        },
        "prior": {
            "kind": "prior",
            "note": f"prior range: ±{prior_range:g} around the prior's centre (z = 0)",
            "x": grid_axis(cx - prior_range, cx + prior_range, n),
            "y": [0.0] if one_d else grid_axis(cy - prior_range, cy + prior_range, n),
        },
    }


# --- the run's page data --------------------------------------------------------------------


def run_data(
    model: Any,
    test_images: Tensor | Callable[[Tensor], Tensor],
    means: Tensor,
    logvars: Tensor,
    labels: Tensor,
    classes: Sequence[str],
    title: str,
    numbers: Mapping[str, float | int | str] | None = None,
    *,
    tier: str = "",
    tier_name: str | None = None,
    grid: int | None = None,
    prior_range: float = 3.0,
    quantiles: tuple[float, float] = (0.005, 0.995),
    pad: float = 0.05,
    max_points: int = 2000,
    thumbnails: int | None = None,
    seed: int = 0,
    batch_size: int = 128,  # small chunks stay in cache (docs/speed.md)
) -> dict[str, Any]:
    """Everything a run page shows, decoded from ``model`` (see DATA LAYOUT in the module doc).

    ``test_images`` (N, C, H, W) in [0, 1], or a function giving the images at an index tensor
    (only the shown ones are converted); ``means``/``logvars`` (N, D): the test split's
    posterior; ``labels`` (N,) int64; ``classes``: the class names. ``grid``: points per axis of
    each decode grid (2 grids per plane); ``max_points``: test points drawn (a seeded random
    subset when N is larger); ``thumbnails``: how many of them carry their test image and
    reconstruction (the first ones of the random order, so a random subset). ``grid`` and
    ``thumbnails`` default by image size and plane count (``defaults``): an MNIST page stays
    under 3 MB, a 32x32x3 one near 3 MB. ``numbers`` are shown as given.
    """
    start = time.perf_counter()
    means, logvars = means.detach().float().cpu(), logvars.detach().float().cpu()
    labels = labels.detach().cpu().long()
    n_total, d = means.shape
    images_at = test_images if callable(test_images) else test_images.__getitem__
    shape = images_at(torch.zeros(1, dtype=torch.long)).shape
    if len(shape) != 4 or logvars.shape != means.shape:
        raise ValueError(
            f"test images {tuple(shape)}, means {tuple(means.shape)} and logvars "
            f"{tuple(logvars.shape)} must be (N, C, H, W), (N, D) and (N, D)"
        )
    if labels.shape != (n_total,) or int(labels.min()) < 0 or int(labels.max()) >= len(classes):
        raise ValueError(
            f"labels must be (N,) = ({n_total},) class indices into {len(classes)} classes"
        )
    c, h, w = shape[1:]
    kl = kl_per_dim(means, logvars)
    planes, reference = planes_for(means, kl)
    auto_grid, auto_thumbnails = defaults(c * h * w, len(planes), max_points)
    grid = auto_grid if grid is None else grid
    thumbnails = auto_thumbnails if thumbnails is None else thumbnails

    # The drawn points: a seeded subset in random order (so that no class is always on top).
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n_total, generator=gen)[: min(max_points, n_total)]
    # Images cost ~100x a point's coordinates: a page can draw more points than it shows images
    # of (RGB pages especially). The first `shown` points of the random order have images.
    shown = max(0, min(thumbnails, len(chosen)))
    recons = decode(model, means[chosen[:shown]], batch_size)
    decodes = len(recons)

    for plane in planes:
        plane["grids"] = plane_grids(plane, means, grid, prior_range, quantiles, pad)
        for spec in plane["grids"].values():
            images = decode(model, grid_codes(plane, spec["x"], spec["y"]), batch_size)
            decodes += len(images)
            spec["sprite"] = sprite(to_uint8(images))

    name = tier_name if tier_name is not None else tier_names().get(tier, tier)
    return {
        "schema": SCHEMA,
        "title": title,
        "tier": tier,
        "tier_name": name,
        "latent_dim": d,
        "classes": list(classes),
        "image": {"channels": c, "height": h, "width": w},
        "tile_scale": max(1, 256 // max(h, w)),
        "numbers": [
            {"key": k, "label": NUMBER_LABELS.get(k, k.replace("_", " ")), "value": _plain(v)}
            for k, v in (numbers or {}).items()
        ],
        "kl_per_dim": [float(x) for x in kl],
        "reference": reference,
        "points": {
            "count": len(chosen),
            "thumbnails": shown,
            "total": n_total,
            "index": packed(chosen.numpy(), "int32"),
            "labels": packed(labels[chosen].numpy(), "int32"),
            "means": packed(means[chosen].numpy(), "float32"),
            "images": sprite(to_uint8(images_at(chosen[:shown]))),
            "recons": sprite(to_uint8(recons)),
        },
        "planes": planes,
        "default_plane": planes[0]["id"],
        # The sweep's linked cursor: each run's first plane (z1, z2 / top-KL / z1) over the
        # prior range, so every run of a latent size decodes the same plane coordinates.
        "linked": {"plane": planes[0]["id"], "grid": "prior"},
        "build": {
            "decodes": decodes,
            "seconds": round(time.perf_counter() - start, 3),
            "batch_size": batch_size,
        },
    }


def _plain(value: Any) -> Any:
    """A number or string as JSON knows it (tensors and numpy scalars included)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
