"""Tiny datasets written in the real on-disk formats, read back through torchvision's classes."""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

N_TRAIN, N_TEST = 240, 80
REPO = Path(__file__).resolve().parents[1]


def _images(n: int, size: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class k: a bright square at a k-dependent place over sparse noise (learnable)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 256, (n, size, size, channels)) * (
        rng.random((n, size, size, 1)) < 0.1
    )
    images = images.astype(np.uint8)  # sparse salt noise survives binarization
    for i, k in enumerate(labels):
        r, c = 2 + (k // 5) * (size // 2), 2 + (k % 5) * (size // 6)
        images[i, r : r + size // 3, c : c + size // 4] = 255 - 20 * np.arange(channels)
    return images, labels


def write_idx(root: Path, name: str, seed: int = 0) -> Path:
    """MNIST/FashionMNIST raw IDX files (big-endian header, uint8 payload) under root/name/raw."""
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        images, labels = _images(n, 28, 1, seed + (prefix == "t10k"))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x0803, n, 28, 28) + images[..., 0].tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x0801, n) + labels.tobytes()
        )
    return root


def write_cifar10(root: Path, seed: int = 0) -> dict[str, str]:
    """CIFAR-10's python layout: five pickled train batches, a test batch, batches.meta.

    Returns each file's MD5: torchvision checks them against the real set's, so tests point
    torchvision at these (``cifar_md5`` fixture) instead of skipping the check.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    per_batch = N_TRAIN // 5
    files = {f"data_batch_{i + 1}": per_batch for i in range(5)} | {"test_batch": N_TEST}
    for i, (name, n) in enumerate(files.items()):
        images, labels = _images(n, 32, 3, seed + i)
        data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # row = R plane, G plane, B plane
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist(), "batch_label": name}, f)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch}, f)
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding fixture MNIST, FashionMNIST and CIFAR-10 files."""
    root = tmp_path_factory.mktemp("data")
    write_idx(root, "MNIST", seed=0)
    write_idx(root, "FashionMNIST", seed=10)
    (root / "cifar_md5.pkl").write_bytes(pickle.dumps(write_cifar10(root, seed=20)))
    return root


@pytest.fixture
def cifar_md5(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torchvision's CIFAR10 integrity check expect the fixture files' MD5s."""
    from torchvision.datasets import CIFAR10

    md5 = pickle.loads((data_root / "cifar_md5.pkl").read_bytes())
    monkeypatch.setattr(
        CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)]
    )
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
