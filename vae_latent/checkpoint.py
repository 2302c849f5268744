"""Checkpoints: loaded weights-only and checked to be ours; written atomically beside the target."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vae_latent.errors import DataError
from vae_latent.files import save_atomic

if TYPE_CHECKING:
    from vae_latent.model import ConvVAE


def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents; refuses one that is not ours or is not weights-only."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(
            f"{path} cannot be loaded weights-only ({type(e).__name__}): it is damaged or not a "
            "vae_latent checkpoint; delete it to start over or resume another run"
        ) from e
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if "state_dict" not in ckpt or not {"image_shape", "latent_dim"} <= set(hparams):
        raise DataError(f"{path} is not a vae_latent checkpoint (no ConvVAE hyperparameters)")
    return ckpt


def load(path: str | Path) -> ConvVAE:
    """A trained ConvVAE in eval mode from a checkpoint file alone (weights-only loading)."""
    from vae_latent.model import ConvVAE

    check_checkpoint(path)
    return ConvVAE.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Epochs a checkpoint had trained when it was saved (Lightning stores the 0-based epoch)."""
    return int(checkpoint.get("epoch", -1)) + 1


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temp file in the checkpoint's own folder.

    Lightning's default goes through a system temp file and a copy, so a full disk leaves a
    truncated checkpoint and an error naming /tmp; this leaves the previous file and names ours.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        save_atomic(Path(path), buffer.getvalue())


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, resumable in a run directory that was moved or copied.

    Its state holds absolute paths (best, last, top k): Lightning restores the best path as
    saved, so a moved run would test a file that is gone, or a copied run its original's. They
    are rebased by file name onto this run's checkpoints/ (e.g. a run made in Docker's /app).
    """

    @property
    def state_key(self) -> str:  # ModelCheckpoint's own key: earlier runs' checkpoints resume
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:

            def here(path: Any) -> Any:
                return str(Path(self.dirpath, Path(path).name)) if path else path

            best_k = {here(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}
            state_dict = {**state_dict, "dirpath": self.dirpath, "best_k_models": best_k}
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                state_dict[key] = here(state_dict.get(key))
        super().load_state_dict(state_dict)
