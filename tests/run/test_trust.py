"""Trust: a run folder, config or checkpoint from someone else is data (docs/errors.md#trust).

Resuming, evaluating or reporting it never runs code named in it, and nothing outside the run is
written or deleted because a file said so. Each test walks one class of hostile input; a
``_target_`` in it names ``builtins.open`` in write mode on a canary file outside the run (Hydra's
own blocklist lets it through), so "nothing was instantiated" is "the canary does not exist".
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vae_latent.run.config import conf_dir
from vae_latent.study.runs import read_run

from ..conftest import REPO, TINY, assert_one_line_error, file_hashes, read_metrics

# A tiny run without pictures or logger: the resumes below train one more epoch of 2 batches.
ARGS = [*TINY, "trainer.limit_train_batches=2", "callbacks=none", "logger=none"]
ARGS += ["metrics.iw_samples=0"]


@pytest.fixture(scope="module")
def base(data_root, tmp_path_factory):
    """A complete one-epoch run, trained once for this module: tests copy it."""
    from vae_latent import cli

    run = tmp_path_factory.mktemp("trust") / "run"
    argv = ["vae-latent", f"data.root={data_root}", *ARGS, "trainer.max_epochs=1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", [*argv, f"hydra.run.dir={run}"])
        cli.train_main()
    assert read_metrics(run)["status"] == "complete"
    return run


@pytest.fixture
def run(base, tmp_path):
    """A copy of the base run, in ``tmp_path/run``: what lies beside it is outside the run."""
    copy = tmp_path / "run"
    shutil.copytree(base, copy, symlinks=True)
    return copy


@pytest.fixture
def victims(tmp_path):
    """Files and folders outside the run that no resume may touch; ``check()`` asserts it."""
    file = tmp_path / "victim.txt"
    file.write_text("a file of the user's")
    folder = tmp_path / "victim_dir"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "data.bin").write_bytes(b"\x00" * 64)
    (folder / "best-epoch000.ckpt").write_text("a file named like a checkpoint")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"  # another absolute tree
    elsewhere.mkdir()
    (elsewhere / "victim.ckpt").write_text("far away")

    class Victims:
        canary = tmp_path / "canary"

        def __init__(self):
            self.before = {p: file_hashes(p) for p in (folder, elsewhere)}
            self.before[file] = file.read_text()

        def check(self):
            assert not self.canary.exists(), "a _target_ from a file was instantiated"
            assert file.read_text() == self.before[file]
            for path in (folder, elsewhere):
                assert file_hashes(path) == self.before[path], path

    victims = Victims()
    victims.file, victims.folder, victims.elsewhere = file, folder, elsewhere
    return victims


def _open_canary(canary):
    """A Hydra value that, if instantiated, creates ``canary``."""
    return f"{{_target_:builtins.open,file:'{canary}',mode:w}}"


# --- A1: .hydra/overrides.yaml ------------------------------------------------------------------
# id: (override lines appended to the saved ones, needle of the refusal, or None: accepted).
OVERRIDES = {
    "callback added": (["+callbacks.evil=OPEN"], "names code to run"),
    "callback replaced": (["callbacks.checkpoint=OPEN"], "names code to run"),
    "callback added without _target_": (["+callbacks.evil={file:x}"], "adds a callback"),
    "_target_ key": (["metrics._target_=builtins.open"], "names code to run"),
    "_target_ nested": (["+data.extra={inner:OPEN}"], "names code to run"),
    "_target_ in a list": (["+model.extra=[1,OPEN]"], "names code to run"),
    "_args_ key": (["+data._args_=[CANARY]"], "names code to run"),
    "_partial_ key": (["+metrics._partial_=true"], "names code to run"),
    "group option as code": (["model=OPEN"], "names no option of the model group"),
    "group option not on disk": (["dataset=svhn"], "names no option of the dataset group"),
    "group option as a path to the run's own YAML": (
        ["dataset=EVIL_YAML"],
        "names no option of the dataset group",
    ),
    "group option as an absolute path": (["dataset=/etc/hosts"], "names no option"),
    "hydra key": (["hydra.job.chdir=true"], "changes Hydra itself"),
    "hydra run dir": (["hydra.run.dir=VICTIM_DIR"], "changes Hydra itself"),
    "hydra callback": (["+hydra.callbacks.evil=OPEN"], "changes Hydra itself"),
    "hydra launcher": (["hydra/launcher=slurm"], "changes Hydra itself"),
    "hydra search path": (["hydra.searchpath=[file://VICTIM_DIR]"], "changes Hydra itself"),
    "hydra deletion": (["~hydra.callbacks"], "changes Hydra itself"),
    "package override": (["dataset@model=mnist"], "changes Hydra itself"),
    "package override to _global_": (["callbacks@_global_=none"], "changes Hydra itself"),
    "env resolver": (["data.root=${oc.env:HOME}"], "holds an interpolation"),
    "hydra resolver": (["data.root=${hydra:runtime.cwd}"], "holds an interpolation"),
    "resolver in a quoted value": (["+data.extra='${oc.env:HOME}'"], "holds an interpolation"),
    "resolver nested": (["+data.extra={a:[${oc.env:HOME}]}"], "holds an interpolation"),
    "decode resolver": (["model.latent_dim=${oc.decode:2}"], "holds an interpolation"),
    "sweep": (["seed=1,2"], "is a sweep"),
    "a flag": (["--config-dir=VICTIM_DIR"], "is not an override"),
    # Accepted: the run's own resume= is dropped; a plain setting is a setting.
    "resume entry": (["resume=VICTIM_DIR"], None),
    "plain setting": (["model.kl=mc", "~callbacks.progress_bar"], None),
}


def _evil_yaml(run, canary):
    """A YAML file shipped inside the run, and how a group option reaches it from conf/."""
    (run / "evil.yaml").write_text(
        "# @package _global_\ndata: {name: mnist, binarize: true}\n"
        f"callbacks:\n  evil: {{_target_: builtins.open, file: '{canary}', mode: w}}\n"
    )
    return os.path.relpath(run / "evil", Path(conf_dir(), "dataset"))


@pytest.mark.parametrize("case", list(OVERRIDES))
def test_a_saved_override_that_is_not_a_plain_setting_is_refused(case, run, victims, app):
    lines, needle = OVERRIDES[case]
    fill = {
        "OPEN": _open_canary(victims.canary),
        "CANARY": str(victims.canary),
        "VICTIM_DIR": str(victims.folder),
        "EVIL_YAML": _evil_yaml(run, victims.canary),
    }
    path = run / ".hydra" / "overrides.yaml"
    saved = yaml.safe_load(path.read_text())
    for line in lines:
        for key, value in fill.items():
            line = line.replace(key, value)
        saved.append(line)
    path.write_text(yaml.safe_dump(saved))
    before = file_hashes(run)
    proc = app(f"resume={run}", "trainer.max_epochs=2")  # a run that would train further
    victims.check()
    if needle is None:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert read_metrics(run)["epochs"] == 2
        return
    assert_one_line_error(proc, str(path), needle, "type it on the command line after resume=")
    assert file_hashes(run) == before


# --- A1: .hydra/config.yaml (and hydra.yaml): read for the run's identity, never resolved -------
def _set(cfg, dotted, value):
    *parents, leaf = dotted.split(".")
    for part in parents:
        cfg = cfg.setdefault(part, {})
    cfg[leaf] = value


CONFIGS = {
    # id: (file, {key: value}, needle of the refusal, or None: ignored)
    "_target_ added": ("config.yaml", {"evil": "OPEN"}, None),
    "_target_ in a callback": ("config.yaml", {"callbacks.evil": "OPEN"}, None),
    "_target_ nested in data": ("config.yaml", {"data.extra.inner": "OPEN"}, None),
    "_target_ replaced": ("config.yaml", {"model._target_": "builtins.open"}, None),
    "resolver outside the identity": (
        "config.yaml",
        {"trainer.limit_val_batches": "${oc.env:HOME}"},
        None,
    ),
    "reference in the identity": (
        "config.yaml",
        {"model.latent_dim": "${data.z}", "data.z": 2},
        None,
    ),
    "hydra callback in hydra.yaml": ("hydra.yaml", {"hydra.callbacks.evil": "OPEN"}, None),
    "env resolver in the identity": (
        "config.yaml",
        {"model.latent_dim": "${oc.env:HOME}"},
        "model.latent_dim='${oc.env:HOME}' is not a plain value",
    ),
    "hydra resolver in the identity": (
        "config.yaml",
        {"data.name": "${hydra:runtime.choices.dataset}"},
        "data.name='${hydra:runtime.choices.dataset}' is not a plain value",
    ),
    "decode resolver in the identity": (
        "config.yaml",
        {"model.lr": "${oc.decode:'0.0001'}"},
        "is not a plain value",
    ),
    "resolver in a key the run may predate": (
        "config.yaml",
        {"data.protocol": "${oc.env:HOME}"},
        "data.protocol='${oc.env:HOME}' is not a plain value",
    ),
    "a reference to a resolver": (
        "config.yaml",
        {"model.kl": "${data.kl}", "data.kl": "${oc.env:HOME}"},
        "is not a plain value",
    ),
    "a reference loop": (
        "config.yaml",
        {"data.seed": "${data.seed2}", "data.seed2": "${data.seed}"},
        "is not a plain value",
    ),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_a_saved_config_is_read_never_resolved_or_instantiated(case, run, victims, app):
    name, changes, needle = CONFIGS[case]
    path = run / ".hydra" / name
    cfg = yaml.safe_load(path.read_text())
    code = {"_target_": "builtins.open", "file": str(victims.canary), "mode": "w"}
    for key, value in changes.items():
        _set(cfg, key, code if value == "OPEN" else value)
    path.write_text(yaml.safe_dump(cfg))
    before = file_hashes(run)
    proc = app(f"resume={run}", "trainer.max_epochs=2")
    victims.check()
    if needle is None:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert read_metrics(run)["epochs"] == 2
        return
    assert_one_line_error(proc, f"{path}: ", needle, "it is read, never resolved")
    assert file_hashes(run) == before
    row = read_run(run)  # the report reads the same file the same way
    assert row["status"] == "damaged" and "not a plain value" in row["error"]


# --- A2: the checkpoint's ModelCheckpoint state: every path rebuilt from the run ---------------
def _victim_path(kind, run, victims):
    """A path outside the run, written as a crafted checkpoint would hold it."""
    checkpoints = run / "checkpoints"
    if kind == "a file outside":
        return str(victims.file)
    if kind == "a folder outside":
        return str(victims.folder)
    if kind == "a relative escape":  # Lightning's own guard compares it unresolved: it passes
        return f"{checkpoints}/../../{victims.folder.name}"
    if kind == "an absolute path elsewhere":
        return str(victims.elsewhere / "victim.ckpt")
    link = checkpoints / ("best-epoch007.ckpt" if kind == "a link inside to a folder" else "x.ckpt")
    link.symlink_to(victims.folder if kind == "a link inside to a folder" else victims.file)
    return str(link)


KINDS = [
    "a file outside",
    "a folder outside",
    "a relative escape",
    "an absolute path elsewhere",
    "a link inside to a folder",
    "a link inside to a file",
]
FIELDS = ["best_model_path", "kth_best_model_path", "last_model_path", "best_k_models", "dirpath"]
WORST = torch.tensor(-1e9)  # any epoch is better: Lightning replaces (and deletes) it


def _poison(state, field, victim, run):
    """One field of a ModelCheckpoint state set to ``victim``; "top k" is the attack Lightning
    acts on: the victim as the only, worst, top-k checkpoint, deleted when a better one comes.

    The state names the run's own checkpoints/ (an attacker who knows where it will be
    unpacked): Lightning then takes every saved path as it is.
    """
    state["dirpath"] = str(run / "checkpoints")
    if field == "best_k_models":
        state["best_k_models"] = {victim: state["best_model_score"]}
    elif field == "top k":
        state.update(best_model_path=victim, kth_best_model_path=victim, best_model_score=WORST)
        state.update(best_k_models={victim: WORST}, kth_value=WORST)
    else:
        state[field] = victim


def _checkpoint_state(ckpt):
    (key,) = [k for k in ckpt["callbacks"] if k.startswith("ModelCheckpoint")]
    return ckpt["callbacks"][key]


def _paths_inside(state, checkpoints):
    paths = [state[k] for k in ("best_model_path", "kth_best_model_path", "last_model_path")]
    for path in [*paths, *state["best_k_models"]]:
        assert not path or (Path(path).parent == checkpoints and Path(path).is_file()), path
    assert state["dirpath"] == str(checkpoints)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("field", [*FIELDS, "top k"])
def test_every_path_in_the_checkpoint_state_is_rebuilt_inside_the_run(field, kind, run, victims):
    """Each field and each kind of victim, straight through the callback (no training)."""
    from vae_latent.callbacks import RunCheckpoint

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    state = _checkpoint_state(ckpt)
    _poison(state, field, _victim_path(kind, run, victims), run)
    callback = RunCheckpoint("best-epoch{epoch:03d}", "val/elbo", "max", 1, True, False)
    callback.dirpath = str(run / "checkpoints")
    callback.load_state_dict(state)
    _paths_inside(callback.state_dict(), run / "checkpoints")
    victims.check()


# End to end: the fields Lightning deletes through (last, the top k) with every kind of victim,
# the others with the escape Lightning's guard misses.
E2E = [(f, k) for f in ("last_model_path", "top k") for k in KINDS]
E2E += [(f, "a relative escape") for f in FIELDS if f != "last_model_path"]


@pytest.mark.parametrize(("field", "kind"), E2E)
def test_a_crafted_checkpoint_state_deletes_and_writes_nothing_outside(
    field, kind, run, victims, app
):
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    _poison(_checkpoint_state(ckpt), field, _victim_path(kind, run, victims), run)
    torch.save(ckpt, last)
    proc = app(f"resume={run}", "trainer.max_epochs=2")  # a new best and last: old ones go
    assert proc.returncode == 0, proc.stderr[-3000:]
    victims.check()
    metrics = read_metrics(run)
    assert metrics["status"] == "complete" and metrics["epochs"] == 2
    assert (run / metrics["test_checkpoint"]).resolve().parent == run / "checkpoints"
    _paths_inside(_checkpoint_state(torch.load(last, weights_only=True)), run / "checkpoints")


def test_a_resume_cleans_what_a_killed_run_left_in_the_run_only(run, victims, app):
    """Temp files of atomic writes (``.<name>.tmp``) and a best checkpoint its state no longer
    names go; files that are not the callback's stay; a planted temp-file link is not followed."""
    checkpoints = run / "checkpoints"
    (run / "epochs").mkdir()
    temps = [checkpoints / ".last.ckpt.tmp", run / ".hydra" / ".config.yaml.tmp"]
    temps += [run / "epochs" / ".epoch_002.png.tmp"]
    for tmp in temps:
        tmp.write_bytes(b"half a file")
    (run / ".metrics.json.tmp").symlink_to(victims.file)  # written through, it would change
    stale = [checkpoints / "best-epoch007.ckpt", checkpoints / "best-epoch000-v1.ckpt"]
    for path in stale:
        shutil.copy(checkpoints / "last.ckpt", path)
    kept = {checkpoints / "notes.txt": b"mine", checkpoints / "mine.ckpt": b"mine too"}
    for path, content in kept.items():
        path.write_bytes(content)
    proc = app(f"resume={run}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    victims.check()
    assert not [p for p in [*temps, *stale] if p.exists() or p.is_symlink()]
    assert not (run / ".metrics.json.tmp").is_symlink()
    assert all(path.read_bytes() == content for path, content in kept.items())
    metrics = read_metrics(run)
    assert metrics["status"] == "complete" and (run / metrics["test_checkpoint"]).is_file()
    bests = sorted(p.name for p in checkpoints.glob("best-*.ckpt"))
    assert len(bests) == 1 and metrics["test_checkpoint"] == f"checkpoints/{bests[0]}"


@pytest.mark.parametrize("name", ["checkpoints", ".hydra", "tensorboard", "epochs", "cli.log"])
def test_a_run_whose_folders_link_out_of_it_is_refused(name, run, victims, app):
    """A resume writes into these: a link to a folder (or a log) elsewhere is refused."""
    target = victims.file if name == "cli.log" else victims.folder
    if (run / name).is_dir():
        shutil.copytree(run / name, victims.folder / name)  # the link's target holds a copy
        target = victims.folder / name
        shutil.rmtree(run / name)
    elif (run / name).exists():
        (run / name).unlink()
    (run / name).symlink_to(target)
    victims.before = {p: file_hashes(p) for p in (victims.folder, victims.elsewhere)}
    victims.before[victims.file] = victims.file.read_text()
    before = file_hashes(run)
    proc = app(f"resume={run}", "trainer.max_epochs=2")
    assert_one_line_error(proc, f"{run / name} is a link to", "outside the run")
    victims.check()
    assert file_hashes(run) == before


# --- B3: a run folder named like a multirun job ---------------------------------------------------
@pytest.mark.parametrize("quoted", [False, True], ids=["plain", "hydra-quoted"])
def test_resume_takes_a_folder_whose_name_holds_space_equals_and_comma(base, tmp_path, app, quoted):
    run = tmp_path / "+tier=mnist,experiment=paper" / "a b=c,d"
    shutil.copytree(base, run)
    proc = app(f"resume='{run}'" if quoted else f"resume={run}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_metrics(run)
    assert metrics["status"] == "complete" and metrics["epochs"] == 2
    assert [p.name for p in tmp_path.iterdir()] == [run.parent.name]  # nothing beside it


# --- B4: SIGKILL during a train-further resume ----------------------------------------------------
KILLER = """
import os, signal, sys
from vae_latent import cli
from vae_latent.callbacks import RunCheckpoint
save = RunCheckpoint._save_checkpoint

def save_then_die(self, trainer, filepath):  # the new epoch's first checkpoint, then SIGKILL
    save(self, trainer, filepath)
    os.kill(os.getpid(), signal.SIGKILL)

RunCheckpoint._save_checkpoint = save_then_die
sys.argv = ["vae-latent", *sys.argv[1:]]
cli.train_main()
"""


def test_sigkill_in_a_train_further_resume_leaves_it_to_finish(run, app):
    """Killed after .hydra/ says 2 epochs and a checkpoint of epoch 2 landed: the run is not
    complete, and the next plain resume trains it to 2 epochs."""
    first = read_metrics(run)
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, f"resume={run}", "trainer.max_epochs=2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (
        yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["trainer"]["max_epochs"] == 2
    )
    killed = read_metrics(run)
    assert killed["status"] == "incomplete" and killed["previous"] == first
    done = app(f"resume={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nothing to train" not in done.stdout
    metrics = read_metrics(run)
    assert metrics["status"] == "complete" and metrics["epochs"] == 2
    assert (run / metrics["test_checkpoint"]).is_file()
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1  # no stale best left


# --- C5: a hostile or inconsistent checkpoint: one line, before any data is read ------------------
def _hparams(**values):
    return lambda ckpt: ckpt["hyper_parameters"].update(values)


def _data(**values):
    return lambda ckpt: ckpt["datamodule_hyper_parameters"].update(values)


def _rng(states):
    return lambda ckpt: ckpt.update(rng_states=states)


def _adam_moment(ckpt):
    ckpt["optimizer_states"][0]["state"][0]["exp_avg"] = torch.zeros(3)


HOSTILE = {
    # id: (change to a real checkpoint, needle; resume-only cases in RESUME_ONLY)
    "an _instantiator": (
        _hparams(_instantiator="builtins.print"),
        "_instantiator is not a setting",
    ),
    "a _target_ to import": (_hparams(_target_="trust_canary.Model"), "_target_ is not a setting"),
    "a _partial_": (_hparams(_partial_=True), "_partial_ is not a setting"),
    "hyperparameters under an old key": (
        lambda c: c.update(hparams={"_instantiator": "builtins.print"}),
        "'hparams', a key vae_latent never writes",
    ),
    "hparams_name an argument": (lambda c: c.update(hparams_name="latent_dim"), "hparams_name="),
    "latent 10**9": (_hparams(latent_dim=10**9), "latent_dim=1000000000 must be an integer in"),
    "a list": (lambda c: [1, 2], "is not a vae_latent checkpoint"),
    "no Lightning keys": (lambda c: {"state_dict": c["state_dict"]}, "is not a vae_latent"),
    "weights of another model": (_hparams(latent_dim=8), "its weights do not fit the model"),
    "an image shape of no dataset": (_hparams(image_shape=(1, 28, 27)), "is no dataset's"),
    "an image shape of words": (_hparams(image_shape="abc"), "image_shape='abc' must be"),
    "an unknown dataset": (_data(name="svhn"), "datamodule_hyper_parameters.name='svhn'"),
    "a negative split": (_data(val_size=-1), "datamodule_hyper_parameters.val_size=-1"),
    "data _target_ to import": (_data(_target_="trust_canary.Data"), "_target_ is not a setting"),
    "a version that is none": (lambda c: c.update({"pytorch-lightning_version": 5}), "no version"),
    # What only a resumed fit restores.
    "rng_states a list": (_rng([1]), "rng_states is not a mapping"),
    "rng_states of floats": (_rng({"torch": torch.zeros(5056)}), "'torch' is not a byte tensor"),
    "rng_states too short": (_rng({"torch": torch.zeros(8, dtype=torch.uint8)}), "torch refuses"),
    "rng_states of zeros": (_rng({"torch": torch.zeros(5056, dtype=torch.uint8)}), "refuses"),
    "rng_states cuda words": (_rng({"cuda": "abc"}), "'cuda' is not a list of byte tensors"),
    "a negative epoch": (lambda c: c.update(epoch=-1), "epoch=-1 is not a count"),
    "an epoch of true": (lambda c: c.update(epoch=True), "epoch=True is not a count"),
    "Adam of another model": (_adam_moment, "Adam's exp_avg of weight 0 does not fit"),
    "no Adam": (lambda c: c.update(optimizer_states=[]), "not one Adam state"),
    "no fit loop": (lambda c: c.update(loops={}), "loops holds no fit_loop state"),
    "callbacks of words": (lambda c: c.update(callbacks="abc"), "callbacks is not a mapping"),
}
RESUME_ONLY = list(HOSTILE)[list(HOSTILE).index("rng_states a list") :]
NO_DATA = ["data.root=/nonexistent", "data.download=false"]  # a data error would name it


@pytest.fixture
def hostile(request, run, tmp_path, monkeypatch):
    """(the case's checkpoint file, its needle, the canary a module import would create)."""
    change, needle = HOSTILE[request.param]
    canary = tmp_path / "canary"
    (tmp_path / "trust_canary.py").write_text(
        f"open({str(canary)!r}, 'w').close()\nModel = Data = dict\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "trust_canary", raising=False)
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    torch.save(change(ckpt) or ckpt, last)
    return last, needle, canary


EVAL_CASES = [c for c in HOSTILE if c not in RESUME_ONLY]


@pytest.mark.parametrize("hostile", EVAL_CASES, indirect=True)
def test_eval_of_a_hostile_checkpoint_is_one_line_before_any_data(hostile, tmp_path, app):
    ckpt, needle, canary = hostile
    out = tmp_path / "eval"
    proc = app(f"ckpt={ckpt}", *NO_DATA, f"hydra.run.dir={out}", main="eval")
    assert_one_line_error(proc, str(ckpt), needle)
    assert not canary.exists() and not (out / "metrics.json").exists()


@pytest.mark.parametrize("hostile", list(HOSTILE), indirect=True)
def test_resume_from_a_hostile_checkpoint_is_one_line_and_changes_nothing(hostile, run, app):
    ckpt, needle, canary = hostile
    before = file_hashes(run)
    proc = app(f"resume={run}", "trainer.max_epochs=2", *NO_DATA)
    assert_one_line_error(proc, str(ckpt), needle)
    assert not canary.exists()
    assert file_hashes(run) == before


def test_an_atomic_write_never_writes_through_a_planted_temp_link(tmp_path, victims):
    """``.<name>.tmp`` beside a file the tool writes may be a link someone planted."""
    from vae_latent.files import save_atomic

    target = tmp_path / "run" / "metrics.json"
    target.parent.mkdir()
    (target.parent / ".metrics.json.tmp").symlink_to(victims.file)
    save_atomic(target, b"{}")
    assert target.read_bytes() == b"{}" and not (target.parent / ".metrics.json.tmp").exists()
    victims.check()


def test_a_saved_download_setting_never_downloads_into_a_folder_the_file_names(
    run, victims, tmp_path, app
):
    """overrides.yaml names a data root and download=true: the resume only reads that root."""
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    (run / "metrics.json").unlink()
    saved = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    saved = [o for o in saved if not o.startswith(("data.root=", "data.download="))]
    saved += [f"data.root={empty}", "data.download=true"]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(saved))
    before = file_hashes(run)
    proc = app(f"resume={run}", "trainer.max_epochs=2")
    assert_one_line_error(proc, f"mnist not found under {empty}", "data.download=false")
    assert list(empty.iterdir()) == [] and file_hashes(run) == before
    victims.check()
