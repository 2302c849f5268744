"""The runs of a sweep, collected from disk: one row per run, its settings, scores and status.

A run folder is data: its ``.hydra/config.yaml`` is read as plain YAML (never resolved) and its
``metrics.json`` values are checked; a run with a value that is not a finite number where a
number belongs is named as damaged and left out of every comparison.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from vae_latent.data.datasets import tier
from vae_latent.errors import ConfigError
from vae_latent.files import read_yaml
from vae_latent.run.keys import RUN_KEYS, fits, names, not_the_experiment
from vae_latent.run.record import read_record
from vae_latent.run.saved_config import ABSENT, saved_value

# name -> (label, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "test_elbo": ("test ELBO (nats)", True),
    "test_recon": ("test reconstruction NLL (nats)", False),
    "test_kl": ("test KL (nats)", False),
    "iw_nll": ("IW NLL (nats)", False),
    "iw_nll_se": ("IW NLL standard error (nats)", False),
    "bits_per_dim": ("bits/dim", False),
    "active_units": ("active units", True),
    "linear_probe_acc": ("linear-probe accuracy", True),
    "knn_acc": ("5-NN accuracy", True),
    "silhouette": ("silhouette", True),
    "best_val_elbo": ("best val ELBO (nats)", True),
    "epochs": ("epochs", True),
    "params": ("parameters", False),
    "images_per_second": ("train images/s", True),
    "train_seconds": ("train seconds", False),
}


def read_run(run_dir: Path) -> dict[str, Any]:
    """One row: the run's keys, every metric, and its status (see ``read_record``)."""
    row: dict[str, Any] = {"run": "", **dict.fromkeys(names()), **dict.fromkeys(METRICS)}
    row.update(config="", tier="?", nll_comparable=False, kl_per_dim="null", error="")
    try:
        saved = read_yaml(run_dir / ".hydra" / "config.yaml")
        if not isinstance(saved, dict):
            raise ValueError("not a mapping")
        row.update({key.name: _saved(saved, key) for key in RUN_KEYS})
        row["config"] = config_id(saved)
        if bad := next((k for k in RUN_KEYS if not _plain(k, row[k.name])), None):
            raise ValueError(f"{bad.path}={row[bad.name]!r} is not a {bad.kind.__name__}")
    except (OSError, ValueError, ConfigError) as e:
        return {**row, "status": "damaged", "error": f".hydra/config.yaml: {_short(e)}"}
    row["status"], row["error"], metrics = read_record(run_dir)
    if metrics is not None and row["status"] in ("complete", "failed"):
        wrong = [k.name for k in RUN_KEYS if not _plain(k, metrics.get(k.name))]
        wrong += [k for k in METRICS if not _number_or_none(metrics.get(k))]
        if wrong:
            value = repr(metrics.get(wrong[0]))[:40]
            error = f"metrics.json: {wrong[0]}={value} is not a plain value of its kind"
            return {**row, "status": "damaged", "error": error}
        row.update({k: metrics[k] for k in names() if metrics.get(k) is not None})
        row.update({k: metrics.get(k) for k in METRICS})
        row["kl_per_dim"] = json.dumps(metrics.get("kl_per_dim"))
    row["tier"] = tier(row["dataset"], row["channels"])
    # A Bernoulli likelihood is a normalized density only on binary pixels.
    row["nll_comparable"] = row["likelihood"] == "continuous_bernoulli" or bool(row["binarize"])
    return row


def _saved(saved: dict[str, Any], key: Any) -> Any:
    value = saved_value(saved, key)
    return key.legacy if value is ABSENT or value is None else value


def _plain(key: Any, value: Any) -> bool:
    """A run key's value of its kind; a number finite (NaN or Infinity is no setting)."""
    return fits(key, value) and not (isinstance(value, float) and not math.isfinite(value))


def _number_or_none(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"


def config_id(saved: dict[str, Any]) -> str:
    """A short hash of the run's saved config without its seed: equal for repeats of a run.

    The config is the run's saved one, interpolations unresolved, so settings derived from the
    seed (``data.seed: ${seed}``) stay equal too.
    """
    plain = json.loads(json.dumps(saved, default=str))
    for path in not_the_experiment():
        *parents, leaf = path.split(".")
        node = plain
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every run under ``sweep_dir`` (a run is a folder with .hydra/config.yaml)."""
    rows = []
    for config in sorted(Path(sweep_dir).rglob(".hydra/config.yaml")):
        run_dir = config.parent.parent
        row = read_run(run_dir)
        row["run"] = str(run_dir.relative_to(sweep_dir)) or "."
        rows.append(row)
    return rows
