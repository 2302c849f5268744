"""The one validation layer: every setting checked for type and range before any data is read.

A config node with ``_target_`` is checked against its class's signature: unknown keys, each
value against the parameter's type hint (choices are ``Literal`` hints, defined beside the code
that uses them) and against ``RANGES``; every other leaf needs a rule in ``LEAVES``. A
checkpoint's hyperparameters go through the same checks. The first problem is raised as a
one-line ``ConfigError`` naming the key. Why not Hydra structured configs: they would repeat
every class's signature in a dataclass, a second list to keep in step; this reads the classes.
"""

from __future__ import annotations

import copy
import functools
import inspect
import itertools
import math
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from omegaconf import DictConfig, OmegaConf

from vae_latent.errors import ConfigError

SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range
MAX_LATENT_DIM = 1024  # the model's size, and each picture's, grows with it
MAX_BATCH = 65_536  # larger batches only exhaust memory: an epoch has at most 60,000 images
GIF_MS = 655_350  # a GIF frame's delay is 16 bits of 1/100 s
MAX_PIXELS = 40_000_000  # a picture the tool draws (the default epoch grid: ~0.2 Mpx)
# The IW estimate draws iw_samples latent codes for IW_BATCH images at once, twice (eps and z).
IW_BATCH, IW_BYTES = 50, 2 << 30


@dataclass(frozen=True)
class Rule:
    """A leaf's type (a type hint) and, for numbers, its inclusive bounds."""

    hint: Any
    low: float | None = None
    high: float | None = None
    positive: bool = False  # > 0 (for floats, where "at least" cannot say it)
    pattern: str | None = None  # what a string value must match in full
    says: str = "a count, a list of devices or 'auto'"  # what ``pattern`` allows, in words
    nonzero: bool = False  # 0 means "train nothing": refused


def count(low: int = 0, high: int | None = None) -> Rule:
    return Rule(int, low=low, high=high)


SEED = count(0, SEED_MAX)
POSITIVE = Rule(float, positive=True)
# limit_*_batches: a fraction of the split (0.0-1.0) or a number of batches; null = all.
FRACTION_OR_COUNT = Rule(int | float | None, low=0)
EVERY = count(0)  # every_n_epochs: 0 = never
# A name the run joins to one of its folders (checkpoints/, tensorboard/): one path component,
# never "..", so that nothing is written outside the run directory.
IN_RUN = r"(?!\.\.?$)[^/\\\x00]*"
FILE_NAME = Rule(str | None, pattern=IN_RUN, says="a file name inside the run directory")
FOLDER_NAME = Rule(int | str | None, pattern=IN_RUN, says="a folder name inside the run directory")

