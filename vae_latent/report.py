"""The sweep report: summary.csv, report.md with conclusions computed from the table, figures."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

CONFIG_KEYS = [
    "dataset",
    "channels",
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
# The study's tiers of data complexity, simplest first.
TIERS = ["mnist", "fashion_mnist", "cifar10-gray", "cifar10-rgb"]
TIER_NAMES = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10-gray": "CIFAR-10 gray",
    "cifar10-rgb": "CIFAR-10 RGB",
}
INTERPRETABILITY = ["linear_probe_acc", "knn_acc", "silhouette"]
NLL = {"iw_nll", "bits_per_dim"}


def tier(dataset: str, channels: str) -> str:
    """The complexity tier of a run: MNIST-family sets are gray whatever ``channels`` says."""
    if dataset != "cifar10":
        return dataset
    return "cifar10-gray" if channels == "gray" else "cifar10-rgb"


def read_run(run_dir: Path) -> dict[str, Any]:
    """One row: the run's config keys, every metric, its status (complete/failed/incomplete)."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    row: dict[str, Any] = {
        "run": "",
        "config": config_id(cfg),
        "dataset": OmegaConf.select(cfg, "data.name"),
        "channels": OmegaConf.select(cfg, "data.channels"),
        "latent_dim": OmegaConf.select(cfg, "model.latent_dim"),
        "likelihood": OmegaConf.select(cfg, "model.likelihood", default="bernoulli"),
        "binarize": OmegaConf.select(cfg, "data.binarize"),
        "kl": OmegaConf.select(cfg, "model.kl"),
        "lr": OmegaConf.select(cfg, "model.lr"),
        "batch_size": OmegaConf.select(cfg, "data.batch_size"),
        "seed": OmegaConf.select(cfg, "seed", throw_on_resolution_failure=False),
    }
    metrics_file, error_file = run_dir / "metrics.json", run_dir / "error.txt"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        row.update({k: metrics.get(k, row.get(k)) for k in CONFIG_KEYS})
        row.update({k: metrics.get(k) for k in METRICS})
        row["kl_per_dim"] = json.dumps(metrics.get("kl_per_dim"))
        row["status"] = metrics.get("status", "complete")
        row["error"] = metrics.get("error", "")
    else:
        row.update(dict.fromkeys(METRICS))
        failed = error_file.is_file()
        row["status"] = "failed" if failed else "incomplete"
        row["error"] = (
            error_file.read_text().strip() if failed else "no metrics.json (stopped early?)"
        )
    row["tier"] = tier(row["dataset"], row["channels"])
    # A Bernoulli likelihood is a normalized density only on binary pixels.
    row["nll_comparable"] = row["likelihood"] == "continuous_bernoulli" or bool(row["binarize"])
    return row


