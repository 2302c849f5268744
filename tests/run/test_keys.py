"""One table says what a run is: a key added to it reaches resume, the record and the report."""

import csv

import pytest

from vae_latent.run import keys
from vae_latent.run.keys import RunKey

from ..conftest import TINY, assert_one_line_error, file_hashes, read_metrics


@pytest.fixture
def eval_batch_size_is_a_run_key():
    """A hypothetical key: data.eval_batch_size, as if it changed what a run computes."""
    key = RunKey("eval_batch_size", "data.eval_batch_size", int, recipe=True)
    keys.RUN_KEYS.append(key)
    yield key
    keys.RUN_KEYS.remove(key)


def test_a_new_run_key_is_seen_by_resume_the_record_and_the_report(
    eval_batch_size_is_a_run_key, app, data_root, tmp_path
):
    sweep = tmp_path / "sweep"
    args = [f"data.root={data_root}", *TINY, "trainer.max_epochs=1", "callbacks=none"]
    proc = app("-m", *args, "data.eval_batch_size=64,128", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    # The record: the value as the built datamodule holds it.
    assert sorted(read_metrics(r)["eval_batch_size"] for r in runs) == [64, 128]
    # The report: a column, and the two values are two recipes, never pooled as seeds.
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["eval_batch_size"] for r in rows if r["kind"] == "run"} == {"64", "128"}
    assert len([r for r in rows if r["kind"] == "seed_mean"]) == 2
    assert "eval_batch_size=" in (sweep / "report.md").read_text()
    # Resume: a key of the run's identity, so changing it is refused and changes nothing.
    run = next(r for r in runs if read_metrics(r)["eval_batch_size"] == 64)
    (run / "metrics.json").unlink()
    before = file_hashes(run)
    refused = app(f"resume={run}", "data.eval_batch_size=32")
    assert_one_line_error(refused, "data.eval_batch_size=32 but the run was made with", "=64")
    assert file_hashes(run) == before


def test_every_list_of_keys_is_derived_from_the_table(eval_batch_size_is_a_run_key):
    key = eval_batch_size_is_a_run_key
    assert key in keys.identity_keys() and key.name in keys.recipe_names()
    assert key.name in keys.names() and key in keys.hparam_keys()
    assert "seed" in keys.not_the_experiment() and "data.root" in keys.job_dirname_excludes()


def _excluded(app):
    """Hydra's exclude_keys for a multirun job's folder name, as ``app``'s config resolves it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vae_latent.run.config import conf_dir

    overrides = ["ckpt=x.ckpt"] if app == "eval" else []
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(app, overrides=overrides, return_hydra_config=True)
    return list(OmegaConf.select(cfg, "hydra.job.config.override_dirname.exclude_keys"))


def test_the_plumbing_keys_have_one_home_that_both_apps_job_folder_names_follow(monkeypatch):
    """PLUMBING lists each plumbing key once, with its apps: the train and eval configs' job
    folder names (Hydra's exclude_keys) and the seed-matching hash all follow it."""
    dirs = ["hydra.run.dir", "hydra.sweep.dir"]
    assert _excluded("train") == ["data.root", "data.download", "resume", *dirs]
    assert _excluded("eval") == ["ckpt", "data.root", "data.download", *dirs]
    monkeypatch.setitem(keys.PLUMBING, "data.cache", ("train", "eval"))  # hypothetical
    assert "data.cache" in _excluded("train") and "data.cache" in _excluded("eval")
    assert "data.cache" in keys.not_the_experiment()