# Ranges of the parameters of the classes the configs build, by class and parameter name.
RANGES: dict[str, dict[str, Rule]] = {
    "vae_latent.model.LitVAE": {
        "latent_dim": count(1, MAX_LATENT_DIM),
        "lr": POSITIVE,
        "width": count(1, 16),  # a channel multiplier: 16 is ~256x the study's convs
        "depth": count(0, 8),
        "beta": Rule(float, low=0),
    },
    "vae_latent.data.VAEDataModule": {
        "batch_size": count(1, MAX_BATCH),
        "eval_batch_size": count(1, MAX_BATCH),
        "val_size": count(0),
        "seed": SEED,
    },
    "lightning.pytorch.Trainer": {
        # A count, "auto", or GPU indices such as "0,1" (Lightning's forms).
        "devices": Rule(int | str | list[int], low=1, pattern=r"auto|\d+(,\d+)*,?"),
        "max_epochs": count(1),
        "max_steps": Rule(int, low=-1, nonzero=True),  # -1: no limit
        "log_every_n_steps": count(1),
        "num_sanity_val_steps": count(-1),
        "limit_train_batches": Rule(int | float | None, low=0, nonzero=True),
        "limit_val_batches": FRACTION_OR_COUNT,
        "limit_test_batches": FRACTION_OR_COUNT,
    },
    "lightning.pytorch.callbacks.TQDMProgressBar": {"refresh_rate": count(1)},
    "lightning.pytorch.callbacks.ModelSummary": {"max_depth": count(-1)},
    "vae_latent.callbacks.RunCheckpoint": {"save_top_k": count(-1), "filename": FILE_NAME},
    "lightning.pytorch.loggers.TensorBoardLogger": {
        "name": FOLDER_NAME,
        "version": FOLDER_NAME,
        "sub_dir": FOLDER_NAME,
    },
    "vae_latent.callbacks.EpochGrid": {
        "n_images": count(1, 1024),
        "seed": SEED,
        "scale": count(1, 16),
    },
    "vae_latent.callbacks.TrainingGif": {"duration_ms": count(1, GIF_MS)},
    "vae_latent.callbacks.LatentManifold": {"size": count(2, 100), "every_n_epochs": EVERY},
    "vae_latent.callbacks.LatentTraversal": {
        "max_dims": count(1, MAX_LATENT_DIM),
        "steps": count(2, 100),
        "span": POSITIVE,
        "reference_index": count(0),
        "frame_ms": count(1, GIF_MS),
        "every_n_epochs": EVERY,
    },
    "vae_latent.callbacks.LatentScatter": {"every_n_epochs": EVERY},
    "vae_latent.callbacks.ClassInterpolation": {"steps": count(2, 100), "every_n_epochs": EVERY},
    "vae_latent.callbacks.TensorBoardProjector": {"max_points": count(1, 100_000)},
    "vae_latent.callbacks.Explorer": {
        "max_points": count(1, 100_000),
        "grid": Rule(int | None, low=2, high=200),
        "thumbnails": Rule(int | None, low=0, high=100_000),
    },
    "vae_latent.callbacks.LatentMetricsLog": {
        "every_n_epochs": EVERY,
        "images": count(20, 100_000),
        "seed": SEED,
    },
    "vae_latent.callbacks.TestMetrics": {
        "iw_samples": count(0, 100_000),
        "iw_images": count(1),
        "knn_k": count(1),
        "silhouette_sample": count(2),
        "seed": SEED,
    },
}
# Keys the apps pass themselves when they build the object: setting them in a config is a bug.
APP_FILLED = {"image_shape", "save_dir", "dirpath", "logger", "callbacks", "plugins"}
APP_FILLED |= {"default_root_dir"}
# Leaves outside any ``_target_`` node, per app.
LEAVES: dict[str, dict[str, Rule]] = {
    "train": {"seed": SEED, "resume": Rule(bool | str | None), "logger": Rule(type(None))},
    "eval": {
        "seed": SEED,
        "ckpt": Rule(str),
        "accelerator": Rule(str),
        "logger": Rule(type(None)),
        "sample.n": count(0, 10_000),
        "sample.seed": SEED,
    },
}


def validate(cfg: DictConfig, app: str = "train") -> None:
    """Raise ConfigError for the first setting of ``cfg`` unknown, mistyped or out of range."""
    for key in sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra")):
        what = "a checkpoint file written by vae-latent" if key == "ckpt" else "a value"
        raise ConfigError(f"{key} is not set; pass {key}=<{what}>")
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # an interpolation that does not resolve
        raise ConfigError(f"the config does not resolve: {str(e).splitlines()[0]}") from e
    plain.pop("hydra", None)
    _walk(plain, "", LEAVES[app])
    _cross_checks(plain, app)


def check_object(target: str, values: dict[str, Any], prefix: str) -> None:
    """Values meant for ``target``'s constructor (a checkpoint's hyperparameters, say): each
    must be a parameter of ``target`` (a ``_target_`` among them names nothing to import)."""
    params, _ = signature(target)
    for key in values:
        if key not in params or key == "self":
            known = ", ".join(k for k in params if k != "self")
            raise ConfigError(f"{prefix}{key} is not a setting of {target}; known: {known}"[:400])
    _check_target({**values, "_target_": target}, prefix, app_filled=True)


def _walk(node: dict[str, Any], prefix: str, leaves: dict[str, Rule]) -> None:
    items = list(node.items())
    if not prefix:  # top-level settings first: a bad `seed` is named as itself, not as data.seed
        items.sort(key=lambda item: isinstance(item[1], dict))
    for key, value in items:
        path = f"{prefix}{key}"
        if path == "callbacks":  # free names: each entry is null or builds a callback
            for name, entry in (value or {}).items():
                if entry is not None and not (isinstance(entry, dict) and "_target_" in entry):
                    raise ConfigError(f"callbacks.{name} must name a class with _target_")
                if entry is not None:
                    _check_target(entry, f"callbacks.{name}.")
        elif isinstance(value, dict) and "_target_" in value:
            _check_target(value, f"{path}.")
        elif isinstance(value, dict):
            _walk(value, f"{path}.", leaves)
        elif path in leaves:
            _check(path, value, leaves[path])
        else:
            raise ConfigError(f"{path} is not a setting of this app; check its spelling")