def config_id(cfg: DictConfig) -> str:
    """A short hash of the run's composed config without its seed: equal for repeats of a run.

    The config is Hydra's saved one, interpolations unresolved, so settings derived from the
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
    for config in sorted(sweep_dir.rglob(".hydra/config.yaml")):
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

    def text(self) -> str:
        return _fmt(self.mean) if self.std is None else f"{_fmt(self.mean)} ± {_fmt(self.std)}"


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
    return sorted(groups, key=_order)


def _order(r: dict[str, Any]) -> tuple:
    """Simplest tier first, then latent size, then seed."""
    seed = r.get("seed")
    return (
        TIERS.index(r["tier"]) if r["tier"] in TIERS else 9,
        r["latent_dim"] or 0,
        r.get("lr") or 0,
        seed if isinstance(seed, int) else 0,
    )


def write_csv(rows: list[dict[str, Any]], groups: list[dict[str, Any]], path: Path) -> None:
    """Every run (kind=run), then every configuration's mean over seeds (kind=seed_mean)."""
    columns = ["kind", "run", "config", "tier", *CONFIG_KEYS, "status", "n"]
    columns += [c for m in METRICS for c in (m, f"{m}_std")]
    columns += ["kl_per_dim", "nll_comparable", "error"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({"kind": "run", **r} for r in rows)
        writer.writerows(groups)


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1000:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def grouped(rows: list[dict[str, Any]], metric: str) -> dict[int, dict[str, Stat]]:
    """latent_dim -> tier -> ``metric`` over the complete runs (mean ± std over seeds)."""
    acc: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["status"] == "complete" and r.get(metric) is not None:
            if metric in NLL and not r["nll_comparable"]:
                continue
            acc[r["latent_dim"]][r["tier"]].append(float(r[metric]))
    return {z: {t: Stat.of(v) for t, v in tiers.items()} for z, tiers in sorted(acc.items())}


def ranking_lines(rows: list[dict[str, Any]]) -> list[str]:
    """For each metric and latent size: the tiers from best to worst, by their means."""
    lines = []
    for metric in ["test_elbo", "bits_per_dim", "active_units", *INTERPRETABILITY]:
        label, higher = METRICS[metric]
        for z, by_tier in grouped(rows, metric).items():
            order = sorted(by_tier, key=lambda t: by_tier[t].mean, reverse=higher)
            text = f"{TIER_NAMES.get(order[0], order[0])} ({by_tier[order[0]].text()})"
            for prev, t in zip(order, order[1:], strict=False):
                a, b = by_tier[prev], by_tier[t]
                sign = "=" if a.mean == b.mean else "≈" if within_one_std(a, b) else ">"
                text += f" {sign} {TIER_NAMES.get(t, t)} ({b.text()})"
            lines.append(f"- **{label}**, latent {z}: {text}")
    return lines


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


def conclusion(rows: list[dict[str, Any]]) -> list[str]:
    """Whether interpretability degrades as complexity rises, judged from the table's means."""
    lines, verdicts = [], []
    for metric in INTERPRETABILITY:
        label = METRICS[metric][0]
        for z, by_tier in grouped(rows, metric).items():
            if len([t for t in TIERS if t in by_tier]) < 2:
                continue
            falls, rises, within = degradation(by_tier)
            verdicts.append(falls > rises)
            seeds = sorted({s.n for s in by_tier.values()})
            over = f" (means over {'/'.join(map(str, seeds))} seeds)" if seeds != [1] else ""
            counts = f"falls in {falls}, rises in {rises} and moves within one std in {within}"
            if not within:
                counts = f"falls in {falls} and rises in {rises}"
            lines.append(
                f"- {label}, latent {z}{over}: {counts} of {falls + rises + within} "
                "ordered tier pairs."
            )
    if not verdicts:
        return [
            "The study's conclusion cannot be judged here: no latent size has complete runs "
            "of two or more complexity tiers."
        ]
    if all(verdicts):
        head = (
            "**The study's conclusion holds**: every interpretability measure falls as "
            "complexity rises."
        )
    elif any(verdicts):
        head = (
            f"**The study's conclusion holds in part**: {sum(verdicts)} of {len(verdicts)} "
            "measure × latent-size comparisons fall as complexity rises."
        )
    else:
        head = (
            "**The study's conclusion does not hold** here: no interpretability measure "
            "falls as complexity rises."
        )
    if any("within one std" in line for line in lines):
        lines.append(
            "- A difference smaller than the larger std of the two means is counted as "
            "neither a fall nor a rise (≈ in the rankings)."
        )
    return [head, "", *lines]


def best_trial_lines(rows: list[dict[str, Any]], sweep_dir: Path) -> list[str]:
    """Optuna's best trial (its optimization_results.yaml) and the run directory that scored it."""
    path = sweep_dir / "optimization_results.yaml"
    if not path.is_file():
        return []
    result = OmegaConf.to_container(OmegaConf.load(path))
    if "best_params" not in result:  # a multi-objective study has a Pareto front instead
        return []
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
    params = ", ".join(
        f"`{k}={v:.3g}`" if isinstance(v, float) else f"`{k}={v}`"
        for k, v in result["best_params"].items()
    )
    where = f" (run `{run}`)" if run else ""
    return [
        "## Best trial (Optuna)",
        "",
        f"Best validation ELBO {value:.2f} nats with {params}{where}; "
        "`optimization_results.yaml` has Optuna's own record.",
        "",
    ]


TABLE = [
    "test_elbo",
    "iw_nll",
    "bits_per_dim",
    "active_units",
    "linear_probe_acc",
    "knn_acc",
    "silhouette",
]


def runs_table(rows: list[dict[str, Any]], lr: bool) -> list[str]:
    """One markdown row per run."""
    cols = ["tier", "latent_dim", *(["lr"] if lr else []), "seed", "likelihood", "status", *TABLE]
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=_order):
        cells = [f"{r['lr']:.3g}" if c == "lr" else _fmt(r.get(c)) for c in cols]
        if not r["nll_comparable"] and r.get("iw_nll") is not None:
            cells[cols.index("iw_nll")] += " †"
            cells[cols.index("bits_per_dim")] += " †"
        table.append("| " + " | ".join(cells) + " |")
    return table


