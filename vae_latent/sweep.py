"""The runs of a sweep, collected from disk and aggregated: one row per run, means over seeds."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_latent.files import read_json
from vae_latent.record import run_status

CONFIG_KEYS = [
    "dataset",
    "channels",
    "protocol",
    "latent_dim",
    "likelihood",
    "binarize",
    "kl",
    "lr",
    "batch_size",
    "seed",
]
# Shown for each configuration of the seed table (its runs agree on every other setting too).
GROUP_KEYS = ["tier", *(k for k in CONFIG_KEYS if k != "seed")]
# Settings that do not change what a run computes: left out when runs are matched up as seeds.
NOT_THE_EXPERIMENT = ["seed", "resume", "data.root", "data.download"]
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
    "images_per_second": ("train images/s", True),
    "train_seconds": ("train seconds", False),
}
# The study's tiers of data complexity, simplest first, named as in conf/tier/.
TIERS = ["mnist", "fashion_mnist", "cifar10_gray", "cifar10_rgb"]
TIER_NAMES = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10_gray": "CIFAR-10 gray",
    "cifar10_rgb": "CIFAR-10 RGB",
}
INTERPRETABILITY = ["linear_probe_acc", "knn_acc", "silhouette"]
# Log-likelihood terms: comparable across runs only where the likelihood is a normalized density.
NLL = {"test_elbo", "test_recon", "iw_nll", "bits_per_dim"}
# Runs of different tiers are compared only under the same protocol and recipe (seeds aside):
# other protocols score other weights; another learning rate or KL estimator is another model.
RECIPE_KEYS = ["protocol", "lr", "kl", "likelihood", "batch_size", "epochs"]


def tier(dataset: Any, channels: Any) -> str:
    """The complexity tier of a run: MNIST-family sets are gray whatever ``channels`` says."""
    if dataset != "cifar10":
        return str(dataset)
    return "cifar10_gray" if channels == "gray" else "cifar10_rgb"


def read_run(run_dir: Path) -> dict[str, Any]:
    """One row: the run's config keys, every metric, and its status (see ``run_status``)."""
    row: dict[str, Any] = {"run": "", **dict.fromkeys(CONFIG_KEYS), **dict.fromkeys(METRICS)}
    try:
        cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        if not isinstance(cfg, DictConfig):
            raise ValueError("not a mapping")
    except Exception as e:
        row.update(
            status="damaged", error=f".hydra/config.yaml cannot be read ({type(e).__name__})"
        )
        row.update(config="", tier="?", nll_comparable=False, kl_per_dim="null")
        return row

    def get(key: str, default: Any = None) -> Any:
        return OmegaConf.select(cfg, key, default=default, throw_on_resolution_failure=False)

    row.update(
        config=config_id(cfg),
        dataset=get("data.name"),
        channels=get("data.channels"),
        protocol=get("data.protocol", "validation"),
        latent_dim=get("model.latent_dim"),
        likelihood=get("model.likelihood", "bernoulli"),
        binarize=get("data.binarize"),
        kl=get("model.kl"),
        lr=get("model.lr"),
        batch_size=get("data.batch_size"),
        seed=get("seed"),
    )
    row["status"], row["error"] = run_status(run_dir)
    if row["status"] in ("complete", "failed"):
        metrics = read_json(run_dir / "metrics.json")
        row.update({k: metrics.get(k, row.get(k)) for k in CONFIG_KEYS})
        row.update({k: metrics.get(k) for k in METRICS})
        row["kl_per_dim"] = json.dumps(metrics.get("kl_per_dim"))
    row["protocol"] = row["protocol"] or "validation"
    row["tier"] = tier(row["dataset"], row["channels"])
    # A Bernoulli likelihood is a normalized density only on binary pixels.
    row["nll_comparable"] = row["likelihood"] == "continuous_bernoulli" or bool(row["binarize"])
    return row


def config_id(cfg: DictConfig) -> str:
    """A short hash of the run's composed config without its seed: equal for repeats of a run.

    The config is the run's saved one, interpolations unresolved, so settings derived from the
    seed (``data.seed: ${seed}``) stay equal too.
    """
    cfg = cfg.copy()
    for key in NOT_THE_EXPERIMENT:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig) and leaf in node:
            del node[leaf]
    text = json.dumps(OmegaConf.to_container(cfg, resolve=False), sort_keys=True, default=str)
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


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for a single run) and count of one metric."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        return cls(mean(values), stdev(values) if len(values) > 1 else None, len(values))


