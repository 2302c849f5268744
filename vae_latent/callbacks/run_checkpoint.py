"""The run's checkpoints, in its own ``checkpoints/``: Lightning's ModelCheckpoint, made safe to
resume from a run folder that was moved, copied or made by someone else."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger("vae_latent")
PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint writing to ``<run dir>/checkpoints``, whose saved state is never trusted.

    A checkpoint's callback state holds absolute paths (best, last, top k), and Lightning
    deletes the old best with ``fs.rm(recursive=True)`` when a better one arrives; its own guard
    compares paths unresolved (``checkpoints/../..`` passes). So on resume every saved path is
    rebuilt from the run directory: kept only as the file of the same name in this run's
    ``checkpoints/`` when that file exists there (a run moved from Docker's /app keeps its best
    checkpoint), dropped otherwise. And nothing outside ``checkpoints/`` is ever removed.
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
        )

    @property
    def state_key(self) -> str:  # ModelCheckpoint's own key: earlier runs' checkpoints resume
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")  # always the run's
        super().setup(trainer, pl_module, stage)

    def inside(self, path: Any) -> str | None:
        """``path`` as this run's checkpoint of the same name, if that file exists; else None."""
        if not path or not self.dirpath:
            return None
        name = Path(str(path)).name
        mine = Path(self.dirpath, name)
        if name in ("", ".", "..") or not mine.is_file() or not _within(mine, self.dirpath):
            return None
        return str(mine)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = {**state_dict, "dirpath": self.dirpath}
        for key in PATH_KEYS:
            state[key] = self.inside(state_dict.get(key)) or ""
        if not state["best_model_path"]:  # the best is gone: the next epoch may become best
            state["best_model_score"] = None
        best_k = state_dict.get("best_k_models") or {}
        state["best_k_models"] = {
            mine: score for path, score in best_k.items() if (mine := self.inside(path))
        }
        super().load_state_dict(state)

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if not _within(Path(filepath), self.dirpath):  # never outside checkpoints/
            log.warning("not removing %s: it is not in %s", filepath, self.dirpath)
            return
        super()._remove_checkpoint(trainer, filepath)


def _within(path: Path, folder: Any) -> bool:
    """Whether ``path``, links and ``..`` resolved, lies inside ``folder``."""
    return Path(path).resolve().is_relative_to(Path(str(folder)).resolve())
