"""Errors a user can act on: the CLI prints the message as one line and exits with ``exit_code``."""

from __future__ import annotations

import errno

from vae_latent.files import shown


class UserError(Exception):
    """A problem with the user's input, configuration or files (not a bug)."""

    exit_code = 2


class ConfigError(UserError):
    """A configuration value or combination that cannot work."""


class DataError(UserError):
    """Dataset or checkpoint files missing, unreadable or not downloadable."""


class RunDirBusy(UserError):
    """Another process holds the run directory: nothing may be written there."""


class Interrupted(UserError):
    """Ctrl-C or SIGTERM: the run stops, recorded as incomplete; exit 128 + the signal."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteLoss(UserError):
    """Training diverged: the loss became NaN or infinite."""

    exit_code = 1


_CANNOT_WRITE = {
    errno.ENOSPC,
    errno.EACCES,
    errno.EROFS,
    errno.EDQUOT,
    errno.ENOTDIR,
    errno.EPERM,
    errno.ENAMETOOLONG,
}


def user_error(e: BaseException | None) -> UserError | None:
    """The UserError behind ``e``, if any (``instantiate`` and Lightning wrap what they call).

    A failed write (disk full, read-only or not a directory) is the user's to fix too, and so
    is any other error of the system about a file it names: one line, with the file's name.
    """
    while e is not None:
        if isinstance(e, UserError):
            return e
        if isinstance(e, OSError) and e.errno in _CANNOT_WRITE:
            where = shown(e.filename) if e.filename else "the run directory"
            return UserError(f"cannot write {where}: {e.strerror}; free space or choose a writable "
                             "hydra.run.dir, then resume=<run dir>")  # fmt: skip
        if isinstance(e, OSError) and e.errno and e.filename:
            return UserError(f"{shown(e.filename)}: {e.strerror}")
        e = e.__cause__ or e.__context__
    return None
