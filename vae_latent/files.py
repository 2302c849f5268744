"""Files a run writes and reads: atomic writes (all or nothing); bounded reads of files that may
come from anyone (regular files only, each read once with a size bound, parsed with depth and
type checks)."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Size bounds of the files the tool reads (one of ours is far below each).
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
# Nesting and size bounds of a parsed JSON or YAML file (ours nest 4 deep, with < 10,000 values).
MAX_DEPTH, MAX_NODES = 32, 200_000


class FileRefused(ValueError):
    """A file that is not read or not parsed: not a regular file, too large, or malformed."""


# Held run directories: the path that reaches each through its open descriptor -> its name.
_HELD: dict[str, str] = {}


def held(path: Path, fd: int | None) -> Path:
    """The directory open as ``fd`` (named ``path``), as a path that reaches it whatever later
    happens to its name: ``/proc/self/fd/<fd>`` where the system has it, else ``path``."""
    proc = Path(f"/proc/self/fd/{fd}")
    if fd is None or not proc.is_dir() or not os.path.samefile(proc, path):
        return Path(path)
    _HELD[str(proc)] = str(path)
    return proc


def shown(text: object) -> str:
    """``text`` (a path, a message) with every held run directory named as the user named it,
    not by the descriptor path it is held by. The names stay known after the run ends: its
    errors reach the user then."""
    text = str(text)
    for root, name in _HELD.items():
        if root in text:
            text = re.sub(re.escape(root) + r"(?![0-9])", name.replace("\\", "\\\\"), text)
    return text


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


def read_bytes(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file at ``path``, read once; ``FileRefused`` for a FIFO, a device
    or a folder (never waited on: it is opened non-blocking and not read) and for a file of more
    than ``limit`` bytes. OSError as the system gives it."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileRefused(f"{Path(path).name} is not a regular file ({_kind(mode)})")
        chunks, size = [], 0
        while chunk := os.read(fd, min(limit + 1 - size, 16 * MiB) or 1):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise FileRefused(f"{Path(path).name} is larger than {_size(limit)}")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISDIR: "a folder", stat.S_ISSOCK: "a socket"}
    kinds |= {stat.S_ISCHR: "a device", stat.S_ISBLK: "a device"}
    return next((name for test, name in kinds.items() if test(mode)), "not a file")


def _size(n: int) -> str:
    return f"{n // GiB} GiB" if n >= GiB else f"{n // MiB} MiB" if n >= MiB else f"{n // KiB} KiB"


def plain_tree(data: Any, what: str) -> Any:
    """``data`` if it is a tree of plain values (dicts with string keys, lists, strings,
    numbers, booleans, None) at most ``MAX_DEPTH`` deep and ``MAX_NODES`` large, with no
    node twice (a YAML alias, which a copy would expand); ``FileRefused`` naming ``what``."""
    seen, stack, count = set(), [(data, 0)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH or count > MAX_NODES:
            raise FileRefused(f"{what} nests deeper or holds more than this tool's files do")
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                raise FileRefused(f"{what} repeats a node (a YAML alias); write it out")
            seen.add(id(node))
            if isinstance(node, dict) and not all(isinstance(k, str) for k in node):
                raise FileRefused(f"{what} has a key that is not text")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
        elif node is not None and not isinstance(node, (str, int, float, bool, datetime.date)):
            raise FileRefused(f"{what} holds a {type(node).__name__}, not a plain value")
    return data


def read_json(path: Path, limit: int = 4 * MiB) -> dict[str, Any]:
    """A JSON object from ``path`` (bounded, plain); ValueError with the reason if it is damaged
    or not an object."""
    data = _read_plain(
        path, limit, json.loads, json.JSONDecodeError, lambda e: f"JSON (truncated?): {e.msg}"
    )
    if not isinstance(data, dict):
        raise FileRefused(f"{Path(path).name} holds a {type(data).__name__}, not an object")
    return data


def read_yaml(path: Path, limit: int = 1 * MiB) -> Any:
    """Plain YAML from ``path`` (bounded, safe: no tags, no aliases, no objects); ValueError
    with the reason if it is damaged."""
    import yaml

    # libyaml's safe loader where PyYAML has it (10× faster: a report reads one per run)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return _read_plain(
        path,
        limit,
        lambda text: yaml.load(text, Loader=loader),  # noqa: S506 (a safe loader)
        yaml.YAMLError,
        lambda e: f"YAML: {type(e).__name__}",
    )


def _read_plain(
    path: Path,
    limit: int,
    parse: Callable[[str], Any],
    syntax: type[Exception],
    why: Callable[[Any], str],
) -> Any:
    """``parse`` of the text at ``path`` (bounded), checked plain (``plain_tree``); each way it
    can be damaged named in a ``FileRefused``."""
    name = Path(path).name
    try:
        data = parse(read_bytes(path, limit).decode("utf-8"))
    except UnicodeDecodeError as e:
        raise FileRefused(f"{name} is not text (binary or damaged)") from e
    except syntax as e:
        raise FileRefused(f"{name} is not valid {why(e)}") from e
    except RecursionError as e:
        raise FileRefused(f"{name} nests deeper than this tool's files do") from e
    return plain_tree(data, name)


def read_csv_floats(path: Path, limit: int = 16 * MiB) -> list[dict[str, float]]:
    """A CSV file of numbers (latent_metrics.csv) as rows of floats, empty cells left out
    (bounded); ValueError with the reason if it is damaged."""
    import csv

    name = Path(path).name
    try:
        text = read_bytes(path, limit).decode("utf-8")
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(io.StringIO(text, newline=""))
        ]
    except UnicodeDecodeError as e:
        raise FileRefused(f"{name} is not text (binary or damaged)") from e
    except (csv.Error, TypeError) as e:
        raise FileRefused(f"{name} is not a CSV of numbers: {e}") from e
    except ValueError as e:
        if isinstance(e, FileRefused):
            raise
        raise FileRefused(f"{name} holds a value that is not a number") from e


# An image the tool reads back (its own pictures: an epoch grid, a manifold) is < 3 Mpixels.
MAX_PIXELS = 40_000_000


def read_image(path: Path, limit: int = 64 * MiB) -> Any:
    """A PNG the tool drew, as imageio reads it (bounded: the bytes, and the pixels from the
    header before anything is decoded, so a small file cannot decode to gigabytes); ValueError
    if it is not an image."""
    import imageio.v3 as iio
    from PIL import Image, UnidentifiedImageError

    name = Path(path).name
    data = read_bytes(path, limit)
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            if image.width * image.height > MAX_PIXELS:
                raise FileRefused(f"{name} is {image.width}×{image.height} pixels, too large")
        return iio.imread(data)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise FileRefused(f"{name} is not an image this tool drew: {type(e).__name__}") from e
