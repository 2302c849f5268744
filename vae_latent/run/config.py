"""Composing the apps' configs (also outside a Hydra run), and the resolvers they use."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vae_latent.run.keys import job_dirname_excludes


def short_dirname(name: str, limit: int = 200) -> str:
    """A job directory name a filesystem takes (255 bytes at most): long ones end in a hash."""
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return name.encode()[: limit - 11].decode(errors="ignore") + "-" + digest


# Two sweeps started in the same second must not share a directory (conf/hydra/default.yaml).
OmegaConf.register_new_resolver("vae_pid", lambda: str(os.getpid()), replace=True)
OmegaConf.register_new_resolver("vae_dirname", short_dirname, replace=True)
# What a job's folder name leaves out, from the run-keys table (conf/hydra/default.yaml).
OmegaConf.register_new_resolver("vae_dirname_excludes", job_dirname_excludes, replace=True)


def tiers_present(root: str) -> str:
    """The study's tiers whose files are under ``root``, as a sweep value ("mnist,fashion_mnist");
    the others are named on stderr as skipped (experiment=paper_capacity)."""
    from vae_latent.data.datasets import DATASETS, TIERS, expected_files

    folder = Path(root).expanduser().resolve()

    def present(tier: str) -> bool:
        return all(p.is_file() for p in expected_files(folder, DATASETS[TIERS[tier].dataset]))

    found = [t for t in TIERS if present(t)]
    skipped = [t for t in TIERS if t not in found]
    if skipped and (folder, tuple(skipped)) not in _SAID:  # resolved more than once a sweep
        _SAID.add((folder, tuple(skipped)))
        print(
            f"vae-latent: skipping tier(s) {', '.join(skipped)}: their files are not under "
            f"{folder} (data.root); a single run with data.download=true fetches them",
            file=sys.stderr,
        )
    return ",".join(found or list(TIERS))  # none: every job says what is missing


_SAID: set[tuple[Path, tuple[str, ...]]] = set()
OmegaConf.register_new_resolver("vae_tiers_present", tiers_present, replace=True)


def conf_dir() -> str:
    """conf/ inside an installed wheel, else the repo's top-level conf/ (editable install)."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "conf"
    return str(packaged if packaged.is_dir() else package.parent / "conf")


def compose_config(overrides: list[str], config_name: str = "train") -> DictConfig:
    """The config an app would compose from these overrides, inside a Hydra run (its config
    search path) or outside one."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # e.g. a multirun's start, checking its jobs
        return compose(config_name, overrides=overrides)
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name, overrides=overrides)
