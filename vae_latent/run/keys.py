"""What a run is: one table of its keys, from which every list of keys in the tool is derived.

Resume (what it may not change), the record (metrics.json), TensorBoard's HPARAMS, the failure
record, the sweep report (its columns, seed pooling, recipes) and Hydra's job folder names all
read ``RUN_KEYS`` and ``PLUMBING`` through the functions below, so a new setting (a β, say) is
one line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunKey:
    """One setting that says what a run computed.

    ``path`` is where the composed config holds it, and also the object and hyperparameter that
    carry it (``model.lr`` is ``LitVAE(lr=...)``, saved in the checkpoint's hyper_parameters).
    """

    name: str  # its name in metrics.json, summary.csv and TensorBoard's HPARAMS
    path: str
    kind: type = str  # the type of its value (int, float, str, bool)
    identity: bool = True  # a resume may not change it: the checkpoint cannot continue
    recipe: bool = False  # tiers are compared only between runs of the same recipe
    hparam: bool = True  # shown in TensorBoard's HPARAMS tab
    legacy: Any = None  # its value in runs made before the key existed

    @property
    def section(self) -> str:
        """``data``, ``model``, ``trainer``, or ``""`` for a top-level key."""
        return self.path.rpartition(".")[0]

    @property
    def leaf(self) -> str:
        return self.path.rpartition(".")[2]


RUN_KEYS: list[RunKey] = [
    RunKey("dataset", "data.name"),
    RunKey("channels", "data.channels"),
    RunKey("binarize", "data.binarize", bool),
    RunKey("protocol", "data.protocol", recipe=True, legacy="validation"),
    RunKey("val_size", "data.val_size", int, hparam=False),
    RunKey("split_seed", "data.seed", int, hparam=False),
    RunKey("batch_size", "data.batch_size", int, recipe=True),
    RunKey("latent_dim", "model.latent_dim", int),
    RunKey("kl", "model.kl", recipe=True),
    RunKey("likelihood", "model.likelihood", recipe=True, legacy="bernoulli"),
    RunKey("lr", "model.lr", float, recipe=True),
    RunKey("init", "model.init", recipe=True, legacy="torch"),
    RunKey("width", "model.width", int, recipe=True, legacy=1),
    RunKey("depth", "model.depth", int, recipe=True, legacy=0),
    RunKey("beta", "model.beta", float, recipe=True, legacy=1.0),
    RunKey("max_epochs", "trainer.max_epochs", int, identity=False, recipe=True, hparam=False),
    RunKey("seed", "seed", int, identity=False),  # repeats of one configuration differ only here
]
# Settings that never change what a run computes, each with the apps that take it: left out of
# job folder names (both apps' configs ask the vae_dirname_excludes resolver) and of the hash
# that matches repeats of a configuration over seeds.
PLUMBING: dict[str, tuple[str, ...]] = {
    "ckpt": ("eval",),  # the checkpoint's path
    "data.root": ("train", "eval"),
    "data.download": ("train", "eval"),
    "resume": ("train",),
}


def identity_keys() -> list[RunKey]:
    """What a resume may not change."""
    return [k for k in RUN_KEYS if k.identity]


def recipe_names() -> list[str]:
    """The report compares tiers only within one value of each of these."""
    return [k.name for k in RUN_KEYS if k.recipe]


def names() -> list[str]:
    return [k.name for k in RUN_KEYS]


def hparam_keys() -> list[RunKey]:
    return [k for k in RUN_KEYS if k.hparam]


def plumbing(app: str = "train") -> list[str]:
    """The plumbing settings of ``app`` (``train`` or ``eval``)."""
    return [key for key, apps in PLUMBING.items() if app in apps]


def not_the_experiment() -> list[str]:
    """Config paths that do not make another experiment: the seed, and the plumbing."""
    return [k.path for k in RUN_KEYS if k.name == "seed"] + plumbing()


def job_dirname_excludes(app: str = "train") -> list[str]:
    """Overrides left out of a multirun job's folder name (Hydra's override_dirname), for
    ``app`` (``train`` or ``eval``: conf/hydra/default.yaml and conf/eval.yaml)."""
    return [*plumbing(app), "hydra.run.dir", "hydra.sweep.dir"]


def fits(key: RunKey, value: Any) -> bool:
    """Whether ``value`` (from a file) is None or of ``key``'s type (an int passes as a float)."""
    if value is None:
        return True
    if key.kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if key.kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, key.kind)


def from_config(cfg: Any, key: RunKey) -> Any:
    """``key``'s value in a composed config (its legacy value when the config predates it)."""
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key.path, default=None, throw_on_resolution_failure=False)
    return key.legacy if value is None else value


def from_objects(key: RunKey, hparams: dict[str, dict[str, Any]], seed: int) -> Any:
    """``key``'s value as the built objects hold it (``hparams`` by section: data, model...)."""
    if not key.section:
        return seed
    return hparams.get(key.section, {}).get(key.leaf, key.legacy)
