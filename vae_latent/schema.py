"""Every setting the apps read, checked for type and range before any data is read.

A node with ``_target_`` is checked against its class's signature (unknown keys, and each value
against the parameter's type hint) and against ``RANGES``; every other leaf needs a rule in
``LEAVES``. The first problem is raised as a one-line ``ConfigError`` naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_latent.errors import ConfigError
from vae_latent.hints import conforms, describe, signature

SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range
# The choices of some settings; the code that uses them imports them from here.
KL_ESTIMATORS = ("mc", "analytic")  # model.kl
LIKELIHOODS = ("bernoulli", "continuous_bernoulli")  # model.likelihood
STEPS = ("auto", "lightning", "fused")  # model.step
MANIFOLD_GRIDS = ("prior", "posterior", "both")  # callbacks.latent_manifold.grid
TRAVERSAL_RANGES = ("prior", "posterior")  # callbacks.latent_traversal.ranges


@dataclass(frozen=True)
class Rule:
    """A leaf's type (a type hint) and, for numbers, its inclusive bounds or choices."""

    hint: Any
    low: float | None = None
    high: float | None = None
    positive: bool = False  # > 0 (for floats, where "at least" cannot say it)
    choices: tuple | None = None
    pattern: str | None = None  # what a string value must match in full


def count(low: int = 0, high: int | None = None) -> Rule:
    return Rule(int, low=low, high=high)


SEED = count(0, SEED_MAX)
POSITIVE = Rule(float, positive=True)
# limit_*_batches: a fraction of the split (0.0-1.0) or a number of batches; null = all.
FRACTION_OR_COUNT = Rule(int | float | None, low=0)

