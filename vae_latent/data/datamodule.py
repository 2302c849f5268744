"""MNIST, Fashion-MNIST and CIFAR-10 as a LightningDataModule served from in-memory tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from vae_latent.data.datasets import DATASETS, Channels, DatasetName, image_shape, read_split
from vae_latent.data.splits import DeviceBatches, InMemorySplit, as_batch
from vae_latent.errors import ConfigError

# validation: data.val_size training images held out, the best checkpoint by their ELBO tested.
# study: the study's own protocol: all training images, the test split scored after every
# epoch, the last epoch's weights reported.
Protocol = Literal["validation", "study"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)


class VAEDataModule(L.LightningDataModule):
    """Reads each split once through torchvision, converts once to tensors, serves batches.

    Its settings are checked before it is built (``run/validate.py``); what only the files can
    tell (a training split smaller than ``val_size``) is checked when they are read.
    """

    def __init__(
        self,
        name: DatasetName = "mnist",
        channels: Channels = "native",
        root: str = "data",
        download: bool = True,
        binarize: bool = True,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        val_size: int = 5000,
        seed: int = 42,
        protocol: Protocol = "validation",
        on_device: bool = True,
    ) -> None:
        super().__init__()
        # Travels in checkpoints (datamodule_hyper_parameters): vae-latent-eval reads the same
        # data from a checkpoint alone. Paths stay out: they belong to the machine, not the run.
        self.save_hyperparameters(ignore=["root", "download", "on_device"], logger=False)
        self.info = DATASETS[name]
        self.name, self.channels = name, channels
        self.root = Path(root).expanduser().resolve()
        self.download, self.binarize = download, binarize
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.seed, self.protocol = val_size, seed, protocol
        self.on_device = on_device  # on one GPU, keep every split there
        # What the validation loop scores, and the name its metrics are logged under.
        self.val_name = "test" if protocol == "study" else "val"
        self.splits: dict[str, InMemorySplit] = {}
        self.classes: list[str] = []  # class names as torchvision gives them, once read
        self._read_cache: dict[bool, tuple[Tensor, Tensor]] = {}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images this module serves, known before any file is read."""
        return image_shape(self.name, self.channels)

    def _read(self, train: bool, download: bool = False) -> tuple[Tensor, Tensor]:
        if train in self._read_cache:
            return self._read_cache.pop(train)
        images, labels, self.classes = read_split(
            self.root, self.name, self.channels, self.binarize, train, download
        )
        return images, labels

    def prepare_data(self) -> None:
        # Runs once per node before setup: the only place that downloads. torchvision reads the
        # files while checking them, so keep what it read for setup in this process.
        if not self.splits:
            for train in (True, False):
                self._read_cache[train] = self._read(train, download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # already loaded (the app loads before fit to fail early)
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
                f"(the {self.name} training split under {self.root} has {len(images)} images)"
            )
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
        val, train = order[: self.val_size], order[self.val_size :]
        self.splits["train"] = InMemorySplit(images[train], labels[train], self.binarize)
        self.splits["val"] = InMemorySplit(images[val], labels[val], self.binarize)

    def _loader(self, split: str, shuffle: bool) -> DataLoader | DeviceBatches:
        bs = self.batch_size if split == "train" else self.eval_batch_size
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:  # DDP: Lightning's sampler shards
            # No workers: a batch is one tensor gather, cheaper than any inter-process hop.
            return DataLoader(self.splits[split], bs, shuffle=shuffle, collate_fn=as_batch)
        device = trainer.strategy.root_device if trainer and self.on_device else None
        if device is not None and self.splits[split].images.device != device:
            self.splits = {k: v.to(device) for k, v in self.splits.items()}  # one GPU: there
        # One process: the split gathered in the epoch's order once, a batch a slice of it.
        return DeviceBatches(self.splits[split], bs, shuffle, labels=split != "train")

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        # Batches are gathered where the model is (the CPU, or the one GPU): nothing to move,
        # and Lightning's default walks the batch to find that out (docs/speed.md: around the step).
        if isinstance(batch, (tuple, list)) and all(
            t is None or (isinstance(t, Tensor) and t.device == device) for t in batch
        ):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader("test", shuffle=False)
