"""A sweep's runs aggregated: means over seeds, tiers compared per recipe and latent size."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from vae_latent.data.datasets import TIERS
from vae_latent.files import read_yaml
from vae_latent.run.keys import names, recipe_names
from vae_latent.study.runs import METRICS

INTERPRETABILITY = ["linear_probe_acc", "knn_acc", "silhouette"]
# Log-likelihood terms: comparable across runs only where the likelihood is a normalized density.
NLL = {"test_elbo", "test_recon", "iw_nll", "bits_per_dim"}


def tier_order() -> list[str]:
    """The tiers, simplest first (data/datasets.py's table)."""
    return list(TIERS)


def group_keys() -> list[str]:
    """Shown for each configuration of the seed table (its runs agree on every other setting)."""
    return ["tier", *(k for k in names() if k != "seed")]


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
            **{k: runs[0][k] for k in group_keys()},
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
        tier_order().index(r["tier"]) if r["tier"] in TIERS else len(TIERS),
        r.get("latent_dim") or 0,
        r.get("lr") or 0,
        seed if isinstance(seed, int) else 0,
    )


def grouped(rows: list[dict[str, Any]], metric: str) -> dict[tuple[str, int], dict[str, Stat]]:
    """(recipe, latent_dim) -> tier -> ``metric`` over the complete runs (mean ± std over seeds).

    The recipe is a label of the recipe keys that vary in the sweep ("" when none does):
    only runs of one recipe are pooled as seeds and compared across tiers.
    """
    complete = [r for r in rows if r["status"] == "complete"]
    varying = varying_recipe(complete)
    acc: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in complete:
        if r.get(metric) is None or (metric in NLL and not r["nll_comparable"]):
            continue
        acc[(recipe_label(r, varying), r["latent_dim"])][r["tier"]].append(float(r[metric]))
    return {key: {t: Stat.of(v) for t, v in tiers.items()} for key, tiers in sorted(acc.items())}


def varying_recipe(rows: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> list[str]:
    """The recipe keys (but ``skip``) whose value differs between ``rows``: runs that differ in
    one are different models or recipes, never seeds of one (a missing value is not a value)."""
    values = {k: {str(r[k]) for r in rows if r.get(k) is not None} for k in recipe_names()}
    return [k for k in recipe_names() if k not in skip and len(values[k]) > 1]


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


CAPACITY = ("width", "depth")  # what a capacity sweep varies; params is their measure


def varies_capacity(rows: list[dict[str, Any]]) -> bool:
    complete = [r for r in rows if r["status"] == "complete"]
    return len({tuple(r.get(k) for k in CAPACITY) for r in complete}) > 1


def by_capacity(
    rows: list[dict[str, Any]], metric: str
) -> dict[tuple[str, int], dict[str, list[tuple[int, Stat]]]]:
    """(recipe but capacity, latent_dim) -> tier -> [(parameters, ``metric`` over seeds)], by
    parameter count: the same comparison as ``grouped``, with capacity as an axis."""
    complete = [r for r in rows if r["status"] == "complete" and r.get("params")]
    varying = varying_recipe(complete, skip=CAPACITY)
    acc: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in complete:
        if r.get(metric) is None or (metric in NLL and not r["nll_comparable"]):
            continue
        key = (recipe_label(r, varying), r["latent_dim"])
        acc[key][r["tier"]][r["params"]].append(float(r[metric]))
    return {
        key: {t: sorted((p, Stat.of(v)) for p, v in by_p.items()) for t, by_p in tiers.items()}
        for key, tiers in sorted(acc.items())
    }


@dataclass(frozen=True)
class GapChange:
    """How the gap (simpler tier minus harder tier) of a metric moves from the smallest model
    to the largest both tiers were trained at."""

    simpler: str
    harder: str
    small: int  # parameters
    large: int
    gap_small: float
    gap_large: float
    noise: float | None  # the seed std of the change (None: one seed somewhere)

    @property
    def change(self) -> float:
        return self.gap_large - self.gap_small

    @property
    def verdict(self) -> str:
        """shrinks, grows, reverses, stays (within seed noise), or undecided (no spread)."""
        if self.noise is None:
            return "undecided"
        if abs(self.change) <= self.noise:
            return "stays"
        if self.gap_small * self.gap_large < 0 and abs(self.gap_large) > self.noise:
            return "reverses"
        return "shrinks" if abs(self.gap_large) < abs(self.gap_small) else "grows"


def gap_changes(by_tier: dict[str, list[tuple[int, Stat]]]) -> list[GapChange]:
    """The simplest tier present against each harder one, at the smallest and the largest
    parameter count both have."""
    present = [t for t in tier_order() if t in by_tier]
    changes = []
    for harder in present[1:]:
        ref, other = dict(by_tier[present[0]]), dict(by_tier[harder])
        common = sorted(set(ref) & set(other))
        if len(common) < 2:
            continue
        small, large = common[0], common[-1]
        stats = [ref[small], other[small], ref[large], other[large]]
        stds = [s.std for s in stats]
        noise = None if None in stds else sum(v * v for v in stds) ** 0.5
        changes.append(
            GapChange(
                present[0],
                harder,
                small,
                large,
                ref[small].mean - other[small].mean,
                ref[large].mean - other[large].mean,
                noise,
            )
        )
    return changes


def degradation(by_tier: dict[str, Stat]) -> tuple[int, int, int]:
    """Ordered tier pairs (simpler, harder) where the mean falls, rises, or moves within one std."""
    present = [t for t in tier_order() if t in by_tier]
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


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def best_trial(
    rows: list[dict[str, Any]], sweep_dir: Path
) -> tuple[float, dict, str | None] | None:
    """Optuna's best value and parameters (optimization_results.yaml), and the run behind it."""
    path = sweep_dir / "optimization_results.yaml"
    if not path.exists():
        return None
    try:
        result = read_yaml(path)
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or "best_params" not in result:  # multi-objective: a front
        return None
    value, params = result.get("best_value"), result["best_params"]
    if not _finite(value) or not isinstance(params, dict):
        return None  # not Optuna's record of one best trial: nothing to report from it
    params = {k: v for k, v in params.items() if isinstance(v, (str, int, float, bool))}
    run = next(
        (
            r["run"]
            for r in rows
            if r.get("best_val_elbo") is not None
            and abs(r["best_val_elbo"] - value) <= 1e-6 * max(1.0, abs(value))
        ),
        None,
    )
    return float(value), params, run