def seeds_table(groups: list[dict[str, Any]], lr: bool) -> list[str]:
    """One markdown row per configuration: mean ± sample std over its n seeds."""
    cols = ["tier", "latent_dim", *(["lr"] if lr else []), "likelihood", "n", *TABLE]
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for g in groups:
        cells = []
        for c in cols:
            if c in METRICS:
                std = g[f"{c}_std"]
                text = _fmt(g[c]) if std is None else f"{_fmt(g[c])} ± {_fmt(std)}"
                cells.append(text + (" †" if c in NLL and not g["nll_comparable"] else ""))
            else:
                cells.append(f"{g['lr']:.3g}" if c == "lr" else _fmt(g[c]))
        table.append("| " + " | ".join(cells) + " |")
    return table


def write_markdown(
    rows: list[dict[str, Any]], groups: list[dict[str, Any]], sweep_dir: Path, path: Path
) -> None:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("complete", "failed", "incomplete")}
    lr = len({r["lr"] for r in rows}) > 1  # e.g. an Optuna search: the learning rate varies
    repeated = [
        "## Mean ± std over seeds",
        "",
        "Runs that differ only in `seed`; ± is the sample standard deviation over n seeds.",
        "",
        *seeds_table(groups, lr),
        "",
    ]
    problems = [
        f"- `{r['run']}`: **{r['status']}** — {r['error']}"
        for r in rows
        if r["status"] != "complete"
    ]
    text = [
        f"# Sweep report: `{sweep_dir}`",
        "",
        f"{len(rows)} runs: {counts['complete']} complete, {counts['failed']} failed, "
        f"{counts['incomplete']} incomplete. Every number is from the run's `metrics.json`; "
        "`summary.csv` has every column.",
        "",
        "## Conclusion",
        "",
        *conclusion(rows),
        "",
        *(repeated if any(g["n"] > 1 for g in groups) else []),
        "## Runs",
        "",
        *runs_table(rows, lr),
        "",
    ]
    if any(not r["nll_comparable"] for r in rows):
        text += [
            "† a Bernoulli likelihood on non-binary pixels is not a normalized density: this NLL "
            "and bits/dim are not comparable with the other rows and are left out of the NLL "
            "rankings. Use `model.likelihood=continuous_bernoulli` (or binarized data) to "
            "compare them.",
            "",
        ]
    text += best_trial_lines(rows, sweep_dir)
    if problems:
        text += ["## Failed or incomplete runs", "", *problems, ""]
    text += [
        "## Rankings (best first; mean ± std over seeds where there are several, "
        "≈ where two means are within one std)",
        "",
        *ranking_lines(rows),
        "",
        "## Figures",
        "",
        "![metrics against latent size](metrics_vs_latent.png)",
        "",
        "![figure sheet](figure_sheet.png)",
        "",
    ]
    path.write_text("\n".join(text))


