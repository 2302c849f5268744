"""The apps: ``vae-latent`` (train), ``vae-latent-eval`` and ``vae-latent-report``.

Each composes its config with Hydra, calls the library, and turns a user's mistake into one
line on stderr and an exit code: 2 for input or files the user can fix (a bad setting, a full
disk), 1 when training diverged or a job of a multirun did not complete, 130/143 when Ctrl-C or
SIGTERM stopped it (the run is left to resume).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from vae_latent.errors import Interrupted, RunDirBusy, UserError, user_error
from vae_latent.files import shown
from vae_latent.run.config import conf_dir
from vae_latent.run.record import record_failure, run_status
from vae_latent.text import one_line, user_line

log = logging.getLogger("vae_latent")


def fail(prog: str, error: object, code: int = 2) -> NoReturn:
    """The one way an app stops on a user's mistake: one line on stderr, then exit ``code``."""
    print(f"{prog}: error: {user_line(error)}", file=sys.stderr)
    sys.exit(code)


def _hydra_files(cfg: DictConfig) -> dict[str, Any]:
    """What Hydra would write into .hydra/ (the app writes it once it owns the run dir)."""
    from vae_latent.run.resume import overrides_to_save

    hc = HydraConfig.get()
    return {
        "config.yaml": cfg,
        "hydra.yaml": OmegaConf.create({"hydra": OmegaConf.to_container(hc, resolve=False)}),
        "overrides.yaml": OmegaConf.create(overrides_to_save(list(hc.overrides.task))),
    }


@hydra.main(config_path=conf_dir(), config_name="train", version_base="1.3")
def _train_app(cfg: DictConfig) -> float:
    """One training run; returns its best validation ELBO (NaN if none), the sweepers' objective."""
    from vae_latent.run.train import train

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        record = train(cfg, out_dir, resume=bool(cfg.get("resume")), hydra_files=_hydra_files(cfg))
        best = record.get("best_val_elbo")
        return float("nan") if best is None else best
    except Exception as e:
        _job_failed(e, out_dir, cfg, "vae-latent")
        return float("nan")  # Optuna records the trial as failed and goes on


@hydra.main(config_path=conf_dir(), config_name="eval", version_base="1.3")
def _eval_app(cfg: DictConfig) -> None:
    from vae_latent.run.evaluate import evaluate

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        evaluate(cfg, out_dir, hydra_files=_hydra_files(cfg))
    except Exception as e:
        _job_failed(e, out_dir, cfg, "vae-latent-eval")


def _job_failed(e: Exception, out_dir: Path, cfg: DictConfig, prog: str) -> None:
    """Called in ``except``: one line and exit for a single run; in a sweep, record and go on."""
    cause = user_error(e)
    # Ctrl-C or SIGTERM stops a sweep too (a scheduler's stop): resume=true finishes it later.
    if HydraConfig.get().mode != RunMode.MULTIRUN or isinstance(cause, Interrupted):
        if cause is None:
            raise e  # a bug: keep the traceback
        fail(prog, cause, cause.exit_code)
    log.error(f"{prog}: error: {cause or f'{type(e).__name__}: {e}'}", exc_info=cause is None)
    # Failed before the run recorded anything, in a directory this job may write.
    if not isinstance(cause, RunDirBusy) and run_status(out_dir)[0] == "incomplete":
        record_failure(out_dir, cfg, str(cause or e))


class SweepCheck(Callback):
    """Hydra callback at the start of a multirun: every job a basic sweep will launch is
    validated before the first one runs (``validate_sweep``); a bad one stops the sweep with
    one line and exit 2 (Hydra turns a callback's exception into a warning, so it exits)."""

    def __init__(self, prog: str = "vae-latent") -> None:
        self.prog = prog

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from vae_latent.run.validate import validate_sweep

        sweeper = config.hydra.sweeper
        if not str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
            return  # a search (Optuna) draws its values as it goes
        params = sweeper.get("params")
        try:
            params = OmegaConf.to_container(params, resolve=True) if params else None
            validate_sweep(list(config.hydra.overrides.task), params)
        except UserError as e:
            fail(self.prog, e, e.exit_code)


