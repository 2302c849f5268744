"""A run directory owned by one process: its lock, its .hydra/ record and its log file.

The process holds the directory itself, not its name: every file of the run is read and written
through ``RunDir.root``, the held directory (``/proc/self/fd/N`` on Linux), so a run folder
renamed, or swapped for a link, while the run is going on still receives the run's files, and
nothing is written where the link points.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vae_latent.errors import RunDirBusy, UserError
from vae_latent.files import held, save_atomic
from vae_latent.text import OneLineFormatter

LOG_FORMAT = "[%(asctime)s][%(levelname)s] %(message)s"
log = logging.getLogger(__name__)


class RunDirLock:
    """An OS lock on a run directory: one process writes a run at a time.

    ``flock`` on the directory itself: no lock file is left behind, and the kernel releases the
    lock when the process dies, SIGKILL included. Without fcntl (Windows) it does nothing.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirBusy(
                f"{self.run_dir} is in use by another run (locked); wait for it to finish or "
                "choose another hydra.run.dir"
            ) from None
        except OSError as e:  # e.g. NFS, where flock is emulated by locks a read-only fd lacks
            os.close(fd)
            log.warning("cannot lock %s (%s): two runs in it at once are not prevented here",
                        self.run_dir, e.strerror)  # fmt: skip
            return
        self._fd = fd

    @property
    def fd(self) -> int | None:
        """The open descriptor of the locked directory, or None where there is no lock."""
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def has_run(run_dir: Path) -> bool:
    """Whether a run has already started in ``run_dir`` (more than a refused start's .hydra/)."""
    names = ("metrics.json", "checkpoints", "tensorboard")
    return any(Path(run_dir, name).exists() for name in names)


def _utf8(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept as surrogates by Python
        return False
    return True


def process_rank() -> int:
    """This process's rank in a multi-process (DDP) run, from the launcher's environment.

    The same variables, in the same order, as Lightning reads: a rank > 0 is a process that
    Lightning started for a run rank 0 already owns.
    """
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


class RunDir:
    """A run directory this process holds the lock of; ``start`` writes .hydra/, opens the log.

    ``path`` is its name, for messages; ``root`` the held directory, for every file (the same
    path where the directory cannot be held: no lock, or no /proc). In a process of rank > 0
    it holds no lock and writes nothing: rank 0 owns the directory.
    """

    def __init__(self, path: Path, writer: bool = True, fd: int | None = None) -> None:
        self.path = Path(path)
        self.writer = writer
        self.root = held(self.path, fd)
        # An earlier run is there: touch it only once the new one starts (rank 0 decides).
        self.existing = writer and has_run(self.root)
        self._log: logging.Handler | None = None

    def start(self, files: dict[str, Any]) -> None:
        """.hydra/ (the composed config and the overrides a resume composes again), then cli.log."""
        if not self.writer:
            return
        for name, content in files.items():
            save_atomic(self.root / ".hydra" / name, OmegaConf.to_yaml(content).encode())
        if self._log is None:
            self._log = logging.FileHandler(self.root / "cli.log", delay=True)
            self._log.setFormatter(OneLineFormatter(LOG_FORMAT, "%H:%M:%S"))
            logging.getLogger().addHandler(self._log)

    def close(self) -> None:
        if self._log is not None:
            logging.getLogger().removeHandler(self._log)
            self._log.close()
            self._log = None


@contextlib.contextmanager
def claimed(path: Path) -> Iterator[RunDir]:
    """The run directory, locked for this process until the block ends (rank 0 only)."""
    writer = process_rank() == 0
    lock = RunDirLock(path)
    try:
        if writer:
            lock.acquire()
        run_dir = RunDir(path, writer, lock.fd)
        if run_dir.root == run_dir.path and not _utf8(run_dir.path):
            raise UserError(
                f"{run_dir.path} is not a UTF-8 path, which TensorBoard cannot write to here; "
                "choose a run directory whose path is UTF-8 (hydra.run.dir)"
            )
    except OSError as e:  # e.g. under /proc, on /dev/full, on a read-only disk
        lock.release()
        raise UserError(
            f"cannot create the run directory {path} ({e.strerror}); choose another hydra.run.dir"
        ) from e
    except BaseException:
        lock.release()
        raise
    try:
        yield run_dir
    except OSError as e:
        if e.filename is None and e.errno is not None:  # e.g. TensorBoard's writer thread
            raise OSError(e.errno, e.strerror, str(run_dir.path)) from e
        raise
    finally:
        run_dir.close()
        lock.release()
