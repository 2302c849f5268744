"""``vae-latent-eval``: every test metric and figure of a trained checkpoint, without training.

The checkpoint alone says what it was trained on (the datamodule's hyperparameters travel in
it); ``dataset=``/``channels=`` evaluate it on other data of the same image shape instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vae_latent.cli import (
    _conf_dir,
    check_checkpoint,
    device_name,
    exit_if_failed,
    job_failed,
    run_app,
    versions,
    write_json,
)
from vae_latent.errors import DataError

log = logging.getLogger(__name__)


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "×".join(str(s) for s in shape)


def data_settings(cfg: DictConfig, trained: dict[str, Any]) -> dict[str, Any]:
    """The data to evaluate on: the checkpoint's own unless dataset=/channels= say otherwise."""
    name = cfg.data.name or trained.get("name")
    if name is None:
        raise DataError(
            f"{cfg.ckpt} does not record the data it was trained on (written before "
            "vae-latent-eval existed); pass dataset=... and channels=..."
        )
    same = name == trained.get("name")
    binarize = cfg.data.binarize
    if binarize is None:  # the recipe of the data being read (dataset/ sets it when given)
        binarize = trained.get("binarize", True)
    return {
        "name": name,
        "channels": cfg.data.channels or trained.get("channels", "native"),
        "binarize": bool(binarize),
        # The training run's split of train/val, so the probes fit on the same images.
        "val_size": trained.get("val_size", cfg.data.val_size) if same else cfg.data.val_size,
        "seed": trained.get("seed", cfg.seed) if same else cfg.seed,
    }


def evaluate(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Test metrics, latent metrics and every figure of ``cfg.ckpt`` into ``out_dir``."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    import vae_latent
    from vae_latent.callbacks import EpochGrid, LatentFigure, TensorBoardProjector, save_atomic
    from vae_latent.cli import keep_freed_heap
    from vae_latent.data import DATASETS, VAEDataModule
    from vae_latent.figures import grid, panels
    from vae_latent.metrics import latent_metrics

    ckpt_path = Path(str(cfg.ckpt)).expanduser().resolve()
    if not ckpt_path.is_file():
        raise DataError(f"ckpt={cfg.ckpt}: no such file; pass a run's checkpoints/last.ckpt")
    raw = check_checkpoint(ckpt_path)
    trained = dict(raw.get("datamodule_hyper_parameters") or {})
    expected = tuple(raw["hyper_parameters"]["image_shape"])
    settings = data_settings(cfg, trained)
    datamodule = VAEDataModule(
        root=cfg.data.root,
        download=cfg.data.download,
        eval_batch_size=cfg.data.eval_batch_size,
        **settings,
    )
    if datamodule.image_shape != expected:  # before any file is read
        raise DataError(
            f"{ckpt_path.name} expects {shape_text(expected)} images (trained on "
            f"{trained.get('name', '?')}, channels={trained.get('channels', '?')}) but "
            f"dataset={settings['name']} channels={settings['channels']} gives "
            f"{shape_text(datamodule.image_shape)}; pick data of the same shape"
        )
    same = (datamodule.name, datamodule.channels) == (trained.get("name"), trained.get("channels"))
    if not same and trained.get("name") in DATASETS:  # the figures' titles say whose model
        trained_channels = "" if trained.get("channels") == "native" else f" {trained['channels']}"
        datamodule.model_trained_on = DATASETS[trained["name"]].display + trained_channels
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    keep_freed_heap()
    datamodule.prepare_data()
    datamodule.setup("test")
    model = vae_latent.load(ckpt_path)
    epoch = int(raw.get("epoch", -1)) + 1  # epochs the checkpoint had completed
    logger = instantiate(cfg.logger, save_dir=str(out_dir)) if "_target_" in cfg.logger else False
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=logger,
        default_root_dir=str(out_dir),
        max_epochs=max(epoch, 1),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    (test,) = trainer.test(model, datamodule=datamodule, verbose=False)
    latent = latent_metrics(model, datamodule, **cfg.metrics)
    # The figures' titles say which epoch they show: the checkpoint's.
    trainer.fit_loop.epoch_progress.current.completed = epoch

    for callback in (instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c):
        if isinstance(callback, EpochGrid):
            save_atomic(out_dir / "grid.png", callback.render(trainer, model).save)
        elif isinstance(callback, LatentFigure):
            callback.write(trainer, model, out_dir / f"{callback.name}.png")
        elif isinstance(callback, TensorBoardProjector):
            callback.on_fit_end(trainer, model)
    if cfg.sample.n > 0:
        generator = torch.Generator().manual_seed(cfg.sample.seed)
        images = model.sample(int(cfg.sample.n), generator=generator)
        info = DATASETS.get(trained.get("name", ""))
        model_of = f"{info.display} model  |  " if info else ""  # samples need no test data
        title = (
            f"{model_of}{cfg.sample.n} prior samples  |  z={model.hparams.latent_dim}  |  "
            f"seed {cfg.sample.seed}  |  {ckpt_path.name}, epoch {epoch}"
        )
        save_atomic(out_dir / "samples.png", panels([("z ~ N(0, I)", grid(images))], title).save)

    metrics = {
        "status": "complete",
        "checkpoint": str(ckpt_path),
        "checkpoint_epoch": epoch,
        "dataset": datamodule.name,
        "channels": datamodule.channels,
        "binarize": datamodule.binarize,
        "image_shape": list(datamodule.image_shape),
        "trained_on": {k: trained.get(k) for k in ("name", "channels", "binarize")},
        "same_data_as_training": same,
        "latent_dim": model.hparams.latent_dim,
        "likelihood": model.hparams.likelihood,
        "kl": model.hparams.kl,
        "seed": cfg.seed,
        "params": sum(p.numel() for p in model.parameters()),
        "test_elbo": test["test/elbo"],
        "test_recon": test["test/recon"],
        "test_kl": test["test/kl"],
        **latent,
        "device": device_name(model.device),
        "versions": versions(),
    }
    write_json(out_dir / "metrics.json", metrics)
    log.info(
        "%s on %s/%s: test ELBO %.2f nats; %s",
        ckpt_path,
        datamodule.name,
        datamodule.channels,
        metrics["test_elbo"],
        out_dir,
    )
    return metrics


_failed: list[str] = []  # jobs of this process's multirun that failed


@hydra.main(config_path=_conf_dir(), config_name="eval", version_base="1.3")
def _eval_app(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        evaluate(cfg, out_dir)
    except Exception as e:
        job_failed(e, out_dir, "vae-latent-eval", _failed)


def main() -> None:
    """Console entry point ``vae-latent-eval``; exits 1 if any job of a multirun failed."""
    run_app(_eval_app, "vae-latent-eval")
    exit_if_failed("vae-latent-eval", _failed)


if __name__ == "__main__":
    main()