class SweepEnd(Callback):
    """Hydra callback at the end of a multirun: the report, then the exit code from disk.

    Every job's status is read from its metrics.json, so jobs that ran in other processes
    (joblib, SLURM) count too; any job that did not complete makes the sweep exit 1.
    """

    def __init__(self, prog: str = "vae-latent", report: bool = True) -> None:
        self.prog, self.report = prog, report

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from vae_latent.study.runs import collect

        sweep_dir = Path(config.hydra.sweep.dir)
        runs = collect(sweep_dir)
        if self.report:
            from vae_latent.study.report import write_report

            try:
                write_report(sweep_dir, runs)
                print(f"{self.prog}: report of {len(runs)} runs in {one_line(sweep_dir)}/report.md")
            except OSError as e:
                print(f"{self.prog}: error: {one_line(user_error(e) or e)}", file=sys.stderr)
        bad = [str((sweep_dir / r["run"]).resolve()) for r in runs if r["status"] != "complete"]
        if bad:
            failed = one_line(", ".join(bad))
            print(f"{self.prog}: {len(bad)} job(s) failed: {failed}", file=sys.stderr)
            sys.exit(1)


def hydra_error_line(e: BaseException) -> str:
    """Hydra's multi-line composition errors, folded into one line."""
    options = getattr(e, "options", None)  # MissingConfigException: an unknown group option
    if options:
        return f"{str(e).splitlines()[0]}; available: {', '.join(options)}"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    skip = ("Config search path", "provider=", "Set the")
    text = "; ".join(line for line in lines if not line.startswith(skip))[:400]
    if "mismatched input '='" in text:  # e.g. ckpt= a multirun job's folder, named key=value
        text += "; quote a value that holds = or , as key=\"'...'\""
    return text


def run_app(app: Callable[[], Any], prog: str) -> None:
    """Run a Hydra app; composition errors and unwritable run dirs print one line, exit 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Hydra then raises composition errors instead of printing them over several lines.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    # Library warnings go to the log (console and the run's log file); stderr keeps the
    # progress bar and our one-line errors.
    logging.captureWarnings(True)
    threading.excepthook = _thread_error
    try:
        app()
    except (HydraException, OmegaConfBaseException) as e:
        fail(prog, hydra_error_line(e))
    except OSError as e:  # Hydra could not create the run (or sweep) directory
        if e.filename is None:
            raise
        where = shown(e.filename)
        fail(prog, f"cannot create {where} ({e.strerror}); choose another hydra.run.dir (or "
             "hydra.sweep.dir)")  # fmt: skip
    except UserError as e:
        fail(prog, e, e.exit_code)
    except ValueError as e:  # Hydra's own check of its flags (two modes at once)
        if not str(e).startswith("Only one of --run, --multirun, --cfg"):
            raise
        fail(prog, f"{e}; use one of them at a time")


def _thread_error(args: threading.ExceptHookArgs) -> None:
    """A full disk in a writer thread (TensorBoard's): no traceback; the run reports it.

    The writer keeps the error and raises it again on the next write or on close, in the
    main thread, where it becomes the run's one-line error.
    """
    if isinstance(args.exc_value, OSError) and user_error(args.exc_value) is not None:
        return
    threading.__excepthook__(args)


def train_main() -> None:
    """Console entry point ``vae-latent``."""
    from hydra.errors import HydraException

    from vae_latent.run.resume import resume_argv

    try:
        sys.argv[1:] = resume_argv(sys.argv[1:])
    except UserError as e:
        fail("vae-latent", e, e.exit_code)
    except HydraException as e:  # an override that does not parse
        fail("vae-latent", hydra_error_line(e))
    run_app(_train_app, "vae-latent")


def eval_main() -> None:
    """Console entry point ``vae-latent-eval``."""
    run_app(_eval_app, "vae-latent-eval")


def report_main(argv: list[str] | None = None) -> None:
    """``vae-latent-report DIR``: (re)build the report of a sweep directory."""
    from vae_latent.study.report import write_report
    from vae_latent.study.runs import collect

    parser = argparse.ArgumentParser(prog="vae-latent-report", description=report_main.__doc__)
    parser.add_argument("dir", type=Path, help="a multirun directory (or any folder of runs)")
    args = parser.parse_args(argv)
    prog = "vae-latent-report"
    if not args.dir.is_dir():
        fail(prog, f"{args.dir} is not a directory; pass a sweep directory")
    runs = collect(args.dir)
    if not runs:
        fail(prog, f"no runs (no .hydra/config.yaml) under {args.dir}")
    try:
        write_report(args.dir, runs)
    except OSError as e:
        fail(prog, user_error(e) or e)
    damaged = [f"{r['run']} ({r['error']})" for r in runs if r["status"] == "damaged"]
    if damaged:
        damaged_line = one_line("; ".join(damaged))
        print(f"{prog}: damaged runs, reported as such: {damaged_line}", file=sys.stderr)
    print(one_line(f"{len(runs)} runs -> {args.dir / 'summary.csv'}, {args.dir / 'report.md'}"))
