"""Bad input: one line, exit 2, every byte already on disk kept; divergence; locks; full disks."""

import errno
import os
import pickle
import shutil
import struct
import subprocess
import sys
from argparse import Namespace

import pytest
import torch
from omegaconf import OmegaConf

from vae_latent.errors import DataError, UserError, user_error
from vae_latent.files import save_atomic
from vae_latent.run.checkpoints import read_checkpoint as check_checkpoint
from vae_latent.run.rundir import RunDirLock

from ..conftest import REPO, TINY, assert_one_line_error, compose, file_hashes, read_metrics


def _copy_mnist(data_root, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(data_root / "MNIST", root / "MNIST")
    return root, root / "MNIST" / "raw" / "train-images-idx3-ubyte"


def _truncated(data_root, tmp_path):
    root, images = _copy_mnist(data_root, tmp_path)
    images.write_bytes(images.read_bytes()[:5000])
    return root


def _header(field):
    """A copy of the fixture MNIST whose image file has one header field wrong."""

    def make(data_root, tmp_path):
        root, images = _copy_mnist(data_root, tmp_path)
        data = bytearray(images.read_bytes())
        n = struct.unpack(">I", data[4:8])[0]
        wrong = {
            "magic": struct.pack(">I", 0x0903),  # a type code torchvision has no dtype for
            "ndim": struct.pack(">I", 0x0802),  # two dimensions declared, three stored
            "count": struct.pack(">I", n + 7),
            "rows": struct.pack(">I", 27),
            "huge": struct.pack(">I", 2**31),
        }[field]
        offset = {"magic": 0, "ndim": 0, "count": 4, "rows": 8, "huge": 12}[field]
        data[offset : offset + 4] = wrong
        images.write_bytes(bytes(data))
        return root

    return make


def _corrupt_cifar(data_root, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(data_root / "cifar-10-batches-py", root / "cifar-10-batches-py")
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:1000])
    return root


def _run_dir(run, data_root, checkpoint):
    """A real run's .hydra/ (composed config and overrides) with a given last.ckpt."""
    (run / ".hydra").mkdir()
    OmegaConf.save(
        compose(f"data.root={data_root}", "data.val_size=40"), run / ".hydra" / "config.yaml"
    )
    OmegaConf.save(
        OmegaConf.create([f"data.root={data_root}", "data.val_size=40"]),
        run / ".hydra" / "overrides.yaml",
    )
    (run / "checkpoints").mkdir()
    checkpoint(run / "checkpoints" / "last.ckpt")


def _foreign(path):
    torch.save({"state_dict": {}, "epoch": 1}, path)


def _unsafe(path):  # needs a full unpickle (an arbitrary class), which weights-only refuses
    path.write_bytes(pickle.dumps({"hparams": Namespace(a=1)}))


