"""Every setting is checked before work starts: each leaf of both apps' configs, fed a bad value."""

import pytest
import torch
from omegaconf import OmegaConf

from vae_latent.errors import ConfigError
from vae_latent.run.validate import validate

from ..conftest import assert_one_line_error, compose, file_hashes, run_app

# Counts where -1 means "all" (Lightning's convention): -2 is their wrong value instead.
MINUS_ONE_MEANS_ALL = {
    "callbacks.checkpoint.save_top_k",
    "trainer.num_sanity_val_steps",
    "callbacks.model_summary.max_depth",
}


def leaves(cfg, prefix=""):
    """(key, value) of every leaf the app reads (Hydra's own settings and _target_ aside)."""
    node = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg
    for key, value in node.items():
        if key == "hydra" or key == "_target_":
            continue
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


# Sizes that memory grows with: a value past any real use must be refused, not allocated.
MEMORY_BOUND = {
    "model.latent_dim",
    "data.batch_size",
    "data.eval_batch_size",
    "metrics.iw_samples",
    "callbacks.epoch_grid.n_images",
    "callbacks.latent_manifold.size",
    "callbacks.latent_traversal.max_dims",
    "callbacks.latent_traversal.steps",
    "callbacks.interpolation.steps",
    "callbacks.projector.max_points",
    "callbacks.latent_metrics.images",
    "sample.n",
}
HUGE = 10**9
# Settings that decide whether training happens: a value that trains nothing is refused.
TRAINS_A_STEP = {"trainer.limit_train_batches": [0, 0.0], "trainer.max_epochs": [0]}


def wrong_values(key, value):
    """A word for a number or a flag, 2.5 for an integer, -1 (or -2) for a count; 10⁹ for a size
    memory grows with; 0 where it would train nothing."""
    if isinstance(value, bool):
        return ["abc"]
    if isinstance(value, int):
        wrong = ["abc", 2.5, -2 if key in MINUS_ONE_MEANS_ALL else -1]
    elif isinstance(value, float):
        wrong = ["abc", -1.0] if key != "trainer.limit_train_batches" else ["abc", 2.5, -1]
    else:
        return []
    return wrong + [HUGE] * (key in MEMORY_BOUND) + TRAINS_A_STEP.get(key, [])


BASE = {"train": compose(), "eval": compose("ckpt=x.ckpt", config_name="eval")}
CASES = [
    (app, key, bad)
    for app, cfg in BASE.items()
    for key, value in leaves(cfg)
    for bad in wrong_values(key, value)
]


def test_every_number_and_flag_leaf_is_walked():
    keys = {(c[0], c[1]) for c in CASES}
    # Spot checks that the walk reaches every group: data, model, trainer, callbacks, metrics.
    for key in (
        "data.val_size",
        "seed",
        "model.lr",
        "trainer.max_epochs",
        "callbacks.training_gif.duration_ms",
        "callbacks.latent_traversal.span",
        "metrics.iw_samples",
        "data.download",
        "callbacks.checkpoint.save_top_k",
    ):
        assert ("train", key) in keys, key
    assert ("eval", "sample.n") in keys and ("eval", "data.eval_batch_size") in keys
    assert len(CASES) > 100
    walked = {c[1] for c in CASES if c[2] == HUGE}
    assert walked == MEMORY_BOUND, MEMORY_BOUND - walked  # every bound is reached by the walk
    assert {c[1] for c in CASES if c[2] in (0, 0.0)} >= set(TRAINS_A_STEP)