def _check_target(node: dict[str, Any], prefix: str, app_filled: bool = False) -> None:
    target = node["_target_"]
    try:
        params, hints = signature(target)
    except Exception as e:
        raise ConfigError(f"{prefix}_target_={target} cannot be imported") from e
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    ranges = _ranges(target)
    for key, value in node.items():
        path = f"{prefix}{key}"
        if key.startswith("_") and key.endswith("_"):
            continue
        if key in APP_FILLED and key in params and not app_filled:
            raise ConfigError(f"{path} is set by the app itself; remove it from the config")
        if key not in params and not open_kwargs:
            known = ", ".join(k for k in params if k not in APP_FILLED and k != "self")
            raise ConfigError(f"{path} is not a setting of {target}; known: {known}"[:400])
        if key in ranges:
            _check(path, value, ranges[key])
        elif key in hints:
            _check(path, value, Rule(hints[key]))


def _ranges(target: str) -> dict[str, Rule]:
    """``RANGES`` of the class ``target`` names, under whichever import path it is named, and
    of the classes it derives from (a subclass of TQDMProgressBar keeps its bounds)."""
    obj = _resolve(target)
    rules: dict[str, Rule] = {}
    for cls in reversed(inspect.getmro(obj) if inspect.isclass(obj) else (obj,)):
        rules |= next((r for name, r in RANGES.items() if _resolve(name) is cls), {})
    return rules


@functools.cache
def _resolve(target: str) -> Any:
    from hydra.utils import get_object

    return get_object(target)


