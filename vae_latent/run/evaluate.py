"""Evaluate a trained checkpoint without training: its test metrics, latent metrics and pictures.

The checkpoint alone says what it was trained on (the datamodule's hyperparameters travel in
it); ``dataset=``/``channels=`` evaluate it on other data of the same image shape instead. The
test goes through ``trainer.test`` with the configured callbacks, so every picture is drawn by
the same code, from the same weights, as at the end of training.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vae_latent.errors import DataError, UserError
from vae_latent.files import save_atomic, write_json
from vae_latent.run.record import run_record
from vae_latent.run.rundir import claimed
from vae_latent.run.validate import validate

log = logging.getLogger("vae_latent")


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "×".join(str(s) for s in shape)


def data_settings(cfg: DictConfig, trained: dict[str, Any]) -> dict[str, Any]:
    """The data to evaluate on: the checkpoint's own unless dataset=/channels= say otherwise."""
    data = cfg.data
    name = data.get("name") or trained.get("name")
    if name is None:
        raise DataError(
            f"{cfg.ckpt} does not record the data it was trained on (written before "
            "vae-latent-eval existed); pass dataset=... and channels=..."
        )
    same = name == trained.get("name")
    binarize = data.get("binarize")
    if binarize is None:  # the recipe of the data being read (dataset/ sets it when given)
        binarize = trained.get("binarize", True)
    keep = ("val_size", "seed", "protocol", "batch_size")
    own = {k: trained[k] for k in keep if same and k in trained}
    return {
        "name": name,
        "channels": data.get("channels") or trained.get("channels", "native"),
        "binarize": bool(binarize),
        # The training run's split of train/val, so the probes fit on the same images.
        "val_size": own.get("val_size", data.val_size),
        "seed": own.get("seed", cfg.seed),
        "protocol": own.get("protocol", data.get("protocol", "validation")),
        "batch_size": own.get("batch_size", trained.get("batch_size", data.batch_size)),
    }


def evaluate(
    cfg: DictConfig, out_dir: Path, hydra_files: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Test metrics, latent metrics and every picture of ``cfg.ckpt`` into ``out_dir``."""
    with claimed(Path(out_dir)) as run_dir:
        if run_dir.existing:
            raise UserError(f"{out_dir} already holds results; choose another hydra.run.dir")
        run_dir.start(hydra_files or {"config.yaml": cfg})
        validate(cfg, app="eval")
        return _evaluate(cfg, run_dir.path)


def _evaluate(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    from hydra.utils import instantiate

    from vae_latent.callbacks.outputs import check_callbacks
    from vae_latent.callbacks.tested_metrics import last_test_metrics
    from vae_latent.data.datasets import DATASETS, image_shape
    from vae_latent.latent import pictures
    from vae_latent.run.build import build_trainer
    from vae_latent.run.checkpoints import module_from, read_checkpoint

    ckpt_path = Path(str(cfg.ckpt)).expanduser().resolve()
    if not ckpt_path.exists():
        raise DataError(f"ckpt={cfg.ckpt}: no such file; pass a run's checkpoints/last.ckpt")
    # Read once, checked before anything is built or read: the weights tested, the settings
    # recorded and the pictures all come from these bytes, whatever happens to the file.
    raw = read_checkpoint(ckpt_path)
    trained = dict(raw.get("datamodule_hyper_parameters") or {})
    expected = tuple(raw["hyper_parameters"]["image_shape"])
    settings = data_settings(cfg, trained)
    shape = image_shape(settings["name"], settings["channels"])
    if shape != expected:  # before any file is read
        raise DataError(
            f"{ckpt_path.name} expects {shape_text(expected)} images (trained on "
            f"{trained.get('name', '?')}, channels={trained.get('channels', '?')}) but "
            f"dataset={settings['name']} channels={settings['channels']} gives "
            f"{shape_text(shape)}; pick data of the same shape"
        )
    model = module_from(raw, ckpt_path.name)
    trainer = build_trainer(cfg, out_dir, [])
    datamodule = instantiate(cfg.data, **settings)
    own = (
        trained.get("name"),
        trained.get("channels"),
        trained.get("binarize", settings["binarize"]),
    )
    same = (settings["name"], settings["channels"], settings["binarize"]) == own
    if not same and trained.get("name") in DATASETS:  # the pictures' titles say whose model
        trained_channels = "" if trained.get("channels") == "native" else f" {trained['channels']}"
        datamodule.model_trained_on = DATASETS[trained["name"]].display + trained_channels
    datamodule.prepare_data()
    datamodule.setup("test")
    check_callbacks(trainer, datamodule)
    start = time.perf_counter()
    (test,) = trainer.test(model, datamodule=datamodule, verbose=False)
    latent = last_test_metrics(trainer)  # scored at the end of the test
    epoch = model.checkpoint_epoch
    if cfg.sample.n > 0:
        info = DATASETS.get(trained.get("name", ""))
        model_of = f"{info.display} model  |  " if info else ""  # samples need no test data
        title = (
            f"{model_of}{cfg.sample.n} prior samples  |  z={model.hparams.latent_dim}  |  "
            f"seed {cfg.sample.seed}  |  {ckpt_path.name}, epoch {epoch}"
        )
        image = pictures.samples(model.vae, int(cfg.sample.n), int(cfg.sample.seed), title)
        save_atomic(out_dir / "samples.png", lambda buffer: image.save(buffer, format="PNG"))
    record = run_record(
        model,
        datamodule,
        trainer,
        test,
        latent,
        seed=cfg.seed,
        checkpoint_epoch=epoch,
        checkpoint=str(ckpt_path),
        trained_on={k: trained.get(k) for k in ("name", "channels", "binarize")},
        same_data_as_training=same,
        seconds=time.perf_counter() - start,
    )
    write_json(out_dir / "metrics.json", record)
    log.info(
        "%s on %s/%s: test ELBO %.2f nats; %s",
        ckpt_path,
        datamodule.name,
        datamodule.channels,
        record["test_elbo"],
        out_dir,
    )
    return record