def metrics_figure(rows: list[dict[str, Any]], path: Path) -> None:
    """Each metric against latent size, one line per dataset × channels tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["test_elbo", "bits_per_dim", "active_units", *INTERPRETABILITY]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), dpi=110)
    for ax, metric in zip(axes.flat, shown, strict=True):
        by_z = grouped(rows, metric)
        for t in TIERS:
            pts = sorted((z, v[t]) for z, v in by_z.items() if t in v)
            if pts:  # error bars: ± one sample std over seeds, where there are several
                sizes, stats = zip(*pts, strict=True)
                ax.errorbar(
                    sizes,
                    [s.mean for s in stats],
                    yerr=[s.std or 0.0 for s in stats],
                    marker="o",
                    capsize=3,
                    label=TIER_NAMES[t],
                )
        ax.set_xscale("log", base=2)
        sizes = sorted(by_z)
        ax.set_xticks(sizes, [str(z) for z in sizes])
        ax.minorticks_off()
        ax.set_xlabel("latent size")
        ax.set_ylabel(METRICS[metric][0])
        ax.set_title(METRICS[metric][0] + (" (comparable rows only)" if metric in NLL else ""))
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    seeds = any(s.n > 1 for m in shown for by_t in grouped(rows, m).values() for s in by_t.values())
    fig.suptitle(
        "Latent-space metrics against latent size (one line per tier"
        + ("; mean ± std over seeds)" if seeds else ")")
    )
    fig.legend(
        handles, labels, loc="upper center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 0.95)
    )
    fig.tight_layout(rect=(0, 0, 1, 0.91))
    fig.savefig(path)
    plt.close(fig)


def figure_sheet(rows: list[dict[str, Any]], sweep_dir: Path, path: Path) -> None:
    """Each complete run's last epoch grid, manifold (or traversal) and scatter side by side."""
    import imageio.v3 as iio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted((r for r in rows if r["status"] == "complete"), key=_order)
    if not runs:
        return
    fig, axes = plt.subplots(len(runs), 3, figsize=(18, 4.2 * len(runs)), dpi=80, squeeze=False)
    for row_axes, r in zip(axes, runs, strict=True):
        d = sweep_dir / r["run"]
        grids = sorted((d / "epochs").glob("epoch_*.png"))
        latent = d / "latent_manifold.png"
        latent = latent if latent.is_file() else d / "latent_traversal.png"
        for ax, file in zip(
            row_axes, [grids[-1] if grids else None, latent, d / "latent_scatter.png"], strict=True
        ):
            ax.axis("off")
            if file is not None and file.is_file():
                ax.imshow(iio.imread(file))
            else:
                ax.text(0.5, 0.5, "not drawn (callbacks off?)", ha="center", va="center")
        row_axes[0].set_title(
            f"{TIER_NAMES.get(r['tier'], r['tier'])}, latent {r['latent_dim']}, seed {r['seed']}",
            loc="left",
            fontsize=14,
        )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(sweep_dir: Path, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Read every run under ``sweep_dir``; write summary.csv, report.md and the figures."""
    rows = collect(sweep_dir) if rows is None else rows
    groups = seed_groups(rows)
    write_csv(rows, groups, sweep_dir / "summary.csv")
    write_markdown(rows, groups, sweep_dir, sweep_dir / "report.md")
    metrics_figure(rows, sweep_dir / "metrics_vs_latent.png")
    figure_sheet(rows, sweep_dir, sweep_dir / "figure_sheet.png")
    return rows


# Runs of the last multirun in this process that did not complete. The CLI's exit code reads
# it: with a launcher such as joblib the jobs fail in other processes.
not_complete: list[str] = []


class ReportCallback(Callback):
    """Hydra callback: write the report at the end of every multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_report(sweep_dir)
        bad = [r["run"] for r in rows if r["status"] != "complete"]
        not_complete[:] = [str((sweep_dir / run).resolve()) for run in bad]
        print(f"vae-latent: report of {len(rows)} runs in {sweep_dir}/report.md")


def main(argv: list[str] | None = None) -> None:
    """``vae-latent-report DIR``: (re)build the report of a sweep directory."""
    parser = argparse.ArgumentParser(prog="vae-latent-report", description=main.__doc__)
    parser.add_argument("dir", type=Path, help="a multirun directory (or any folder of runs)")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        print(
            f"vae-latent-report: error: {args.dir} is not a directory; pass a sweep directory",
            file=sys.stderr,
        )
        sys.exit(2)
    rows = collect(args.dir)
    if not rows:
        print(
            f"vae-latent-report: error: no runs (no .hydra/config.yaml) under {args.dir}",
            file=sys.stderr,
        )
        sys.exit(2)
    write_report(args.dir, rows)
    print(f"{len(rows)} runs -> {args.dir / 'summary.csv'}, {args.dir / 'report.md'}")