BAD = {
    "unknown dataset": (["dataset=svhn"], "dataset"),
    "unknown channels": (["channels=grey"], "channels"),
    "rgb on mnist": (["channels=rgb"], "channels=rgb"),
    "latent 0": (["model.latent_dim=0"], "model.latent_dim"),
    "batch 0": (["data.batch_size=0"], "data.batch_size"),
    "eval batch 0": (["data.eval_batch_size=0"], "data.eval_batch_size"),
    "val size a word": (["data.val_size=abc"], "data.val_size"),
    "seed a word": (["seed=abc"], ": seed='abc'"),  # named as itself, not as data.seed
    "lr not a number": (["model.lr=fast"], "model.lr"),
    "unknown key": (["model.latentdim=4"], "model.latentdim"),
    "64-bit weights": (["trainer.precision=64-true"], "trainer.precision=64-true"),
    "traversal reference past the test split": (
        ["+callbacks.latent_traversal.reference_index=500"],
        "reference_index=500 but the test split has 80 images",
    ),
    "interpolation pair not two classes": (
        ["callbacks.interpolation.pairs=[[3,10]]"],
        "[3, 10] is not a pair of class indices",
    ),
    "unknown key added": (["+model.latentdim=4"], "model.latentdim"),
    "val size too big": (["data.val_size=100000"], "data.val_size"),
    "missing data root": (
        ["data.root=/nonexistent/data", "data.download=false"],
        "/nonexistent/data",
    ),
    "truncated IDX": (_truncated, "cannot be read"),
    "IDX magic number": (_header("magic"), "cannot be read"),
    "IDX dimension count": (_header("ndim"), "cannot be read"),
    "IDX item count": (_header("count"), "cannot be read"),
    "IDX image size": (_header("rows"), "cannot be read"),
    "IDX huge size": (_header("huge"), "cannot be read"),
    "corrupt CIFAR batch": (_corrupt_cifar, "cannot be read"),
    "output dir not writable": ([], "cannot create"),
    "resume a non-run": ([], "is not a run directory"),
    "foreign checkpoint": (_foreign, "not a vae_latent checkpoint"),
    "unsafe checkpoint": (_unsafe, "cannot be loaded weights-only"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_keeps_files(case, app, data_root, tmp_path):
    setup, needle = BAD[case]
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("a file of the user's that must survive")
    overrides = setup if isinstance(setup, list) else []
    root, target = data_root, [f"hydra.run.dir={run}"]
    if case == "corrupt CIFAR batch":
        root, overrides = setup(data_root, tmp_path), ["dataset=cifar10"]
    elif callable(setup) and case.endswith("checkpoint"):
        _run_dir(run, data_root, setup)
        target = [f"resume={run}"]
    elif callable(setup):
        root = setup(data_root, tmp_path)
    elif case == "output dir not writable":
        blocker = tmp_path / "a_file"
        blocker.write_text("not a directory")
        target = [f"hydra.run.dir={blocker / 'run'}"]
    elif case == "resume a non-run":
        target = [f"resume={run}"]
    before = file_hashes(run)
    proc = app(f"data.root={root}", "data.val_size=40", *overrides, *target)
    assert_one_line_error(proc, needle)
    after = file_hashes(run)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed
    # New: at most the run's record of its own config, and its log (data errors come after
    # the Trainer is built); never metrics.json, checkpoints or TensorBoard.
    assert set(after) - set(before) <= {
        ".hydra/config.yaml",
        ".hydra/hydra.yaml",
        ".hydra/overrides.yaml",
        "cli.log",
    }


def test_lr_1e3_stops_on_non_finite_loss_with_a_usable_checkpoint(app, data_root, tmp_path):
    run = tmp_path / "run"
    proc = app(
        "model.lr=1e3",
        f"data.root={data_root}",
        "trainer.max_epochs=2",
        *TINY,
        f"hydra.run.dir={run}",
    )
    assert_one_line_error(proc, "non-finite loss at epoch 1, step", code=1)
    last = run / "checkpoints" / "last.ckpt"
    check_checkpoint(last)  # loads weights-only and is ours
    state = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())
    metrics = read_metrics(run)
    assert metrics["status"] == "failed" and "non-finite loss" in metrics["error"]


def test_a_run_dir_in_use_is_refused_and_left_alone(app, trained, data_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = file_hashes(run)
    lock = RunDirLock(run)  # as the first run holds it while it trains
    lock.acquire()
    try:
        proc = app(
            f"data.root={data_root}",
            *TINY,
            f"hydra.run.dir={run}",
            "resume=true",
            "trainer.max_epochs=3",
        )
        assert_one_line_error(proc, "in use by another run")
        with pytest.raises(UserError, match="in use"):
            RunDirLock(run).acquire()
    finally:
        lock.release()
    assert file_hashes(run) == before
    RunDirLock(run).acquire()  # released: free again


def test_a_killed_process_leaves_no_lock(tmp_path):
    code = (
        f"from vae_latent.run.rundir import RunDirLock; RunDirLock({str(tmp_path)!r}).acquire(); "
        "print('held', flush=True); import time; time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError):
        RunDirLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    RunDirLock(tmp_path).acquire()


def test_a_filesystem_without_flock_runs_unlocked_with_a_warning(tmp_path, monkeypatch, caplog):
    """NFS emulates flock with byte-range locks, which a read-only descriptor cannot take."""
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock = RunDirLock(tmp_path)
    lock.acquire()
    lock.release()
    assert "two runs in it at once are not prevented" in caplog.text


def test_disk_full_inside_a_write_keeps_the_old_file_and_names_the_target(tmp_path, monkeypatch):
    target = tmp_path / "latent_scatter.png"
    target.write_bytes(b"previous picture")

    def fill_disk(buffer):
        buffer.write(b"half a pic")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        save_atomic(target, fill_disk)  # fails while the bytes are made: the disk is untouched
    assert target.read_bytes() == b"previous picture" and [p.name for p in tmp_path.iterdir()] == [
        target.name
    ]

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device", args[0])

    monkeypatch.setattr(os, "replace", full)  # the disk fills as the file lands
    with pytest.raises(OSError) as err:
        save_atomic(target, b"new picture")
    assert err.value.filename == str(target)  # the error names the target, not a temp file
    assert target.read_bytes() == b"previous picture" and [p.name for p in tmp_path.iterdir()] == [
        target.name
    ]
    monkeypatch.undo()
    message = str(user_error(OSError(errno.ENOSPC, "No space left on device", str(target))))
    assert "No space left on device" in message and str(target) in message and "\n" not in message


SIZES = ("200k", "3m")  # full at the first checkpoint; full at a figure, after training
DRIVER = """
import gc, os, sys
from vae_latent import cli
root, *overrides = sys.argv[1:]
for size in {sizes}:
    os.dup2(os.open(f"{{root}}/stderr-{{size}}.txt", os.O_WRONLY | os.O_CREAT), 2)
    sys.argv = ["vae-latent", *overrides, f"hydra.run.dir={{root}}/mnt-{{size}}/run"]
    try:
        cli.train_main()
        code = 0
    except SystemExit as e:
        code = e.code
    gc.collect()  # a writer left half-closed would complain now, into this run's stderr
    open(f"{{root}}/code-{{size}}", "w").write(str(code))
"""


@pytest.fixture(scope="module")
def full_disks(data_root, tmp_path_factory):
    """Real runs on tmpfs mounts of each size (private, in a user namespace); files copied out.

    One process runs the app for both sizes: the mounts are the only difference.
    """
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is missing: cannot mount a small filesystem")
    root = tmp_path_factory.mktemp("disks")
    mounts = "; ".join(
        f"mkdir -p {root}/mnt-{s} && mount -t tmpfs -o size={s} tmpfs {root}/mnt-{s} || exit 99"
        for s in SIZES
    )
    # A denser explorer grid (~1 MB of page) puts the end of the run above 3 MB while training
    # peaks below it (three 0.87 MB checkpoints while the best one is replaced).
    overrides = [
        f"data.root={data_root}", *TINY, "trainer.max_epochs=2", "metrics.iw_samples=0",
        "callbacks.explorer.grid=120",
    ]  # fmt: skip
    (root / "driver.py").write_text(DRIVER.format(sizes=SIZES))
    driver = [sys.executable, str(root / "driver.py"), str(root), *overrides]
    copies = "; ".join(f"cp -a {root}/mnt-{s}/run {root}/copy-{s}" for s in SIZES)
    script = f"{mounts}; {' '.join(driver)}; {copies}"
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True
    )
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {proc.stderr.strip()[:200]}")
    return root


@pytest.mark.parametrize("size", SIZES)
def test_a_full_disk_is_one_line_naming_the_run_dir_and_leaves_no_half_file(full_disks, size):
    code = int((full_disks / f"code-{size}").read_text())
    stderr = (full_disks / f"stderr-{size}.txt").read_text()
    out, mnt = full_disks / f"copy-{size}", full_disks / f"mnt-{size}"
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], stderr
    assert str(mnt) in lines[0] and "/tmp/tmp" not in lines[0]
    assert "Exception ignored" not in stderr and "Traceback" not in stderr
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    for ckpt in out.rglob("*.ckpt"):  # whatever was written is whole
        check_checkpoint(ckpt)
    assert os.path.isdir(out / ".hydra")
    if (out / "metrics.json").exists():  # the failure record, if it still fitted, is whole
        assert read_metrics(out)["status"] == "failed"


def test_data_error_messages_name_the_file(data_root, tmp_path):
    from vae_latent.data import VAEDataModule

    root = _header("count")(data_root, tmp_path)
    dm = VAEDataModule(root=str(root), download=False, val_size=40)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        dm.prepare_data()
