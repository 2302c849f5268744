"""The three datasets and the study's tiers: what they are, and each split read once from disk."""

from __future__ import annotations

import contextlib
import errno
import io
import math
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor

from vae_latent.errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    """What the code needs to know about a dataset before reading it."""

    tv_class: str  # the torchvision.datasets class name
    display: str  # the name in figure titles
    channels: int
    size: int
    files: str  # what must exist under the root, for the error message
    train_size: int  # images in the official training split


DatasetName = Literal["mnist", "fashion_mnist", "cifar10"]
Channels = Literal["native", "gray", "rgb"]
_IDX = "{train,t10k}-{images-idx3,labels-idx1}-ubyte"
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("MNIST", "MNIST", 1, 28, f"MNIST/raw/{_IDX}", 60_000),
    "fashion_mnist": DatasetInfo(
        "FashionMNIST", "Fashion-MNIST", 1, 28, f"FashionMNIST/raw/{_IDX}", 60_000
    ),
    "cifar10": DatasetInfo(
        "CIFAR10",
        "CIFAR-10",
        3,
        32,
        "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
        50_000,
    ),
}
CHANNELS: tuple[str, ...] = get_args(Channels)


class Tier(NamedTuple):
    """One tier of the study's data complexity: a dataset read with some channels."""

    dataset: str
    channels: str
    display: str  # its name in the report, its figures and the explorer


# The study's tiers of data complexity, simplest first: the one table. tier(), the report's
# order and names, and the explorer's sweep page read it; conf/tier/<name>.yaml and
# experiment=paper's sweep are checked against it (tests/data/test_tiers.py).
TIERS: dict[str, Tier] = {
    "mnist": Tier("mnist", "native", "MNIST"),
    "fashion_mnist": Tier("fashion_mnist", "native", "Fashion-MNIST"),
    "cifar10_gray": Tier("cifar10", "gray", "CIFAR-10 gray"),
    "cifar10_rgb": Tier("cifar10", "rgb", "CIFAR-10 RGB"),
}


def tier_names() -> dict[str, str]:
    """Each tier's display name, simplest tier first."""
    return {name: t.display for name, t in TIERS.items()}


def tier(dataset: object, channels: object) -> str:
    """The tier of a run: the one whose images have the same channels (MNIST-family sets are
    gray whatever ``channels`` says); the dataset's name where no tier matches."""
    if not isinstance(dataset, str) or dataset not in DATASETS:
        return str(dataset)
    depth = image_shape(dataset, str(channels))[0]
    found = (
        name
        for name, t in TIERS.items()
        if t.dataset == dataset and image_shape(t.dataset, t.channels)[0] == depth
    )
    return next(found, dataset)


def image_shape(name: str, channels: str) -> tuple[int, int, int]:
    """(C, H, W) of the images of ``name`` read as ``channels``, known before any file is read."""
    info = DATASETS[name]
    return (1 if channels == "gray" else info.channels, info.size, info.size)


def check_idx(path: Path, ndim: int, size: int | None = None) -> int:
    """The item count of a uint8 IDX file whose header and length agree; ValueError otherwise.

    Kept although torchvision reads these files: it parses them with asserts and reshapes, so a
    malformed header gives assorted errors there; here every one is a ValueError naming the file.
    """
    header = 4 + 4 * ndim
    with open(path, "rb") as f:
        head = f.read(header)
    if len(head) < header or head[:3] != b"\x00\x00\x08" or head[3] != ndim:
        raise ValueError(f"{path.name} has no uint8 IDX header with {ndim} dimension(s)")
    dims = struct.unpack(f">{ndim}I", head[4:])
    if size is not None and dims[1:] != (size,) * (ndim - 1):
        raise ValueError(f"{path.name} holds items of {dims[1:]}, not {size}x{size}")
    expected = header + math.prod(dims)
    if path.stat().st_size != expected:
        raise ValueError(f"{path.name} has {path.stat().st_size} bytes, its header says {expected}")
    return dims[0]


def _check_regular(root: Path, name: str) -> None:
    """Every dataset file that exists is a regular file: torchvision would wait forever on a
    FIFO, or read a device without end."""
    for path in expected_files(root, DATASETS[name]):
        try:
            mode = path.stat().st_mode
        except OSError:
            continue  # missing or unreadable: torchvision's error says which (read_error)
        if not stat.S_ISREG(mode):
            raise DataError(
                f"{name}: {path} is not a regular file; replace it with the dataset's file"
            )


