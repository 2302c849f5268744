"""The run's checkpoints, in its own ``checkpoints/``: Lightning's ModelCheckpoint, made safe to
resume from a run folder that was moved, copied or made by someone else."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from vae_latent.files import shown

log = logging.getLogger("vae_latent")
PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint writing to ``<run dir>/checkpoints``, whose saved state is never trusted.

    A checkpoint's callback state holds absolute paths (best, last, top k), and Lightning
    deletes the old best with ``fs.rm(recursive=True)`` when a better one arrives; its own guard
    compares paths unresolved (``checkpoints/../..`` passes). So on resume every saved path is
    rebuilt from the run directory: kept only as the file of the same name in this run's
    ``checkpoints/`` when that file exists there (a run moved from Docker's /app keeps its best
    checkpoint), dropped otherwise; scores that are not numbers are dropped with their paths, and
    the best and k-th are derived again from what is kept. Checkpoints of this callback's name
    that the rebuilt state no longer holds (a run killed between saving a new best and removing
    the old) are removed, in ``checkpoints/`` only. Nothing outside ``checkpoints/`` is ever
    removed.
    """

    def __init__(
        self,
        filename: str | None = None,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
        save_top_k: int = 1,
        save_last: bool | None = None,
        auto_insert_metric_name: bool = True,
    ) -> None:
        super().__init__(
            filename=filename,
            monitor=monitor,
            mode=mode,
            save_top_k=save_top_k,
            save_last=save_last,
            auto_insert_metric_name=auto_insert_metric_name,
            # One file per name: a resumed run overwrites its own last.ckpt (and the best of an
            # epoch it trains again), never writes last-v1.ckpt beside a stale state's.
            enable_version_counter=False,
        )
        # It saves at epoch ends only (no every_n_train_steps or train_time_interval), so
        # ModelCheckpoint's per-batch hook returns at once; hidden, Lightning no longer calls
        # it (and builds its profiler label from state_key) after every batch.
        self.on_train_batch_end = None  # type: ignore[assignment]
        self._state_key: str | None = None

    @property
    def state_key(self) -> str:  # ModelCheckpoint's own key: earlier runs' checkpoints resume
        if self._state_key is None:  # its settings are fixed at init; Lightning reads it per hook
            self._state_key = super().state_key.replace(
                type(self).__qualname__, "ModelCheckpoint", 1
            )
        return self._state_key

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")  # always the run's
        super().setup(trainer, pl_module, stage)
        # Each process its own: Lightning broadcast rank 0's, which may name the folder by the
        # descriptor rank 0 holds the run by (vae_latent.files.held), meaningless elsewhere.
        self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")

    def inside(self, path: Any) -> str | None:
        """``path`` as this run's checkpoint of the same name, if that file exists; else None."""
        if not path or not self.dirpath:
            return None
        name = Path(str(path)).name
        mine = Path(self.dirpath, name)
        if name in ("", ".", "..") or not mine.is_file() or not _within(mine, self.dirpath):
            return None
        return str(mine)

    def state_dict(self) -> dict[str, Any]:
        """Lightning's state, its paths named as the user names the run (not through the
        descriptor the run holds its directory by: ``vae_latent.files.held``)."""
        state = super().state_dict()
        for key in ("dirpath", *PATH_KEYS):
            if isinstance(state.get(key), str):
                state[key] = shown(state[key])
        state["best_k_models"] = {shown(k): v for k, v in state.get("best_k_models", {}).items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        best_k = {}
        saved = state_dict.get("best_k_models")
        for path, score in saved.items() if isinstance(saved, dict) else ():
            mine, value = self.inside(path), _score(score)
            if mine and value is not None:
                best_k[mine] = value
        # The top k by score, best first, as this callback keeps them (a crafted file may list
        # more); the best and the k-th follow from them, as Lightning derives them.
        ranked = sorted(best_k, key=lambda p: float(best_k[p]), reverse=self.mode == "max")
        keep = len(ranked) if self.save_top_k == -1 else max(self.save_top_k, 0)
        best_k = {p: best_k[p] for p in ranked[:keep]}
        state = {**state_dict, "dirpath": self.dirpath, "best_k_models": best_k}
        for key in PATH_KEYS:
            state[key] = self.inside(state_dict.get(key)) or ""
        state["best_model_score"] = _score(state_dict.get("best_model_score"))
        state.pop("kth_value", None)  # Lightning's default unless the top k is full
        state["kth_best_model_path"] = ""
        if best_k:
            state["best_model_path"] = ranked[0]
            state["best_model_score"] = best_k[ranked[0]]
            if len(best_k) == self.save_top_k:
                state["kth_best_model_path"] = ranked[keep - 1]
                state["kth_value"] = best_k[ranked[keep - 1]]
        elif self.monitor is not None:  # a monitored best is one of the top k, or none
            state["best_model_path"] = ""
        if not state["best_model_path"]:  # the best is gone: the next epoch may become best
            state["best_model_score"] = None
        super().load_state_dict(state)
        self._remove_stale(state)

    def _remove_stale(self, state: dict[str, Any]) -> None:
        """This callback's own checkpoints that its state no longer names (a process killed
        between writing a new best and removing the old one leaves two): only files in
        ``checkpoints/`` named as ``filename`` names them, never last.ckpt."""
        prefix = (self.filename or "").split("{", 1)[0]
        if not prefix or not self.dirpath or Path(self.dirpath).is_symlink():
            return
        kept = {state.get(k) for k in PATH_KEYS} | set(state["best_k_models"])
        last = f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        for path in Path(self.dirpath).glob(f"{glob.escape(prefix)}*{self.FILE_EXTENSION}"):
            ours = (path.is_file() or path.is_symlink()) and _within(path.parent, self.dirpath)
            if ours and str(path) not in kept and path.name != last:
                log.info("removing %s: a stale checkpoint of an interrupted run", shown(path))
                path.unlink(missing_ok=True)  # DDP: every rank loads the state

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if not _within(Path(filepath), self.dirpath):  # never outside checkpoints/
            log.warning("not removing %s: it is not in %s", filepath, shown(self.dirpath))
            return
        super()._remove_checkpoint(trainer, filepath)


def _score(value: Any) -> Any:
    """A saved score as Lightning keeps it (a 0-d tensor), or None where it is not a number."""
    import torch

    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        return value.reshape(())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value))
    return None


def _within(path: Path, folder: Any) -> bool:
    """Whether ``path``, links and ``..`` resolved, lies inside ``folder``."""
    return Path(path).resolve().is_relative_to(Path(str(folder)).resolve())
