"""Every ``resume=`` decision: what a run folder may give a new command (``resume_argv``), what
it may not change, what is left to do, and where the run starts (``decide``, ``Start``).

A run folder can come from anyone (a cluster's shared disk, a colleague's zip): its files are
data. ``.hydra/overrides.yaml`` contributes only plain settings of this app (a config group's
option on disk, or a value with no ``_target_``, no interpolation, nothing under ``hydra``);
``.hydra/config.yaml`` is read for the run's identity only, never resolved through a resolver;
the checkpoint's callback state is rebuilt from the run folder (``callbacks/run_checkpoint.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_latent.errors import ConfigError, UserError
from vae_latent.files import write_json
from vae_latent.run.config import conf_dir
from vae_latent.run.keys import fits, from_config, identity_keys
from vae_latent.run.record import last_complete, read_record
from vae_latent.run.rundir import RunDir
from vae_latent.run.saved_config import ABSENT, read_saved_yaml, saved_settings, saved_value

# Hydra's command-line flags that take a value as the next argument.
VALUE_FLAGS = {"--cfg", "-c", "--config-name", "-cn", "--config-path", "-cp", "--config-dir"}
VALUE_FLAGS |= {"-cd", "--package", "-p"}
INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}  # optional
CODE_KEYS = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}
# What a run writes into, under its own directory: none of it may lead out of the run.
RUN_FOLDERS = (".hydra", "checkpoints", "epochs", "latent", "tensorboard")
RUN_APPENDED = ("cli.log",)  # opened for appending (logging), so a link would be followed


@dataclass(frozen=True)
class Start:
    """Everything resume decides for one run: done already, or where its training starts."""

    done: dict[str, Any] | None = None  # a complete run's record: nothing left to train
    resumed: bool = False  # an earlier run in this folder continues (rank 0 rewrites it)
    ckpt_path: str | None = None  # checkpoints/last.ckpt, to continue from
    checkpoint: dict[str, Any] | None = None  # its contents, read and checked once

    def begin(self, run: Any, run_dir: RunDir, files: dict[str, Any]) -> None:
        """Once the run is built: Lightning restores from the contents already checked, and a
        resumed run's record says incomplete before its config and log are rewritten."""
        if self.checkpoint is not None:
            run.trainer.strategy.checkpoint_io.checked[self.ckpt_path] = self.checkpoint
        if self.resumed:
            mark_resumed(run_dir.root)  # stale temp files cleaned first
            run_dir.start(files)


def decide(
    cfg: DictConfig,
    run_dir: RunDir,
    resume: bool,
    files: dict[str, Any],
    validate: Callable[[DictConfig], None],
) -> Start:
    """New or resumed: refuse what ``resume`` cannot do, ``validate`` the config, and say where
    the run starts. A new run's ``.hydra/`` is written before validation (as Hydra's would be,
    so a refused start keeps its record); an earlier run's files are read only after it."""
    from vae_latent.run.checkpoints import read_checkpoint

    if run_dir.existing and not resume:
        raise UserError(
            f"{run_dir.path} already holds a run; continue it with resume=true (or "
            f"resume={run_dir.path}), or choose another hydra.run.dir"
        )
    if not run_dir.existing:  # a new run: its config and log come first, as Hydra's would
        run_dir.start(files)
    validate(cfg)
    if run_dir.existing and (done := check_continuation(cfg, run_dir.root)):
        return Start(done=done)
    last = run_dir.root / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.is_file() else None
    checked = read_checkpoint(last, resume=True) if ckpt_path else None  # before any data
    if checked is not None:
        check_checkpoint_hparams(checked, cfg, last)
    resumed = run_dir.existing and run_dir.writer
    return Start(resumed=resumed, ckpt_path=ckpt_path, checkpoint=checked)


def resume_argv(argv: list[str]) -> list[str]:
    """``resume=<run dir>``: the run's saved settings, then this command's, in that run dir.

    ``resume=true`` (the same command again in its ``hydra.run.dir``) is left to the app.
    """
    args = [a for a in argv if a.startswith("resume=")]
    if not args:
        return argv
    value = _override_value(args[-1])
    if value.lower() in ("true", "false", "null", "none"):
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise ConfigError(
            "resume=<run dir> resumes one run; to finish a sweep use resume=true with its "
            "hydra.sweep.dir"
        )
    run_dir = Path(value).expanduser().resolve()
    rest = [a for a in argv if not a.startswith(("resume=", "hydra.run.dir="))]
    flags, given = [], []
    for arg in rest:  # Hydra's flags, with the values some take (--cfg job), stay flags
        flag = flags[-1] if flags else ""
        takes_value = (flag in VALUE_FLAGS and "=" not in arg) or (
            flag in ("--info", "-i") and arg in INFO_VALUES
        )
        (flags if arg.startswith("-") or takes_value else given).append(arg)
    overrides = resumed_overrides(run_dir, given)
    return [
        *flags,
        *overrides,
        f"resume={quote(str(run_dir))}",
        f"hydra.run.dir={quote(str(run_dir))}",
    ]


