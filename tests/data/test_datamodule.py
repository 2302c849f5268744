import shutil
import urllib.error
import urllib.request

import pytest
import torch

from vae_latent.data import DATASETS, VAEDataModule
from vae_latent.errors import ConfigError, DataError
from vae_latent.run.validate import validate

from ..conftest import N_TEST, N_TRAIN, compose

VAL = 40


def _module(data_root, name, channels="native", **kw) -> VAEDataModule:
    kw.setdefault("binarize", DATASETS[name].channels == 1)
    dm = VAEDataModule(
        name=name, channels=channels, root=str(data_root), download=False, val_size=VAL, **kw
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


CASES = [
    ("mnist", "native", (1, 28, 28)),
    ("mnist", "gray", (1, 28, 28)),
    ("fashion_mnist", "native", (1, 28, 28)),
    ("fashion_mnist", "gray", (1, 28, 28)),
    ("cifar10", "native", (3, 32, 32)),
    ("cifar10", "rgb", (3, 32, 32)),
    ("cifar10", "gray", (1, 32, 32)),
]


@pytest.mark.usefixtures("cifar_md5")
@pytest.mark.parametrize(("name", "channels", "shape"), CASES)
def test_every_dataset_and_channels_yields_the_right_shapes(data_root, name, channels, shape):
    dm = _module(data_root, name, channels, batch_size=16)
    assert dm.image_shape == shape
    assert {k: len(v) for k, v in dm.splits.items()} == {
        "train": N_TRAIN - VAL,
        "val": VAL,
        "test": N_TEST,
    }
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, *shape) and x.dtype == torch.float32
    assert y is None  # training reads no labels: none are gathered
    assert x.min() >= 0 and x.max() <= 1
    test_batches = list(dm.test_dataloader())
    assert sum(len(b[0]) for b in test_batches) == N_TEST
    y = torch.cat([b[1] for b in test_batches])
    assert y.dtype == torch.long and y.min() >= 0 and y.max() <= 9


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_rgb_on_a_one_channel_set_is_a_config_error(name):
    with pytest.raises(ConfigError, match="channels=rgb.*1 channel"):
        validate(compose(f"dataset={name}", "channels=rgb"))


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="data.name='svhn' must be one of mnist"):
        validate(compose("data.name=svhn"))
    with pytest.raises(ConfigError, match="data.channels='grey' must be one of native"):
        validate(compose("data.channels=grey"))


def test_binarize_gives_exact_zeros_and_ones_at_half(data_root):
    import torchvision

    dm = _module(data_root, "mnist")
    raw = torchvision.datasets.MNIST(str(data_root), train=False).data
    x = torch.cat([b[0] for b in dm.test_dataloader()])
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(x[:, 0], (raw.float() / 255 > 0.5).float())


@pytest.mark.usefixtures("cifar_md5")
def test_cifar_keeps_intensities_and_gray_uses_luma_weights(data_root):
    import torchvision

    raw = torch.as_tensor(torchvision.datasets.CIFAR10(str(data_root), train=False).data)
    rgb = torch.cat([b[0] for b in _module(data_root, "cifar10", "rgb").test_dataloader()])
    torch.testing.assert_close(rgb, raw.permute(0, 3, 1, 2).float() / 255)
    gray = torch.cat([b[0] for b in _module(data_root, "cifar10", "gray").test_dataloader()])
    luma = (0.2989 * raw[..., 0] + 0.587 * raw[..., 1] + 0.114 * raw[..., 2]).floor() / 255
    torch.testing.assert_close(gray[:, 0], luma, atol=1 / 255 + 1e-6, rtol=0)


def test_validation_split_is_seeded_and_disjoint(data_root):
    def split(seed):
        dm = _module(data_root, "mnist", seed=seed)
        return dm.splits["train"].images, dm.splits["val"].images

    (tr1, va1), (tr2, va2), (_, va3) = split(1), split(1), split(2)
    assert torch.equal(va1, va2) and torch.equal(tr1, tr2)
    assert not torch.equal(va1, va3)
    # Train and val rows together are exactly the official training split, each row once.
    rows = {bytes(r.numpy()) for r in torch.cat([tr1, va1]).flatten(1)}
    assert len(rows) == N_TRAIN


def test_val_size_larger_than_the_split_is_a_config_error(data_root):
    dm = VAEDataModule(root=str(data_root), download=False, val_size=N_TRAIN)
    with pytest.raises(ConfigError, match="data.val_size"):
        dm.setup("fit")


