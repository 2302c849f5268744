"""Files a run writes and reads: atomic writes (all or nothing), JSON."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def save_atomic(path: Path, data: bytes | Callable[[io.BytesIO], Any]) -> None:
    """Write ``data`` (bytes, or a function that writes into a buffer) all at once or not at all.

    The bytes are made in memory first, so a writer that fails mid-way (imageio, PIL, torch)
    never touches the disk; then a temp file in the same folder is synced and renamed over
    ``path``. A full disk leaves the previous file as it was and names ``path`` in the error.
    """
    if not isinstance(data, bytes):
        buffer = io.BytesIO()
        data(buffer)
        data = buffer.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.unlink(missing_ok=True)  # a leftover, or a link planted there: never written through
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(tmp, flags, 0o644), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a power cut leaves old or new
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    """JSON, indented, written atomically."""
    save_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ValueError with the reason if it is damaged or not an object."""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError("metrics.json is not text (binary or damaged)") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"metrics.json is not valid JSON (truncated?): {e.msg}") from e
    if not isinstance(data, dict):
        raise ValueError(f"metrics.json holds a {type(data).__name__}, not an object")
    return data
