"""Reading a checkpoint file, which may come from anyone: weights-only, checked, then loaded.

A checkpoint is data. It is read once (a regular file, at most ``LIMIT`` bytes), unpickled
weights-only (tensors and plain types, never objects), its
hyperparameters go through the same validation as a config (types, choices, bounds: no model of
10⁹ latent dimensions is ever allocated), and its weights' names and shapes must be those of
the model its hyperparameters describe, checked on the meta device before anything is built,
and every tensor in it dense, on the CPU and of the model's dtype (no sparse or meta weights).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from vae_latent.errors import ConfigError, DataError
from vae_latent.files import GiB, read_bytes

# The largest model the settings allow is far below this (docs/errors.md: bounds).
LIMIT = 4 * GiB

MODEL = "vae_latent.model.LitVAE"
DATA = "vae_latent.data.VAEDataModule"
# What Lightning reads from a checkpoint to test it, and to resume a fit from it.
TEST_KEYS = {"state_dict", "hyper_parameters", "pytorch-lightning_version"}
RESUME_KEYS = TEST_KEYS | {"epoch", "global_step", "loops", "optimizer_states", "callbacks"}
# Where Lightning also looks for a model's arguments (older versions' keys): ours never write
# them, and what they hold would reach the model's constructor unchecked.
PAST_HPARAMS_KEYS = ("hparams", "module_arguments")


def read_checkpoint(path: str | Path, resume: bool = False) -> dict[str, Any]:
    """The checkpoint's contents, checked to be a vae_latent checkpoint Lightning can use."""
    import torch

    try:
        data = read_bytes(path, LIMIT)
    except (OSError, ValueError) as e:
        raise DataError(f"{path} cannot be read ({e}); pass a run's checkpoints/last.ckpt") from e
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(
            f"{path} cannot be loaded weights-only ({type(e).__name__}): it is damaged or not a "
            "vae_latent checkpoint; use another checkpoint of the run, or start a new run"
        ) from e
    needed = RESUME_KEYS if resume else TEST_KEYS
    missing = sorted(needed - set(ckpt)) if isinstance(ckpt, dict) else ["its contents"]
    hparams = ckpt.get("hyper_parameters") if not missing else None
    if missing or not isinstance(hparams, dict) or "latent_dim" not in hparams:
        what = f"no {', '.join(missing)}" if missing else "no LitVAE hyperparameters"
        raise DataError(f"{path} is not a vae_latent checkpoint ({what})")
    _check_lightning_keys(path, ckpt)
    _check_settings(path, "hyper_parameters", MODEL, hparams)
    if tuple(hparams.get("image_shape", ())) not in _image_shapes():
        raise DataError(
            f"{path}: image_shape={hparams.get('image_shape')!r} is no dataset's; it is damaged"
        )
    data = ckpt.get("datamodule_hyper_parameters")
    if data is not None:
        _check_settings(path, "datamodule_hyper_parameters", DATA, data)
    shapes = _check_weights(path, ckpt)
    if resume:
        _check_training_state(path, ckpt, shapes)
    return ckpt


def _image_shapes() -> set[tuple[int, int, int]]:
    from vae_latent.data.datasets import CHANNELS, DATASETS, image_shape

    return {image_shape(name, ch) for name in DATASETS for ch in CHANNELS}


def _check_settings(path: Any, where: str, target: str, values: Any) -> None:
    from vae_latent.run.validate import check_object

    if not isinstance(values, dict):
        raise DataError(f"{path}: {where} is not a mapping; it is damaged")
    try:
        check_object(target, dict(values), f"{where}.")
    except ConfigError as e:
        raise DataError(f"{path}: {e}; it is not a checkpoint this version can use") from e


def _check_lightning_keys(path: Any, ckpt: dict[str, Any]) -> None:
    """What Lightning reads besides the hyperparameters when it builds the model from a file."""
    from packaging.version import InvalidVersion, Version

    from vae_latent.run.validate import signature

    version = ckpt["pytorch-lightning_version"]
    try:
        Version(version)
    except (InvalidVersion, TypeError) as e:
        raise DataError(
            f"{path}: pytorch-lightning_version={version!r} is no version; it is damaged"
        ) from e
    if past := [k for k in PAST_HPARAMS_KEYS if k in ckpt]:
        raise DataError(
            f"{path}: holds hyperparameters under {past[0]!r}, a key vae_latent never writes; "
            "it is not a vae_latent checkpoint"
        )
    name, kind = ckpt.get("hparams_name"), ckpt.get("hparams_type")
    params, _ = signature(MODEL)
    if name is not None and (not isinstance(name, str) or name in params):
        raise DataError(f"{path}: hparams_name={name!r} is not ours; it is damaged")
    if kind is not None and not isinstance(kind, str):
        raise DataError(f"{path}: hparams_type={kind!r} is not ours; it is damaged")


