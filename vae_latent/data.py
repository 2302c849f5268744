"""MNIST, Fashion-MNIST and CIFAR-10 as a LightningDataModule served from in-memory tensors."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vae_latent.errors import ConfigError, DataError


@dataclass(frozen=True)
class DatasetInfo:
    """What the code needs to know about a dataset before reading it."""

    tv_class: str  # the torchvision.datasets class name
    display: str  # the name in figure titles
    channels: int
    size: int
    files: str  # what must exist under the root, for the error message
    train_size: int  # images in the official training split


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
CHANNELS = ("native", "gray", "rgb")
# validation: 5,000 training images held out, the best checkpoint by their ELBO is tested.
# study: the study's own protocol: all training images, the test split scored after every
# epoch, the last epoch's weights reported.
PROTOCOLS = ("validation", "study")


def check_idx(path: Path, ndim: int, size: int | None = None) -> int:
    """The item count of a uint8 IDX file whose header and length agree; ValueError otherwise.

    torchvision parses these files with asserts and reshapes, so a malformed header gives
    assorted errors there; here every one is a ValueError that names the file.
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


class InMemorySplit(Dataset):
    """A whole split as one uint8 tensor; a batch is one gather, not a per-sample collate."""

    def __init__(self, images: Tensor, labels: Tensor, binarize: bool) -> None:
        self.images, self.labels = images, labels
        # Binarized images are stored as 0/1 bytes, the rest as 0..255 bytes.
        self.scale = 1.0 if binarize else 1.0 / 255.0

    def __len__(self) -> int:
        return len(self.images)

    def take(self, idx: list[int] | Tensor) -> tuple[Tensor, Tensor]:
        """Images (float in [0, 1]) and labels at ``idx``: one gather."""
        index = torch.as_tensor(idx, device=self.images.device)
        return self.images[index].float().mul_(self.scale), self.labels[index]

    # DataLoader hands a whole batch of indices to __getitems__ (torch >= 2.1).
    __getitems__ = take

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.take([i])
        return x[0], y[0]

    def batches(self, size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The split in order, as float batches (no full float copy of a large split)."""
        order = torch.arange(len(self), device=self.images.device)
        for start in range(0, len(self), size):
            yield self.take(order[start : start + size])

    def to(self, device: torch.device) -> InMemorySplit:
        moved = copy.copy(self)
        moved.images, moved.labels = self.images.to(device), self.labels.to(device)
        return moved


class DeviceBatches:
    """Batches gathered on the split's device from an order drawn there: no host work per step.

    A DataLoader's sampler yields Python indices, and copying them to a GPU each step waits for
    the GPU; here one ``randperm`` per epoch runs on the device and a batch is a slice of it.
    """

    def __init__(self, split: InMemorySplit, batch_size: int, shuffle: bool) -> None:
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, device = len(self.split), self.split.images.device
        order = (
            torch.randperm(n, device=device)  # the device's generator: seeded, and resumed
            if self.shuffle
            else torch.arange(n, device=device)
        )
        for start in range(0, n, self.batch_size):
            yield self.split.take(order[start : start + self.batch_size])


def _as_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The collate step: ``__getitems__`` already returned a batch."""
    return batch


class VAEDataModule(L.LightningDataModule):
    """Reads each split once through torchvision, converts once to tensors, serves batches."""

    def __init__(
        self,
        name: str = "mnist",
        channels: str = "native",
        root: str = "data",
        download: bool = True,
        binarize: bool = True,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        val_size: int = 5000,
        seed: int = 42,
        protocol: str = "validation",
        on_device: bool = True,
    ) -> None:
        super().__init__()
        if name not in DATASETS:
            raise ConfigError(f"dataset={name!r} is unknown; use one of {', '.join(DATASETS)}")
        if channels not in CHANNELS:
            raise ConfigError(f"channels={channels!r} is unknown; use one of {', '.join(CHANNELS)}")
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"data.protocol={protocol!r} is unknown; use one of {', '.join(PROTOCOLS)}"
            )
        self.info = DATASETS[name]
        if channels == "rgb" and self.info.channels == 1:
            raise ConfigError(
                f"channels=rgb needs a colour dataset but {name} has 1 channel; "
                "use channels=native or channels=gray"
            )
        # Travels in checkpoints (datamodule_hyper_parameters): vae-latent-eval reads the same
        # data from a checkpoint alone. Paths stay out: they belong to the machine, not the run.
        self.save_hyperparameters(ignore=["root", "download", "on_device"], logger=False)
        self.name, self.channels = name, channels
        self.root = Path(root).expanduser().resolve()
        self.download, self.binarize = download, binarize
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.seed, self.protocol = val_size, seed, protocol
        self.on_device = on_device  # on one GPU, keep every split there
        # What the validation loop scores, and the name its metrics are logged under.
        self.val_name = "test" if protocol == "study" else "val"
        self.splits: dict[str, InMemorySplit] = {}
        self._read_cache: dict[bool, tuple[Tensor, Tensor]] = {}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images this module serves, known before any file is read."""
        c = 1 if self.channels == "gray" else self.info.channels
        return (c, self.info.size, self.info.size)

    @property
    def classes(self) -> list[str]:
        """Class names as torchvision gives them (CIFAR-10's from batches.meta); after setup."""
        return self._classes

    def _read(self, train: bool, download: bool = False) -> tuple[Tensor, Tensor]:
        """One split through its torchvision class, as (N, C, H, W) uint8 and (N,) int64."""
        if train in self._read_cache:
            return self._read_cache.pop(train)
        import torchvision
        from torchvision.transforms.functional import rgb_to_grayscale

        cls = getattr(torchvision.datasets, self.info.tv_class)
        try:
            self._check_files(train)
            # torchvision prints download attempts on stdout; a failure gets our one line.
            with contextlib.redirect_stdout(io.StringIO()):
                ds = cls(str(self.root), train=train, download=download)
        except Exception as e:  # any failure to read the files is a data problem: one line
            raise self._read_error(e, download) from e
        self._classes = list(ds.classes)
        images = torch.as_tensor(ds.data)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        if self.channels == "gray" and images.shape[1] == 3:
            images = rgb_to_grayscale(images)  # ITU-R 601-2 luma, as transforms.Grayscale
        if self.binarize:
            images = (images > 127).to(torch.uint8)  # pixel/255 > 0.5, the study's recipe
        return images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)

    def _check_files(self, train: bool) -> None:
        """IDX headers against their lengths, before torchvision parses them (if they exist)."""
        if self.info.channels != 1:
            return
        raw = self.root / self.info.files.split("/")[0] / "raw"
        prefix = "train" if train else "t10k"
        images, labels = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
        if images.is_file() and labels.is_file():
            n_images, n_labels = check_idx(images, 3, self.info.size), check_idx(labels, 1)
            if n_images != n_labels:
                raise ValueError(f"{images.name} has {n_images} images, {labels.name} {n_labels}")

    def _read_error(self, e: Exception, download: bool) -> DataError:
        """One line: what is missing or broken under the root, and what to do."""
        detail = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]}"
        folder = self.root / self.info.files.split("/")[0]
        if folder.is_dir() and any(p.is_file() for p in folder.rglob("*")):
            return DataError(
                f"{self.name} files under {folder} cannot be read (truncated or corrupt?): "
                f"delete them and download again, or copy them again ({detail})"
            )
        how = "download failed" if download else "data.download=false"
        fix = "check the internet connection" if download else "allow data.download=true"
        return DataError(
            f"{self.name} not found under {self.root} ({how}): expected {self.info.files}; set "
            f"data.root (or VAE_LATENT_DATA) to a folder holding them, or {fix} ({detail})"
        )

    def prepare_data(self) -> None:
        # Runs once per node before setup: the only place that downloads. torchvision reads the
        # files while checking them, so keep what it read for setup in this process.
        if not self.splits:
            for train in (True, False):
                self._read_cache[train] = self._read(train, download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # already loaded (the CLI loads before fit to fail early)
            return
        images, labels = self._read(train=True)
        self.splits["test"] = InMemorySplit(*self._read(train=False), self.binarize)
        if self.protocol == "study":  # every training image; the test split each epoch
            self.splits["train"] = InMemorySplit(images, labels, self.binarize)
            self.splits["val"] = self.splits["test"]
            return
        if not 0 < self.val_size < len(images):
            raise ConfigError(
                f"data.val_size={self.val_size} must be between 1 and {len(images) - 1} "
                f"(the {self.name} training split has {len(images)} images)"
            )
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
        val, train = order[: self.val_size], order[self.val_size :]
        self.splits["train"] = InMemorySplit(images[train], labels[train], self.binarize)
        self.splits["val"] = InMemorySplit(images[val], labels[val], self.binarize)

    def _loader(self, split: str, shuffle: bool) -> DataLoader | DeviceBatches:
        bs = self.batch_size if split == "train" else self.eval_batch_size
        device = self._device()
        if device.type == "cuda":  # one GPU: the splits live there, batches are gathered there
            if self.splits[split].images.device != device:
                self.splits = {k: v.to(device) for k, v in self.splits.items()}
            return DeviceBatches(self.splits[split], bs, shuffle)
        # No workers: a batch is one tensor gather, cheaper than any inter-process hop.
        return DataLoader(self.splits[split], batch_size=bs, shuffle=shuffle, collate_fn=_as_batch)

    def _device(self) -> torch.device:
        """The single CUDA device training runs on, else the CPU (DDP keeps its samplers)."""
        trainer = self.trainer
        if self.on_device and trainer is not None and trainer.world_size == 1:
            return trainer.strategy.root_device
        return torch.device("cpu")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