def test_missing_files_name_the_root_and_the_expected_files(tmp_path):
    dm = VAEDataModule(name="fashion_mnist", root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message
    assert "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte" in message
    assert "\n" not in message


def test_the_study_protocol_trains_on_every_image_and_scores_the_test_split(data_root):
    dm = _module(data_root, "mnist", protocol="study")
    assert len(dm.splits["train"]) == N_TRAIN and dm.splits["val"] is dm.splits["test"]
    assert dm.val_name == "test" and _module(data_root, "mnist").val_name == "val"
    with pytest.raises(ConfigError, match="data.protocol"):
        validate(compose("data.protocol=paper"))


def test_idx_headers_are_checked_against_the_file(data_root, tmp_path):
    from vae_latent.data.datasets import check_idx

    good = data_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    assert check_idx(good, 3, 28) == N_TRAIN
    assert check_idx(data_root / "MNIST" / "raw" / "train-labels-idx1-ubyte", 1) == N_TRAIN
    data = good.read_bytes()
    broken = {
        "magic": b"\x00\x00\x09\x03" + data[4:],  # not uint8
        "ndim": b"\x00\x00\x08\x02" + data[4:],  # two dimensions
        "header": data[:10],  # cut inside the header
        "size": data[:8] + (27).to_bytes(4, "big") + data[12:],  # 27 rows
        "length": data + b"\x00",  # one byte more than the header says
    }
    for name, content in broken.items():
        path = tmp_path / f"{name}-idx3-ubyte"
        path.write_bytes(content)
        with pytest.raises(ValueError, match=path.name):
            check_idx(path, 3, 28)


def _deny(monkeypatch, folder):
    """Everything under ``folder`` unreadable (EACCES), as ``chmod 000`` makes it for a user
    other than root: stat and open fail there; the folder itself can still be listed.

    Each way in is stubbed by name (os.stat, Path.stat, open, io.open), because pathlib's route to
    os.stat differs between Pythons: 3.10 calls a reference bound at import, so stubbing os.stat
    alone leaves Path.stat and Path.is_file untouched there.
    """
    import builtins
    import errno
    import io
    import os
    from pathlib import Path

    real_stat, real_open = os.stat, builtins.open

    def denied(path):
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False
        path = Path(os.fsdecode(path)).absolute()
        return path != folder and path.is_relative_to(folder)

    def stat(path, *args, **kwargs):
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_stat(path, *args, **kwargs)

    def open_(path, *args, **kwargs):
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_open(path, *args, **kwargs)

    real_path_stat = Path.stat

    def path_stat(self, *args, **kwargs):
        if denied(self):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_path_stat(self, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(Path, "stat", path_stat)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)


@pytest.mark.parametrize(
    ("name", "folder", "download"),
    [
        ("mnist", "MNIST/raw", False),
        ("mnist", "MNIST/raw", True),
        ("cifar10", "cifar-10-batches-py", False),
        ("cifar10", "cifar-10-batches-py", True),  # not found, so torchvision downloads: fails
    ],
)
def test_an_unreadable_data_folder_says_so_not_the_internet(
    data_root, tmp_path, monkeypatch, name, folder, download
):
    root = tmp_path / "data"
    top = folder.split("/")[0]
    shutil.copytree(data_root / top, root / top)
    _deny(monkeypatch, root / folder)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dm = VAEDataModule(name=name, root=str(root), download=download, val_size=VAL)
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert f"{name}: cannot access {root / folder}" in message, message
    assert "Permission denied" in message and "make it readable" in message
    assert "internet" not in message and "delete" not in message and "\n" not in message


def test_a_missing_or_damaged_file_is_named_without_a_wrong_hint(data_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_root / "MNIST", root / "MNIST")
    labels = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    content = labels.read_bytes()
    labels.unlink()
    with pytest.raises(DataError) as err:
        VAEDataModule(root=str(root), download=False, val_size=VAL).prepare_data()
    missing = str(err.value)
    assert (
        "no MNIST/raw/t10k-labels-idx1-ubyte" in missing and "allow data.download=true" in missing
    )
    assert "delete" not in missing and "internet" not in missing
    labels.write_bytes(content[:-3])  # there, but shorter than its header says
    with pytest.raises(DataError) as err:
        VAEDataModule(root=str(root), download=False, val_size=VAL).prepare_data()
    damaged = str(err.value)
    assert "cannot be read (truncated or corrupt?)" in damaged and "t10k-labels" in damaged
    assert "delete" not in damaged and "internet" not in damaged


def test_an_epoch_is_the_seeded_order_of_the_split_and_needs_no_transfer(data_root):
    """The split is gathered once in the epoch's randperm order: the batches are exactly the
    per-batch gathers of that order (what a resumed run's generator state reproduces)."""
    dm = _module(data_root, "fashion_mnist", batch_size=16)
    split = dm.splits["train"]
    torch.manual_seed(7)
    order = torch.randperm(len(split))
    torch.manual_seed(7)
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.train_dataloader()) == -(-len(split) // 16)
    for i, (x, y) in enumerate(batches):
        want, _ = split.take(order[i * 16 : (i + 1) * 16])
        assert y is None and torch.equal(x, want), i
    x, y = next(iter(dm.test_dataloader()))  # in order, with labels
    assert torch.equal(x, dm.splits["test"].take(torch.arange(len(x)))[0])
    assert torch.equal(y, dm.splits["test"].labels[: len(x)])
    batch = (x, None)
    assert dm.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch  # already there
    moved = dm.transfer_batch_to_device([x.double(), y], torch.device("meta"), 0)
    assert [t.device.type for t in moved] == ["meta", "meta"]  # elsewhere: Lightning's move