# Ranges of parameters of the classes the configs build, by class path and parameter name.
RANGES: dict[str, dict[str, Rule]] = {
    "vae_latent.model.ConvVAE": {
        "latent_dim": count(1),
        "lr": POSITIVE,
        "step": Rule(str, choices=STEPS),
    },
    "vae_latent.data.VAEDataModule": {
        "batch_size": count(1),
        "eval_batch_size": count(1),
        "val_size": count(0),
        "seed": SEED,
    },
    "lightning.pytorch.Trainer": {
        # A count, "auto", or GPU indices such as "0,1" (Lightning's forms).
        "devices": Rule(int | str | list[int], low=1, pattern=r"auto|\d+(,\d+)*,?"),
        "max_epochs": count(1),
        "log_every_n_steps": count(1),
        "num_sanity_val_steps": count(-1),
        "limit_train_batches": FRACTION_OR_COUNT,
        "limit_val_batches": FRACTION_OR_COUNT,
        "limit_test_batches": FRACTION_OR_COUNT,
    },
    "lightning.pytorch.callbacks.TQDMProgressBar": {"refresh_rate": count(1)},
    "lightning.pytorch.callbacks.ModelSummary": {"max_depth": count(-1)},
    "vae_latent.checkpoint.RunCheckpoint": {
        "save_top_k": count(-1),
        "mode": Rule(str, choices=("min", "max")),
    },
    "vae_latent.callbacks.EpochGrid": {"n_images": count(1), "seed": SEED, "scale": count(1)},
    "vae_latent.callbacks.TrainingGif": {"duration_ms": count(1)},
    "vae_latent.callbacks.LatentManifold": {
        "size": count(2),
        "grid": Rule(str, choices=MANIFOLD_GRIDS),
        "every_n_epochs": count(0),
    },
    "vae_latent.callbacks.LatentTraversal": {
        "max_dims": count(1),
        "steps": count(2),
        "span": POSITIVE,
        "reference_index": count(0),
        "ranges": Rule(str, choices=TRAVERSAL_RANGES),
        "frame_ms": count(1),
        "every_n_epochs": count(0),
    },
    "vae_latent.callbacks.LatentScatter": {"every_n_epochs": count(0)},
    "vae_latent.callbacks.ClassInterpolation": {"steps": count(2), "every_n_epochs": count(0)},
    "vae_latent.callbacks.TensorBoardProjector": {"max_points": count(1)},
    "vae_latent.epoch_metrics.LatentMetricsLog": {
        "every_n_epochs": count(0),
        "images": count(20),
        "seed": SEED,
    },
}
# Keys the apps pass themselves when they build the object: setting them in a config is a bug.
APP_FILLED = {"image_shape", "save_dir", "dirpath", "logger", "callbacks", "plugins"}
APP_FILLED |= {"default_root_dir"}
_METRICS = {
    "metrics.iw_samples": count(0),
    "metrics.iw_images": count(1),
    "metrics.knn_k": count(1),
    "metrics.silhouette_sample": count(2),
    "metrics.seed": SEED,
}
# Leaves outside any ``_target_`` node, per app.
LEAVES: dict[str, dict[str, Rule]] = {
    "train": {
        "seed": SEED,
        "resume": Rule(bool | str | None),
        "logger": Rule(type(None)),  # logger=none
        **_METRICS,
    },
    "eval": {
        "seed": SEED,
        "ckpt": Rule(str),
        "accelerator": Rule(str),
        "data.root": Rule(str),
        "data.download": Rule(bool),
        "data.name": Rule(str | None),
        "data.channels": Rule(str | None),
        "data.binarize": Rule(bool | None),
        "data.eval_batch_size": count(1),
        "data.val_size": count(0),
        "data.protocol": Rule(str | None),
        "logger": Rule(type(None)),
        "sample.n": count(0),
        "sample.seed": SEED,
        **_METRICS,
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


def _check_target(node: dict[str, Any], prefix: str) -> None:
    target = node["_target_"]
    try:
        params, hints = signature(target)
    except Exception as e:
        raise ConfigError(f"{prefix}_target_={target} cannot be imported") from e
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    ranges = RANGES.get(target, {})
    for key, value in node.items():
        path = f"{prefix}{key}"
        if key.startswith("_") and key.endswith("_"):
            continue
        if key in APP_FILLED and key in params:
            raise ConfigError(f"{path} is set by the app itself; remove it from the config")
        if key not in params and not open_kwargs:
            known = ", ".join(k for k in params if k not in APP_FILLED and k != "self")
            raise ConfigError(f"{path} is not a setting of {target}; known: {known}"[:400])
        if key in ranges:
            _check(path, value, ranges[key])
        elif key in hints:
            _check(path, value, Rule(hints[key]))


def _check(path: str, value: Any, rule: Rule) -> None:
    """One leaf against its rule."""
    if conforms(value, rule.hint) is False:
        raise ConfigError(f"{path}={value!r} must be {describe(rule.hint)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
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
        raise ConfigError(f"{path}={value!r} must be a count, a list of devices or 'auto'")
    if rule.choices is not None and value not in rule.choices:
        raise ConfigError(f"{path}={value!r} must be one of {', '.join(map(str, rule.choices))}")


def _bounds(rule: Rule) -> str:
    if rule.high is not None:
        return f"in [{rule.low:g}, {rule.high:g}]"
    return f"≥ {rule.low:g}"


def _cross_checks(cfg: dict[str, Any], app: str) -> None:
    """Settings that are fine alone but not together, or not on this machine."""
    from vae_latent.data import CHANNELS, DATASETS, PROTOCOLS

    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    name, channels = data.get("name"), data.get("channels")
    for key, value, allowed in (
        ("data.name", name, tuple(DATASETS)),
        ("data.channels", channels, CHANNELS),
        ("data.protocol", data.get("protocol"), PROTOCOLS),
        ("model.kl", model.get("kl"), KL_ESTIMATORS),
        ("model.likelihood", model.get("likelihood"), LIKELIHOODS),
    ):
        if value is not None and value not in allowed:
            raise ConfigError(f"{key}={value!r} is unknown; use one of {', '.join(allowed)}")
    val_size = data.get("val_size")
    if name in DATASETS and isinstance(val_size, int) and val_size >= DATASETS[name].train_size:
        raise ConfigError(
            f"data.val_size={val_size} must be smaller than {name}'s training split "
            f"({DATASETS[name].train_size:,} images)"
        )
    if channels == "rgb" and name in DATASETS and DATASETS[name].channels == 1:
        raise ConfigError(
            f"channels=rgb needs a colour dataset but {name} has 1 channel; "
            "use channels=native or channels=gray"
        )
    trainer = cfg.get("trainer") or {}
    _check_trainer(trainer, fused=model.get("step") == "fused")
    accelerator = trainer.get("accelerator", cfg.get("accelerator"))
    check_accelerator(accelerator, "trainer.accelerator" if app == "train" else "accelerator")


def _check_trainer(trainer: dict[str, Any], fused: bool) -> None:
    """32-bit weights (the pictures and metrics run in float32); with ``fused``, none of what
    Lightning adds in the backward and optimizer step that the fused step replaces."""
    strategy, precision = trainer.get("strategy"), str(trainer.get("precision", "32-true"))
    if precision not in ("32-true", "32", "bf16-mixed", "16-mixed"):
        raise ConfigError(
            f"trainer.precision={precision}: the weights must stay 32-bit (the pictures and "
            "metrics run in float32); use 32-true, or bf16-mixed or 16-mixed for mixed precision"
        )
    if not fused:
        return
    if trainer.get("gradient_clip_val") or (trainer.get("accumulate_grad_batches") or 1) > 1:
        why = "it cannot clip or accumulate gradients"
    elif strategy not in (None, "auto", "single_device"):
        why = f"trainer.strategy={strategy} syncs gradients in Lightning's backward"
    elif precision not in ("32-true", "32"):
        why = f"trainer.precision={precision} casts or scales in Lightning's optimizer step"
    else:
        return
    raise ConfigError(f"model.step=fused runs Adam inside the step: {why}; use model.step=auto")


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
        raise ConfigError(f"{key}={name} but this machine has no CUDA GPU that torch can use; "
                          f"use {hint}")  # fmt: skip
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}=mps but MPS is not available here; use trainer.accelerator=auto")
