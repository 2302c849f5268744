"""Reading a checkpoint file, which may come from anyone: weights-only, checked, then loaded.

A checkpoint is data. It is unpickled weights-only (tensors and plain types, never objects), its
hyperparameters go through the same validation as a config (types, choices, bounds: no model of
10⁹ latent dimensions is ever allocated), and its weights' names and shapes must be those of
the model its hyperparameters describe, checked on the meta device before anything is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_latent.errors import ConfigError, DataError

MODEL = "vae_latent.model.LitVAE"
DATA = "vae_latent.data.VAEDataModule"
# What Lightning reads from a checkpoint to test it, and to resume a fit from it.
TEST_KEYS = {"state_dict", "hyper_parameters", "pytorch-lightning_version"}
RESUME_KEYS = TEST_KEYS | {"epoch", "global_step", "loops", "optimizer_states", "callbacks"}


def read_checkpoint(path: str | Path, resume: bool = False) -> dict[str, Any]:
    """The checkpoint's contents, checked to be a vae_latent checkpoint Lightning can use."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
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
    _check_settings(path, "hyper_parameters", MODEL, hparams)
    if tuple(hparams.get("image_shape", ())) not in _image_shapes():
        raise DataError(
            f"{path}: image_shape={hparams.get('image_shape')!r} is no dataset's; it is damaged"
        )
    data = ckpt.get("datamodule_hyper_parameters")
    if data is not None:
        _check_settings(path, "datamodule_hyper_parameters", DATA, data)
    if resume:
        for key in ("epoch", "global_step"):
            if not isinstance(ckpt[key], int) or ckpt[key] < 0:
                raise DataError(f"{path}: {key}={ckpt[key]!r} is not a count; it is damaged")
    _check_weights(path, ckpt)
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


def _check_weights(path: Any, ckpt: dict[str, Any]) -> None:
    """The weights' names and shapes against the model the hyperparameters describe."""
    import torch

    from vae_latent.model import LitVAE

    with torch.device("meta"):  # no memory: only the shapes
        expected = LitVAE(**ckpt["hyper_parameters"])
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: state_dict is not a mapping of tensors; it is damaged")
    expected.on_load_checkpoint({"state_dict": (state := dict(state))})  # older weight names
    want = {k: tuple(v.shape) for k, v in expected.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        wrong = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
        raise DataError(
            f"{path}: its weights do not fit the model its hyperparameters describe "
            f"({wrong[0]}: {have.get(wrong[0])} vs {want.get(wrong[0])}); it is damaged"
        )


def load_module(path: str | Path) -> Any:
    """The LitVAE of a checked checkpoint, on the CPU, in eval mode."""
    from vae_latent.model import LitVAE

    read_checkpoint(path)
    return LitVAE.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()


def load(path: str | Path) -> Any:
    """A trained ConvVAE in eval mode from a checkpoint file alone (weights-only, checked)."""
    module = load_module(path)
    module.vae.checkpoint_epoch = module.checkpoint_epoch
    return module.vae