def _check(path: str, value: Any, rule: Rule) -> None:
    """One leaf against its rule."""
    if conforms(value, rule.hint) is False:
        raise ConfigError(f"{path}={value!r} must be {describe(rule.hint)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if rule.nonzero and value == 0:
            raise ConfigError(f"{path}=0 would train nothing; use a positive value")
        if rule.positive and not 0 < value < float("inf"):
            raise ConfigError(f"{path}={value!r} must be a positive number")
        if rule.low is not None and value < rule.low or rule.high is not None and value > rule.high:
            if rule.low == 1 and rule.high is None and isinstance(value, int):
                raise ConfigError(f"{path}={value!r} must be a positive integer")
            raise ConfigError(f"{path}={value!r} must be {describe(rule.hint)} {_bounds(rule)}")
        if isinstance(value, float) and rule.hint == FRACTION_OR_COUNT.hint and value > 1:
            raise ConfigError(f"{path}={value!r} must be a fraction in [0, 1] or a whole count")
    if (
        rule.pattern is not None
        and isinstance(value, str)
        and not re.fullmatch(rule.pattern, value)
    ):
        raise ConfigError(f"{path}={value!r} must be {rule.says}")


def _bounds(rule: Rule) -> str:
    if rule.high is not None:
        return f"in [{rule.low:g}, {rule.high:,}]"
    return f"≥ {rule.low:g}"


def _cross_checks(cfg: dict[str, Any], app: str) -> None:
    """Settings that are fine alone but not together, or not on this machine."""
    from vae_latent.data.datasets import DATASETS, image_shape

    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    name, channels = data.get("name"), data.get("channels")
    info = DATASETS.get(name)
    val_size, protocol = data.get("val_size"), data.get("protocol", "validation")
    if info and isinstance(val_size, int) and val_size >= info.train_size:
        raise ConfigError(
            f"data.val_size={val_size} must be smaller than {name}'s training split "
            f"({info.train_size:,} images)"
        )
    if app == "train" and protocol == "validation" and val_size == 0:
        raise ConfigError(
            "data.val_size=0 leaves nothing to validate on under protocol=validation; hold out "
            "at least one image, or use protocol=study (the test split each epoch)"
        )
    if channels == "rgb" and info and info.channels == 1:
        raise ConfigError(
            f"channels=rgb needs a colour dataset but {name} has 1 channel; "
            "use channels=native or channels=gray"
        )
    trainer = cfg.get("trainer") or {}
    if app == "train" and info:
        train_images = info.train_size - (val_size or 0) * (protocol == "validation")
        _check_train_fraction(trainer.get("limit_train_batches"), train_images, data, name)
    _check_trainer(trainer, fused=model.get("step") == "fused")
    if app == "train" and trainer.get("limit_test_batches") == 0:
        raise ConfigError(
            "trainer.limit_test_batches=0 would test nothing, and a run's record is its test; "
            "remove it (or use a positive value)"
        )
    if info:
        _check_work_sizes(cfg, image_shape(name, channels) if channels else None)
    accelerator = trainer.get("accelerator", cfg.get("accelerator"))
    check_accelerator(accelerator, "trainer.accelerator" if app == "train" else "accelerator")


def _check_work_sizes(cfg: dict[str, Any], shape: tuple[int, int, int] | None) -> None:
    """Settings whose product sizes memory or a picture: each alone is within its bounds."""
    latent = (cfg.get("model") or {}).get("latent_dim")
    k = (cfg.get("metrics") or {}).get("iw_samples")
    if _ints(latent, k) and 2 * k * IW_BATCH * latent * 4 > IW_BYTES:
        most = IW_BYTES // (2 * IW_BATCH * latent * 4)
        raise ConfigError(
            f"metrics.iw_samples={k} with model.latent_dim={latent} draws {k:,} × {IW_BATCH} × "
            f"{latent} latent codes at once ({2 * k * IW_BATCH * latent * 4 / 2**30:.0f} GiB); use "
            f"metrics.iw_samples ≤ {most:,} at this latent size"
        )
    if shape is None:
        return
    cell = (shape[1] + 2) * (shape[2] + 2)  # an image and its share of the grid's padding
    callbacks = cfg.get("callbacks") or {}
    grid = callbacks.get("epoch_grid") or {}
    n, scale = grid.get("n_images", 16), grid.get("scale", 3)
    if _ints(n, scale) and 3 * n * cell * scale**2 > MAX_PIXELS:
        raise ConfigError(
            f"callbacks.epoch_grid.n_images={n} at scale={scale} draws a picture of "
            f"{3 * n * cell * scale**2 / 1e6:,.0f} million pixels (at most {MAX_PIXELS // 10**6} "
            "million); lower n_images or scale"
        )
    traversal = callbacks.get("latent_traversal") or {}
    dims, steps = traversal.get("max_dims", 10), traversal.get("steps", 11)
    if _ints(dims, steps, latent) and min(dims, latent) * steps * cell * 4 > MAX_PIXELS:
        raise ConfigError(
            f"callbacks.latent_traversal.max_dims={dims} × steps={steps} draws "
            f"{min(dims, latent) * steps:,} decoded images in one picture; lower max_dims or steps"
        )


def _ints(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


def _check_train_fraction(limit: Any, images: int, data: dict[str, Any], name: str) -> None:
    """A fraction of the training batches that leaves at least one (Lightning takes
    int(batches × fraction) and fails only once the data is read)."""
    batch_size = data.get("batch_size")
    if not isinstance(limit, float) or not isinstance(batch_size, int) or batch_size < 1:
        return
    batches = -(-images // batch_size)  # the last, partial batch counts
    if 0 < limit < 1 and int(batches * limit) < 1:
        step = 10.0 ** (math.floor(math.log10(1 / batches)) - 1)  # two significant digits, up
        least = math.ceil(1 / batches / step) * step
        raise ConfigError(
            f"trainer.limit_train_batches={limit!r} is {batches * limit:.2g} of {name}'s "
            f"{batches:,} training batches of {batch_size}: it would train nothing; use at least "
            f"{least:.2g}, or a count of batches such as 1"
        )


def _check_trainer(trainer: dict[str, Any], fused: bool) -> None:
    """32-bit weights (the pictures and metrics run in float32); with ``fused``, none of what
    Lightning adds in the backward and optimizer step that the fused step replaces."""
    precision = str(trainer.get("precision", "32-true"))
    if precision not in ("32-true", "32", "bf16-mixed", "16-mixed"):
        raise ConfigError(
            f"trainer.precision={precision}: the weights must stay 32-bit (the pictures and "
            "metrics run in float32); use 32-true, or bf16-mixed or 16-mixed for mixed precision"
        )
    if not fused:
        return
    from vae_latent.model.fused_step import fused_refusal  # the one list of its conditions

    if refusal := fused_refusal(trainer):
        raise ConfigError(refusal)


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")


def check_accelerator(name: Any, key: str) -> None:
    """An accelerator this machine has (Lightning would fail only once the Trainer is built)."""
    import torch

    if name is None or not isinstance(name, str):
        return
    if name not in ACCELERATORS:
        raise ConfigError(f"{key}={name!r} is unknown; use one of {', '.join(ACCELERATORS)}")
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        hint = "trainer=cpu or trainer.accelerator=auto" if "." in key else "accelerator=auto"
        raise ConfigError(
            f"{key}={name} but this machine has no CUDA GPU that torch can use; use {hint}"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}=mps but MPS is not available here; use trainer.accelerator=auto")


# --- plain config values (YAML data) against Python type hints -----------------------------
def conforms(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` (plain YAML data) has the type ``hint``; None where it cannot tell."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None) or hint is None:
        return value is None
    if origin in (Union, types.UnionType):
        answers = [conforms(value, a) for a in args]
        return True if True in answers else None if None in answers else False
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        return all(conforms(v, args[0]) is not False for v in value) if args else True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (Path, os.PathLike):
        return isinstance(value, str)
    if inspect.isclass(hint):  # e.g. an Accelerator object: config values are never those
        return False
    return None


def describe(hint: Any) -> str:
    """A type hint in words: 'an integer', 'one of mc, analytic', 'a list of integers'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        parts = list(dict.fromkeys(p for p in parts if p))
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (list, tuple):
        item = describe(args[0]).removeprefix("a ").removeprefix("an ") if args else ""
        return f"a list of {item}s" if item else "a list"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if hint in (Path, os.PathLike):
        return "a path"
    return ""


@functools.cache
def signature(target: str) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    """The parameters and type hints of the class or function a ``_target_`` names."""
    cls = _resolve(target)
    params = dict(inspect.signature(cls).parameters)
    try:
        hints = typing.get_type_hints(cls.__init__ if inspect.isclass(cls) else cls)
    except Exception:  # hints that do not evaluate on this Python: check names only
        hints = {}
    return params, hints


# --- a multirun as a whole ---------------------------------------------------------------
# Up to this many jobs, every combination of the swept values is validated; past it, each
# value of each swept key, with the other keys at their first value.
WHOLE_SWEEP = 64


def validate_sweep(task: list[str], params: dict[str, str] | None, app: str = "train") -> None:
    """Every job a basic sweep would launch, checked before the first runs: the task overrides
    and the sweeper's ``params`` expanded as Hydra's BasicSweeper expands them. ConfigError,
    naming the first job that cannot run and how many jobs the sweep has."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from vae_latent.run.config import compose_config, conf_dir

    parser = OverridesParser.create()
    swept: dict[str, list[str]] = {}  # key as typed (+tier) -> its values, as BasicSweeper does
    for o in parser.parse_overrides([f"{k}={v}" for k, v in (params or {}).items()]):
        swept[o.get_key_element()] = [str(v) for v in o.sweep_string_iterator()]
    fixed = []
    for o in parser.parse_overrides(task):
        if o.is_sweep_override():
            swept[o.get_key_element()] = [str(v) for v in o.sweep_string_iterator()]
        else:
            fixed.append(o.input_line)
    if not swept:
        return
    jobs = math.prod(len(v) for v in swept.values())
    keys = list(swept)

    def check(choice: dict[str, str], plain: dict[str, Any] | None = None) -> None:
        overrides = _pairs(choice)
        try:
            if plain is None:
                validate(compose_config([*fixed, *overrides]), app)
            else:
                _walk(plain, "", LEAVES[app])
                _cross_checks(plain, app)
        except ConfigError as e:
            raise ConfigError(
                f"the sweep of {jobs:,} job(s) is refused before its first: the job with "
                f"{' '.join(overrides)}: {e}"
            ) from None
        except Exception as e:  # Hydra cannot compose that job (an unknown option)
            line = (str(e).splitlines() or [""])[0]
            raise ConfigError(
                f"the sweep of {jobs:,} job(s) is refused before its first: the job with "
                f"{' '.join(overrides)} does not compose: {line}"
            ) from None

    if jobs <= WHOLE_SWEEP:
        for values in itertools.product(*swept.values()):
            check(dict(zip(keys, values, strict=True)))
        return
    first = {k: v[0] for k, v in swept.items()}
    check(first)  # the first job in full; then each value as it changes one key of it
    base = OmegaConf.to_container(compose_config([*fixed, *_pairs(first)]), resolve=True)
    base.pop("hydra", None)
    for key, values in swept.items():
        group = Path(conf_dir(), key.lstrip("+~")).is_dir()  # a config group: compose each
        for value in values:
            choice = {**first, key: value}
            if group:
                check(choice)
                continue
            plain = copy.deepcopy(base)
            node, *path = [plain, *key.lstrip("+").split(".")]
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = parser.parse_override(f"{key}={value}").value()
            check(choice, plain)


def _pairs(choice: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in choice.items()]