def overrides_to_save(task: list[str]) -> list[str]:
    """What a run's ``.hydra/overrides.yaml`` keeps of its command, for a resume to replay: all
    but ``resume=`` (a resume names its run again itself)."""
    return [o for o in task if not o.startswith("resume=")]


def _override_value(arg: str) -> str:
    """The value of ``key=value`` as Hydra reads it (quotes removed), else as typed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        value = OverridesParser.create().parse_override(arg).value()
    except Exception:  # a path with = or , typed unquoted: take it as it is
        value = None
    return value if isinstance(value, str) else arg.split("=", 1)[1]


def quote(text: str) -> str:
    """``text`` as one quoted Hydra value (spaces, = and , included; no interpolation)."""
    text = re.sub(r"\\(?=')|\\$", r"\\\\", text).replace("'", "\\'").replace("${", "\\${")
    return f"'{text}'"


def resumed_overrides(run_dir: Path, new: list[str]) -> list[str]:
    """The run's saved command-line overrides that are plain settings, then this command's.

    Parsed with Hydra's own override parser, so group overrides (``dataset=...``), additions
    (``+key=``) and deletions (``~key``) keep their meaning; a later override wins. A saved
    override that is not a plain setting is refused, naming the file and the override.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = Path(run_dir, ".hydra", "overrides.yaml")
    if not path.is_file():
        raise ConfigError(
            f"resume={run_dir} is not a run directory (no .hydra/overrides.yaml); pass the "
            "folder that holds checkpoints/ and .hydra/ of an earlier run"
        )
    saved = read_saved_yaml(path)
    if not isinstance(saved, list) or not all(isinstance(o, str) for o in saved):
        raise ConfigError(f"{path} is not a list of overrides; it is damaged")
    parser = OverridesParser.create()
    parsed_new = parser.parse_overrides(new)
    replaced = {o.key_or_group for o in parsed_new if o.type.name != "DEL"}
    kept = []
    for text in saved:
        try:
            override = parser.parse_override(text)
        except Exception as e:  # Hydra's parser (a flag, a typo): not a setting either
            override, why = None, f"is not an override ({type(e).__name__})"
        else:
            why = _not_plain(override, text)
        if why:
            raise ConfigError(
                f"{path}: {text!r} {why}; a run folder's files never name code to run or change "
                "Hydra itself: if you mean it, type it on the command line after resume="
            )
        assert override is not None
        if override.key_or_group not in replaced | {"resume", "data.download"}:
            kept.append(text)
    # A file never makes the tool download (write) into a folder it names: the saved data.root
    # is read only, unless this command allows the download itself.
    given = {o.key_or_group for o in parsed_new}
    reads_only = [] if "data.download" in given else ["data.download=false"]
    return kept + _legacy_values(run_dir, kept + new) + reads_only + new


def _not_plain(override: Any, text: str) -> str | None:
    """Why a saved override is not a plain setting of this app, or None."""
    key = override.key_or_group
    if key == "hydra" or key.startswith(("hydra.", "hydra/")) or override.package is not None:
        return "changes Hydra itself (hydra.*, a launcher, a package)"
    if "${" in text:
        return "holds an interpolation (${...}), which can run a resolver"
    if override.type.name == "DEL":
        return None
    if override.is_sweep_override():
        return "is a sweep, not one run's setting"
    value = override.value()
    if (Path(conf_dir()) / key).is_dir():  # a config group: its option must be a file of ours
        # A plain name only: Hydra takes `dataset=../../x` as a path to any YAML file on disk.
        plain = isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_-]+", value)
        option = Path(conf_dir(), key, f"{value}.yaml") if plain else None
        return None if option and option.is_file() else f"names no option of the {key} group"
    if set(key.split(".")) & CODE_KEYS or _names_code(value):
        return "names code to run (_target_)"
    if key.split(".")[0] == "callbacks" and isinstance(value, dict):
        return "adds a callback (code to run)"
    return None


def _names_code(value: Any) -> bool:
    if isinstance(value, dict):
        return bool(set(value) & CODE_KEYS) or any(_names_code(v) for v in value.values())
    if isinstance(value, list):
        return any(_names_code(v) for v in value)
    return False


