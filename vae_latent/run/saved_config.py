"""A run folder's saved settings read as data: ``.hydra/`` files parsed, never resolved.

Resume (what a run was made with) and the report (a sweep's runs) both read run keys here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vae_latent.errors import ConfigError
from vae_latent.files import read_yaml
from vae_latent.run.keys import RunKey


def read_saved_yaml(path: Path) -> Any:
    """A run folder's YAML file as plain data; unreadable or malformed is a ConfigError."""
    try:
        return read_yaml(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read ({e}); it is damaged") from e


# A key the saved config does not hold (None is a value a config can hold).
ABSENT = object()


def saved_settings(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``.hydra/config.yaml`` as plain YAML data (nothing resolved), or None."""
    path = Path(run_dir, ".hydra", "config.yaml")
    if not path.is_file():
        return None
    data = read_saved_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a mapping; it is damaged")
    return data


def saved_value(
    saved: dict[str, Any] | None, key: RunKey, depth: int = 0, source: str = ".hydra/config.yaml"
) -> Any:
    """``key``'s value in a saved config (``source``); a ``${other.key}`` reference is followed,
    a resolver call (``${name:...}``) is refused: reading a file never runs anything."""
    node: Any = saved
    for part in key.path.split("."):
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    if isinstance(node, str) and "${" in node:
        ref = re.fullmatch(r"\$\{([\w.]+)\}", node)
        if ref is None or depth > 5:
            raise ConfigError(
                f"{source}: {key.path}={node!r} is not a plain value; a run's identity must be "
                "written out (it is read, never resolved)"
            )
        return saved_value(saved, RunKey(key.name, ref.group(1)), depth + 1, source)
    return node