def within_one_std(a: Stat, b: Stat) -> bool:
    """Whether two means differ by less than the larger of their two seeds' std."""
    stds = [s.std for s in (a, b) if s.std is not None]
    return bool(stds) and abs(a.mean - b.mean) < max(stds)


def seed_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration (same config but the seed): mean, ``<metric>_std``, ``n``."""
    by_config: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["status"] == "complete":
            by_config[r["config"]].append(r)
    groups = []
    for config, runs in by_config.items():
        group = {
            "kind": "seed_mean",
            "config": config,
            **{k: runs[0][k] for k in GROUP_KEYS},
            "seed": " ".join(str(r["seed"]) for r in runs),
            "status": "complete",
            "n": len(runs),
            "nll_comparable": runs[0]["nll_comparable"],
        }
        for metric in METRICS:
            values = [float(r[metric]) for r in runs if r.get(metric) is not None]
            stat = Stat.of(values) if values else None
            group[metric] = stat.mean if stat else None
            group[f"{metric}_std"] = stat.std if stat else None
        groups.append(group)
    return sorted(groups, key=run_order)


def run_order(r: dict[str, Any]) -> tuple:
    """Simplest tier first, then latent size, then learning rate, then seed."""
    seed = r.get("seed")
    return (
        TIERS.index(r["tier"]) if r["tier"] in TIERS else 9,
        r.get("latent_dim") or 0,
        r.get("lr") or 0,
        seed if isinstance(seed, int) else 0,
    )


def grouped(rows: list[dict[str, Any]], metric: str) -> dict[tuple[str, int], dict[str, Stat]]:
    """(recipe, latent_dim) -> tier -> ``metric`` over the complete runs (mean ± std over seeds).

    The recipe is a label of the ``RECIPE_KEYS`` that vary in the sweep ("" when none does):
    only runs of one recipe are pooled as seeds and compared across tiers.
    """
    complete = [r for r in rows if r["status"] == "complete"]
    varying = [k for k in RECIPE_KEYS if len({str(r.get(k)) for r in complete}) > 1]
    acc: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in complete:
        if r.get(metric) is None or (metric in NLL and not r["nll_comparable"]):
            continue
        acc[(recipe_label(r, varying), r["latent_dim"])][r["tier"]].append(float(r[metric]))
    return {key: {t: Stat.of(v) for t, v in tiers.items()} for key, tiers in sorted(acc.items())}


def recipe_label(row: dict[str, Any], keys: list[str]) -> str:
    """E.g. 'study protocol, lr=0.001': the row's values of ``keys``."""
    parts = []
    for key in keys:
        value = row.get(key)
        if key == "protocol":
            parts.append(f"{value} protocol")
        else:
            parts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(parts)


def degradation(by_tier: dict[str, Stat]) -> tuple[int, int, int]:
    """Ordered tier pairs (simpler, harder) where the mean falls, rises, or moves within one std."""
    present = [t for t in TIERS if t in by_tier]
    falls = rises = within = 0
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            sa, sb = by_tier[a], by_tier[b]
            if sa.mean == sb.mean or within_one_std(sa, sb):
                within += 1
            elif sa.mean > sb.mean:
                falls += 1
            else:
                rises += 1
    return falls, rises, within


def best_trial(
    rows: list[dict[str, Any]], sweep_dir: Path
) -> tuple[float, dict, str | None] | None:
    """Optuna's best value and parameters (optimization_results.yaml), and the run behind it."""
    path = sweep_dir / "optimization_results.yaml"
    if not path.is_file():
        return None
    result = OmegaConf.to_container(OmegaConf.load(path))
    if "best_params" not in result:  # a multi-objective study has a Pareto front instead
        return None
    value = float(result["best_value"])
    run = next(
        (
            r["run"]
            for r in rows
            if r.get("best_val_elbo") is not None
            and abs(r["best_val_elbo"] - value) <= 1e-6 * max(1.0, abs(value))
        ),
        None,
    )
    return value, result["best_params"], run