def _check_files(root: Path, info: DatasetInfo, train: bool) -> None:
    """IDX headers against their lengths, before torchvision parses them (if they exist)."""
    if info.channels != 1:
        return
    raw = root / info.files.split("/")[0] / "raw"
    prefix = "train" if train else "t10k"
    images, labels = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
    if images.is_file() and labels.is_file():
        n_images, n_labels = check_idx(images, 3, info.size), check_idx(labels, 1)
        if n_images != n_labels:
            raise ValueError(f"{images.name} has {n_images} images, {labels.name} {n_labels}")


def read_split(
    root: Path, name: str, channels: str, binarize: bool, train: bool, download: bool = False
) -> tuple[Tensor, Tensor, list[str]]:
    """One split through its torchvision class: (N, C, H, W) uint8, (N,) int64, class names.

    Binarized images are stored as 0/1 bytes (pixel/255 > 0.5, the study's recipe), the rest as
    0..255; gray CIFAR-10 is ITU-R 601-2 luma, as torchvision's ``Grayscale``.
    """
    import torchvision
    from torchvision.transforms.functional import rgb_to_grayscale

    info = DATASETS[name]
    cls = getattr(torchvision.datasets, info.tv_class)
    _check_regular(root, name)
    try:
        _check_files(root, info, train)
        # torchvision prints download attempts on stdout; a failure gets our one line.
        with contextlib.redirect_stdout(io.StringIO()):
            ds = cls(str(root), train=train, download=download)
    except Exception as e:  # any failure to read the files is a data problem: one line
        raise read_error(e, root, name, download) from e
    labels = torch.as_tensor(ds.targets, dtype=torch.long)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(ds.classes)):
        bad = int(labels.min() if labels.min() < 0 else labels.max())
        raise DataError(
            f"{name} labels under {root} hold class {bad}, outside 0 to {len(ds.classes) - 1}: "
            "the file is damaged; copy or download it again"
        )
    images = torch.as_tensor(ds.data)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    if channels == "gray" and images.shape[1] == 3:
        images = rgb_to_grayscale(images)
    if binarize:
        images = (images > 127).to(torch.uint8)
    return images.contiguous(), labels, list(ds.classes)


DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def read_error(e: Exception, root: Path, name: str, download: bool) -> DataError:
    """One line: what is missing, unreadable or broken under the root, and what to do."""
    info = DATASETS[name]
    detail = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]}"
    folder = root / info.files.split("/")[0]
    os_error = next((c for c in _causes(e) if isinstance(c, OSError) and c.errno), None)
    missing, denied = [], None
    for path in expected_files(root, info):  # a folder we may not enter hides its files
        try:
            if not path.is_file():
                missing.append(path)
        except PermissionError as pe:
            denied = denied or pe
        except OSError:
            missing.append(path)
    if denied is not None and (os_error is None or os_error.errno not in DENIED):
        os_error = denied
    if os_error is not None and os_error.errno in DENIED:
        where = os_error.filename or folder
        fix = "make it readable" if os_error.errno != errno.EROFS else "download elsewhere"
        return DataError(
            f"{name}: cannot access {where} ({os_error.strerror}); {fix}, or set data.root "
            "(or VAE_LATENT_DATA) to a folder you can read and write"
        )
    if not missing:  # every file is there: one is damaged
        return DataError(
            f"{name} files under {folder} cannot be read (truncated or corrupt?): copy or "
            f"download them again ({detail})"
        )
    how = "download failed" if download else "data.download=false"
    fix = "check the internet connection" if download else "allow data.download=true"
    return DataError(
        f"{name} not found under {root} ({how}; no {missing[0].relative_to(root)}): expected "
        f"{info.files}; set data.root (or VAE_LATENT_DATA) to a folder holding them, or {fix}"
    )


def expected_files(root: Path, info: DatasetInfo) -> list[Path]:
    """Every file torchvision reads for ``info`` under ``root``."""
    if info.channels == 1:
        raw = root / info.files.split("/")[0] / "raw"
        return [
            raw / f"{s}-{k}-ubyte"
            for s in ("train", "t10k")
            for k in ("images-idx3", "labels-idx1")
        ]
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    return [folder / n for n in names]


def _causes(e: BaseException | None) -> list[BaseException]:
    found = []
    while e is not None and len(found) < 10:
        found.append(e)
        e = e.__cause__ or e.__context__
    return found
