"""Shared fixtures: tiny datasets in the real on-disk formats, a trained run, app helpers."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

N_TRAIN, N_TEST = 240, 80
REPO = Path(__file__).resolve().parents[1]
# A run that takes a second or two on fixture data.
TINY = [
    "data.val_size=40",
    "data.batch_size=16",
    "trainer.limit_train_batches=4",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "metrics.iw_samples=16",
]


def run_app(*args: str, app: str = "vae-latent", cwd: Path = REPO) -> subprocess.CompletedProcess:
    """One of the console apps in a fresh process, as a user runs it."""
    module = {"vae-latent": "vae_latent", "vae-latent-eval": "vae_latent.cli:eval_main"}[app]
    if ":" in module:
        mod, func = module.split(":")
        command = [sys.executable, "-c", f"import {mod}; {mod}.{func}()", *args]
    else:
        command = [sys.executable, "-m", module, *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@dataclass
class AppResult:
    """What an app run left: exit code and the two streams (like subprocess.CompletedProcess)."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def app(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Callable[..., AppResult]:
    """Run ``vae-latent`` (or ``main="eval"``) in this process: same entry point, no import cost."""
    from vae_latent import cli

    def run(*argv: str, main: str = "train") -> AppResult:
        entry = {"train": cli.train_main, "eval": cli.eval_main}[main]
        monkeypatch.setattr(sys, "argv", [f"vae-latent-{main}", *argv])
        capsys.readouterr()
        try:
            entry()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return AppResult(code, out.out, out.err)

    return run


def assert_one_line_error(proc: Any, *needles: str, code: int = 2) -> None:
    """Exit ``code``, no traceback, exactly one line on stderr holding every needle."""
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def compose(*overrides: str, config_name: str = "train") -> Any:
    """The config an app composes from these overrides."""
    from vae_latent.run.config import compose_config

    return compose_config(list(overrides), config_name)


def train_tiny(out: Path, data_root: Path, *overrides: str, resume: bool = False) -> dict:
    """An in-process training run on fixture MNIST (TINY, 2 epochs unless overridden)."""
    from vae_latent.run.train import train

    cfg = compose(f"data.root={data_root}", "trainer.max_epochs=2", *TINY, *overrides)
    return train(cfg, out, resume=resume)


def file_hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its SHA-1: 'nothing on disk changed' is an equality."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


def read_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


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


@pytest.fixture(scope="session")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny MNIST run (latent 2, 2 epochs, every picture), trained once for the session.

    Read-only for tests: copy it before changing anything in it.
    """
    run = tmp_path_factory.mktemp("trained") / "run"
    train_tiny(
        run,
        data_root,
        "callbacks.epoch_grid.n_images=4",
        "callbacks.latent_scatter.every_n_epochs=1",
        "callbacks.explorer.grid=16",  # 2 x 256 decodes, not 2 x 1,600: the tests check its data
        # PyTorch's start: from Keras's (zero biases, small weights) 8 steps at lr 1e-4 move the
        # reconstructions by less than one grey level, and the picture tests compare epochs.
        "model.init=torch",
    )
    return run


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """xdist's defaults for this suite when -n is not given (and xdist is loaded at all); not in
    a worker, which would start workers of its own."""
    worker = hasattr(config, "workerinput")
    if (
        config.pluginmanager.hasplugin("xdist")
        and config.option.numprocesses is None
        and not worker
    ):
        config.option.numprocesses, config.option.maxprocesses = "auto", 4
        config.option.dist = "worksteal"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip, with the reason, where torch sees no CUDA GPU."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker trains on one thread: two workers share two cores."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