@pytest.mark.parametrize(("app", "key", "bad"), CASES, ids=lambda v: str(v))
def test_a_wrong_value_of_any_leaf_is_one_line_naming_it(app, key, bad):
    cfg = BASE[app].copy()  # as Hydra composes `key=bad` (no type checks of its own here)
    OmegaConf.update(cfg, key, bad, force_add=True)
    with pytest.raises(ConfigError) as err:
        validate(cfg, app)
    message = str(err.value)
    assert key in message and "\n" not in message, message


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["+model.latentdim=4"], "model.latentdim is not a setting"),
        (["+trainer.foo=1"], "trainer.foo is not a setting"),
        (["+foo=1"], "foo is not a setting"),
        (["callbacks.interpolation.pairs=abc"], "callbacks.interpolation.pairs"),
        (["trainer.limit_val_batches=abc"], "trainer.limit_val_batches"),
        (["trainer.precision=bogus"], "trainer.precision"),
        (["trainer.devices=abc"], "trainer.devices"),
        (["data.name=svhn"], "data.name='svhn'"),
        (["model.kl=exact"], "model.kl"),
        (["channels=rgb"], "channels=rgb needs a colour dataset"),
        (["trainer.accelerator=quantum"], "trainer.accelerator"),
        (["+model.image_shape=[1,28,28]"], "set by the app"),
    ],
)
def test_unknown_keys_and_impossible_choices_are_one_line(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        validate(compose(*overrides))


def test_the_default_configs_and_the_experiments_pass():
    validate(compose())
    validate(compose("experiment=paper", "+tier=cifar10_rgb"))
    validate(compose("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"))
    validate(compose("callbacks=none", "logger=none"))
    validate(compose("ckpt=x.ckpt", "dataset=fashion_mnist", config_name="eval"), "eval")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_trainer_without_a_gpu_is_one_line():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        validate(compose("trainer=gpu"))


def test_the_app_stops_before_training_and_writes_only_its_config(tmp_path):
    """The same validation, through the app: one line, exit 2, only .hydra/ written."""
    run = tmp_path / "run"
    proc = run_app("callbacks.training_gif.duration_ms=abc", f"hydra.run.dir={run}")
    assert_one_line_error(proc, "callbacks.training_gif.duration_ms='abc'")
    assert sorted(file_hashes(run)) == [
        ".hydra/config.yaml",
        ".hydra/hydra.yaml",
        ".hydra/overrides.yaml",
    ]


# D6/D7: settings that would train nothing or exhaust memory, refused before any data is read:
# the data root does not exist, so a later refusal would name the data instead.
NOTHING_OR_TOO_MUCH = {
    "no training batches": (["trainer.limit_train_batches=0"], "would train nothing"),
    "no training steps": (["+trainer.max_steps=0"], "trainer.max_steps=0 would train nothing"),
    "a fraction of no batch": (
        ["trainer.limit_train_batches=0.0001"],
        "trainer.limit_train_batches=0.0001 is 0.17 of mnist's 1,719 training batches",
    ),
    "a fraction of no batch of the study split": (
        ["trainer.limit_train_batches=0.0002", "protocol=study", "data.batch_size=16"],
        "of mnist's 3,750 training batches of 16: it would train nothing; use at least 0.00027",
    ),
    "no validation images": (["data.val_size=0"], "data.val_size=0 leaves nothing to validate"),
    "latent 100000": (["model.latent_dim=100000"], "model.latent_dim=100000 must be an integer in"),
    "batch 10**8": (["data.batch_size=100000000"], "data.batch_size=100000000 must be an integer"),
    "a checkpoint name out of the run": (
        ["callbacks.checkpoint.filename=../../escaped"],
        "callbacks.checkpoint.filename='../../escaped' must be a file name inside the run",
    ),
    "a log folder out of the run": (["logger.name=.."], "logger.name='..' must be a folder name"),
    "a log version out of the run": (["logger.version=/tmp/x"], "logger.version='/tmp/x' must be"),
}


@pytest.mark.parametrize("case", list(NOTHING_OR_TOO_MUCH))
def test_a_setting_that_trains_nothing_or_too_much_is_refused_before_data(case, app, tmp_path):
    overrides, needle = NOTHING_OR_TOO_MUCH[case]
    run = tmp_path / "run"
    proc = app(*overrides, "data.root=/nonexistent", "data.download=false", f"hydra.run.dir={run}")
    assert_one_line_error(proc, needle)
    assert sorted(file_hashes(run)) == [
        ".hydra/config.yaml",
        ".hydra/hydra.yaml",
        ".hydra/overrides.yaml",
    ]


@pytest.mark.parametrize(
    ("fraction", "batch_size", "trains"),
    [(0.00058, 32, False), (0.00059, 32, True), (0.001, 1, True), (1.0, 32, True), (4, 32, True)],
)
def test_a_fraction_of_the_training_batches_must_leave_one(fraction, batch_size, trains):
    """Lightning trains int(batches × fraction) batches: 1,719 batches of 32 (MNIST, 5,000 held
    out) × 0.00058 is 0.997, none."""
    cfg = compose(f"trainer.limit_train_batches={fraction}", f"data.batch_size={batch_size}")
    if trains:
        validate(cfg)
    else:
        with pytest.raises(ConfigError, match="would train nothing; use at least 0.00059"):
            validate(cfg)
