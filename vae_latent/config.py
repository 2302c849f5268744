"""Configs outside a Hydra run, a resumed run's overrides, and what a resume may not change."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_latent.errors import ConfigError


def short_dirname(name: str, limit: int = 200) -> str:
    """A job directory name a filesystem takes (255 bytes at most): long ones end in a hash."""
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return name.encode()[: limit - 11].decode(errors="ignore") + "-" + digest


# Two sweeps started in the same second must not share a directory (conf/hydra/default.yaml).
OmegaConf.register_new_resolver("vae_pid", lambda: str(os.getpid()), replace=True)
OmegaConf.register_new_resolver("vae_dirname", short_dirname, replace=True)

# What a checkpoint cannot continue with: the architecture, the data and its split, the recipe
# whose state (optimizer moments, lr) travels in the checkpoint. A resume must not change them.
RUN_IDENTITY = (
    "data.name",
    "data.channels",
    "data.binarize",
    "data.protocol",
    "data.val_size",
    "data.seed",
    "data.batch_size",
    "model.latent_dim",
    "model.kl",
    "model.likelihood",
    "model.lr",
)


def conf_dir() -> str:
    """conf/ inside an installed wheel, else the repo's top-level conf/ (editable install)."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if packaged.is_dir() else here.parent / "conf")


def compose_config(overrides: list[str], config_name: str = "train") -> DictConfig:
    """The config an app would compose from these overrides, outside a Hydra run."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name, overrides=overrides)


def saved_config(run_dir: Path) -> DictConfig | None:
    """The config a run was made with (its .hydra/config.yaml), or None if it has none."""
    path = Path(run_dir, ".hydra", "config.yaml")
    if not path.is_file():
        return None
    try:
        return OmegaConf.load(path)
    except Exception as e:
        raise ConfigError(f"{path} cannot be read ({type(e).__name__}); it is damaged") from e


def resumed_overrides(run_dir: Path, new: list[str]) -> list[str]:
    """The run's saved command-line overrides, then this command's: later ones win.

    Parsed with Hydra's own override parser, so group overrides (``dataset=...``), additions
    (``+key=``) and deletions (``~key``) keep their meaning when Hydra composes them again.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = Path(run_dir, ".hydra", "overrides.yaml")
    if not path.is_file():
        raise ConfigError(
            f"resume={run_dir} is not a run directory (no .hydra/overrides.yaml); pass the "
            "folder that holds checkpoints/ and .hydra/ of an earlier run"
        )
    try:
        saved = [str(o) for o in OmegaConf.load(path)]
    except Exception as e:
        raise ConfigError(f"{path} cannot be read ({type(e).__name__}); it is damaged") from e
    parser = OverridesParser.create()
    parsed_new = parser.parse_overrides(new)
    replaced = {o.key_or_group for o in parsed_new if o.type.name != "DEL"}
    kept = [o.input_line for o in parser.parse_overrides(saved) if o.key_or_group not in replaced]
    return [o for o in kept if not o.startswith("resume=")] + new


def _select(cfg: Any, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)


def continuation_conflict(saved: DictConfig, cfg: DictConfig) -> str | None:
    """The first identity setting that differs between a run's saved config and ``cfg``."""
    for key in RUN_IDENTITY:
        before, after = _select(saved, key), _select(cfg, key)
        if key == "data.protocol":  # runs made before protocols existed used the validation split
            before = before or "validation"
        if before != after:
            return (
                f"{key}={after} but the run was made with {key}={before}: its checkpoint cannot "
                "continue with another architecture, data or recipe; start a new run in another "
                "hydra.run.dir instead"
            )
    return None