def _check_training_state(path: Any, ckpt: dict[str, Any], shapes: list[tuple[int, ...]]) -> None:
    """What a resumed fit restores: counters, loops, callbacks, Adam's state, random states."""
    import torch

    from vae_latent.callbacks.random_state import rng_states_problem

    def damaged(what: str) -> DataError:
        return DataError(f"{path}: {what}; it is damaged")

    for key in ("epoch", "global_step"):
        value = ckpt[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise damaged(f"{key}={value!r} is not a count")
    loops, callbacks = ckpt["loops"], ckpt["callbacks"]
    if not isinstance(loops, dict) or not isinstance(loops.get("fit_loop"), dict):
        raise damaged("loops holds no fit_loop state")
    if not isinstance(callbacks, dict) or not all(isinstance(v, dict) for v in callbacks.values()):
        raise damaged("callbacks is not a mapping of callback states")
    if not isinstance(ckpt.get("lr_schedulers", []), list):
        raise damaged("lr_schedulers is not a list")
    optimizers = ckpt["optimizer_states"]
    adam = optimizers[0] if isinstance(optimizers, list) and len(optimizers) == 1 else {}
    groups = adam.get("param_groups") if isinstance(adam, dict) else None
    group = groups[0] if isinstance(groups, list) and len(groups) == 1 else {}
    params = group.get("params") if isinstance(group, dict) else None
    state = adam.get("state") if isinstance(adam, dict) else None
    if (
        not isinstance(params, list)
        or not all(isinstance(i, int) for i in params)
        or len(set(params)) != len(shapes)
        or not isinstance(state, dict)
        or not set(state) <= set(params)
    ):
        raise damaged("optimizer_states is not one Adam state for this model's weights")
    for index, shape in zip(params, shapes, strict=True):
        moments = state.get(index, {})
        if not isinstance(moments, dict):
            raise damaged(f"Adam's state of weight {index} is not a mapping")
        for name in ("exp_avg", "exp_avg_sq"):
            value = moments.get(name, torch.empty(shape))
            if not _dense(value) or tuple(value.shape) != shape or not value.is_floating_point():
                raise damaged(f"Adam's {name} of weight {index} does not fit its shape {shape}")
    if why := rng_states_problem(ckpt.get("rng_states")):
        raise damaged(f"rng_states {why}")


def _check_weights(path: Any, ckpt: dict[str, Any]) -> list[tuple[int, ...]]:
    """The weights' names and shapes against the model the hyperparameters describe; the
    shapes of the model's parameters, in the optimizer's order."""
    import torch

    from vae_latent.model import LitVAE

    with torch.device("meta"):  # no memory: only the shapes
        expected = LitVAE(**ckpt["hyper_parameters"])
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(_dense(v) for v in state.values()):
        raise DataError(
            f"{path}: state_dict is not a mapping of dense tensors on the CPU (sparse or meta "
            "tensors); it is damaged"
        )
    expected.on_load_checkpoint({"state_dict": (state := dict(state))})  # older weight names
    want = {k: (tuple(v.shape), v.dtype) for k, v in expected.state_dict().items()}
    have = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    if want != have:
        wrong = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
        raise DataError(
            f"{path}: its weights do not fit the model its hyperparameters describe "
            f"({wrong[0]}: {have.get(wrong[0])} vs {want.get(wrong[0])}); it is damaged"
        )
    return [tuple(p.shape) for p in expected.parameters()]


def _dense(value: Any) -> bool:
    """A plain CPU tensor: not sparse, meta or quantized (its dtype is checked against the
    model's where it has one)."""
    import torch

    return (
        isinstance(value, torch.Tensor)
        and value.layout == torch.strided
        and value.device.type == "cpu"
        and not value.is_quantized
    )


def module_from(ckpt: dict[str, Any], name: str | None = None) -> Any:
    """The LitVAE of a checkpoint ``read_checkpoint`` checked, on the CPU, in eval mode;
    ``name``, the checkpoint's file name, is what the pictures' titles say they show."""
    from vae_latent.model import LitVAE
    from vae_latent.run.keys import RUN_KEYS

    hparams = ckpt["hyper_parameters"]
    # A checkpoint written before a model setting existed was trained with its legacy value,
    # which need not be today's default (model.init).
    legacy = {
        k.leaf: k.legacy
        for k in RUN_KEYS
        if k.section == "model" and k.legacy is not None and k.leaf not in hparams
    }
    module = LitVAE(**hparams, **legacy)
    module.on_load_checkpoint(ckpt)  # older weight names; the epoch the weights are from
    module.load_state_dict(ckpt["state_dict"])
    module.checkpoint_name = name
    return module.eval()


def load(path: str | Path) -> Any:
    """A trained ConvVAE in eval mode from a checkpoint file alone (read once, weights-only,
    checked)."""
    module = module_from(read_checkpoint(path))
    module.vae.checkpoint_epoch = module.checkpoint_epoch
    return module.vae