def _legacy_values(run_dir: Path, overrides: list[str]) -> list[str]:
    """Identity settings whose default changed or that the run predates, at the value the run
    was made with: its saved model setting (``model.init`` was ``torch`` by default before
    2026-11-30), else ``RunKey.legacy``. Only when neither command line names them."""
    saved, source = saved_settings(run_dir), str(Path(run_dir, ".hydra", "config.yaml"))
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    values = []
    for k in identity_keys():
        if k.legacy is None or k.path in given:
            continue
        value = saved_value(saved, k, source=source)
        if value is ABSENT:
            values.append(f"{k.path}={k.legacy}")
        elif k.section == "model" and fits(k, value) and value is not None:
            # A model setting is set only by its own key (no group sets it): the saved value is
            # the run's, whatever today's default. Validated with the rest of the config.
            values.append(f"{k.path}={quote(value) if isinstance(value, str) else value}")
    return values


def check_continuation(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """Refuse a resume the checkpoint cannot continue; a complete run's record if it is done."""
    saved = saved_settings(run_dir)
    if saved is None:
        raise ConfigError(
            f"resume: {run_dir} is not a run directory (no .hydra/config.yaml); pass the folder "
            "that holds checkpoints/ and .hydra/ of an earlier run"
        )
    check_layout(run_dir)
    source = str(Path(run_dir, ".hydra", "config.yaml"))
    for key in identity_keys():
        before, after = saved_value(saved, key, source=source), from_config(cfg, key)
        before = key.legacy if before is ABSENT else before
        if before != after:
            # A model setting whose default changed (model.init): the run's own value continues it.
            fix = (
                f"add {key.path}={before} to continue it, or start a new run"
                if key.section == "model" and key.legacy is not None
                else "start a new run"
            )
            raise ConfigError(
                f"resume: {key.path}={after} but the run was made with {key.path}={before}: its "
                f"checkpoint cannot continue with another architecture, data or recipe; {fix} "
                "in another hydra.run.dir instead"
            )
    status, _, record = read_record(run_dir)
    if status == "complete" and not _trains_further(saved, cfg, record):
        print(f"{run_dir} is complete (metrics.json): nothing to train", flush=True)
        return record
    return None


def check_layout(run_dir: Path) -> None:
    """Refuse a run whose folders or log are links out of it: a resume writes there."""
    root = Path(run_dir).resolve()
    for name in (*RUN_FOLDERS, *RUN_APPENDED):
        path = Path(run_dir, name)
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise ConfigError(
                f"resume: {path} is a link to {path.resolve()}, outside the run; a resume "
                "writes there, so it is refused: replace the link with a folder of the run"
            )


def _trains_further(saved: dict[str, Any], cfg: DictConfig, record: dict[str, Any]) -> bool:
    """Whether ``cfg`` lets a complete run train past where its own config stopped it (not its
    epochs: a run ended by early stopping or ``max_steps`` is complete under the same command)."""

    def limit(value: Any) -> float:
        plain = isinstance(value, (int, float)) and not isinstance(value, bool)
        return math.inf if not plain or value == -1 else float(value)

    trainer = saved.get("trainer") if isinstance(saved.get("trainer"), dict) else {}
    before = limit(trainer.get("max_epochs", record.get("epochs")))
    after = OmegaConf.select(cfg, "trainer.max_epochs")
    steps = OmegaConf.select(cfg, "trainer.max_steps", default=None)
    return limit(after) > before or limit(steps) > limit(trainer.get("max_steps"))


def check_checkpoint_hparams(ckpt: dict[str, Any], cfg: DictConfig, path: Path) -> None:
    """The checkpoint's own model hyperparameters against the config (an edited .hydra/ too)."""
    hparams = ckpt["hyper_parameters"]
    for key in identity_keys():
        if key.section == "model" and hparams.get(key.leaf, key.legacy) != from_config(cfg, key):
            raise ConfigError(
                f"resume: {key.path}={from_config(cfg, key)} but {path.name} was trained "
                f"with {hparams.get(key.leaf, key.legacy)}; start a new run in another "
                "hydra.run.dir instead"
            )


def mark_resumed(run_dir: Path) -> None:
    """Before a resumed run rewrites .hydra/: its record says incomplete, so that a resume killed
    now is finished by the next one (the earlier complete record is kept under ``previous``)."""
    remove_stale_temp_files(run_dir)  # first: a planted .metrics.json.tmp link is not written
    previous = last_complete(read_record(run_dir)[2])
    record = {"status": "incomplete", "error": "resumed; not finished yet"}
    write_json(
        Path(run_dir, "metrics.json"), {**record, "previous": previous} if previous else record
    )


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files of atomic writes that a killed process left (``.<name>.tmp``, ours only)."""
    run_dir = Path(run_dir)
    for folder in (run_dir, *(run_dir / name for name in RUN_FOLDERS)):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() and not folder.is_symlink() else []:
            if tmp.is_file() or tmp.is_symlink():
                tmp.unlink()
