"""The sweep report's figures: metrics against latent size (or tier), over epochs, and a sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from vae_latent.data.datasets import tier_names  # noqa: E402
from vae_latent.files import read_csv_floats, read_image, save_atomic  # noqa: E402
from vae_latent.study.runs import METRICS  # noqa: E402
from vae_latent.study.stats import (  # noqa: E402
    INTERPRETABILITY,
    NLL,
    by_capacity,
    grouped,
    run_order,
    tier_order,
    varies_capacity,
)
from vae_latent.text import plot_text  # noqa: E402

SHOWN = ["test_elbo", "bits_per_dim", "active_units", *INTERPRETABILITY]
# Figures of one picture or line per run show the first runs in report order, and say so:
# their cost then stays flat however large a sweep grows (docs/study.md: scale).
SHEET_RUNS, EPOCH_RUNS = 24, 60
# Per-epoch latent metrics (latent_metrics.csv of each run) and their axis labels.
EPOCH_METRICS = {
    "active_units": "active units",
    "kl_total": "KL summed over dims (nats)",
    "linear_probe_acc": "linear-probe accuracy",
    "knn_acc": "5-NN accuracy",
}


def _save(fig: Any, path: Path) -> None:
    save_atomic(path, lambda buffer: fig.savefig(buffer, format=path.suffix[1:]))
    plt.close(fig)


def metrics_figure(rows: list[dict[str, Any]], sweep_dir: Path, path: Path) -> bool:
    """Each metric against latent size, one line per tier; against the tiers at one latent size."""
    complete = [r for r in rows if r["status"] == "complete"]
    if not complete:
        return False
    sizes = sorted({r["latent_dim"] for r in complete})
    shown = {m: by_key for m in SHOWN if (by_key := grouped(rows, m))}  # panels with data only
    if not shown:
        return False
    fig, axes = _panels(len(shown))
    seeds = False
    tiers = [t for t in tier_order() if any(t in v for b in shown.values() for v in b.values())]
    for ax, (metric, by_key) in zip(axes, shown.items(), strict=False):
        seeds |= any(s.n > 1 for by_t in by_key.values() for s in by_t.values())
        if len(sizes) > 1:
            _against_latent(ax, by_key)
        else:
            _against_tier(ax, by_key, tiers)
        _label(ax, metric, max(sizes))
    spread = "; mean ± std over seeds" if seeds else ""
    if len(sizes) > 1:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(
            handles, labels, loc="upper center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 0.95)
        )
        fig.suptitle(f"Latent-space metrics against latent size (one line per tier{spread})")
    else:
        fig.suptitle(
            f"Latent-space metrics across the tiers, simplest first (latent {sizes[0]}{spread})"
        )
    fig.tight_layout(rect=(0, 0, 1, 0.91 if len(sizes) > 1 else 0.96))
    _save(fig, path)
    return True


def _panels(n: int, cols: int = 3) -> tuple[Any, list[Any]]:
    """A figure of ``n`` panels in rows of ``cols`` (2 wide for 4), the unused ones removed."""
    cols = 2 if n == 4 else min(cols, n)
    rows = -(-n // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(5 * cols, 4.2 * rows + 0.4), dpi=110)
    axes = list(getattr(grid, "flat", [grid]))
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def _label(ax: Any, metric: str, max_latent: int) -> None:
    """A metric's panel: its name as title and axis label, a grid, whole units from 0."""
    ax.set_ylabel(METRICS[metric][0])
    ax.set_title(METRICS[metric][0] + (" (comparable rows only)" if metric in NLL else ""))
    ax.grid(alpha=0.3)
    if metric == "active_units":  # a count out of the latent size: whole numbers from 0
        ax.set_ylim(0, max_latent + 0.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _errorbar(ax: Any, xs: Any, stats: Any, label: str | None, **style: Any) -> None:
    """Means with ± one sample std over seeds as error bars (none for a single seed)."""
    means, stds = [s.mean for s in stats], [s.std or 0.0 for s in stats]
    ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label, **style)


def _against_latent(ax: Any, by_key: dict[tuple[str, int], dict[str, Any]]) -> None:
    for recipe in sorted({r for r, _ in by_key}):  # "" unless the sweep mixes recipes
        for t in tier_order():
            pts = sorted((z, v[t]) for (r, z), v in by_key.items() if r == recipe and t in v)
            if pts:
                zs, stats = zip(*pts, strict=True)
                label = tier_names()[t] + (f" ({plot_text(recipe)})" if recipe else "")
                _errorbar(ax, zs, stats, label)
    sizes = sorted({z for _, z in by_key})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(z) for z in sizes])
    ax.minorticks_off()
    ax.set_xlabel("latent size")


def _against_tier(ax: Any, by_key: dict[tuple[str, int], dict[str, Any]], tiers: list) -> None:
    """One latent size: the metric at each tier of the sweep, in the study's order."""
    for (recipe, _), by_tier in sorted(by_key.items()):
        present = [t for t in tiers if t in by_tier]
        xs = [tiers.index(t) for t in present]
        stats = [by_tier[t] for t in present]
        _errorbar(ax, xs, stats, plot_text(recipe) if recipe else None)
    ax.set_xticks(range(len(tiers)), [tier_names()[t] for t in tiers], rotation=15)
    ax.set_xlim(-0.4, len(tiers) - 0.6)
    ax.set_xlabel("tier (data complexity →)")


def capacity_figure(rows: list[dict[str, Any]], sweep_dir: Path, path: Path) -> bool:
    """Each latent metric against the parameter count, one line per tier (and recipe), ± the
    seed std: does a larger model narrow the gap between tiers? Only when capacity varies."""
    if not varies_capacity(rows):
        return False
    shown = {m: by_key for m in SHOWN if (by_key := by_capacity(rows, m))}
    if not shown:
        return False
    fig, axes = _panels(len(shown))
    models = model_ticks(rows)
    colours = {t: plt.get_cmap("tab10")(i) for i, t in enumerate(tier_order())}
    styles = ["-", "--", ":", "-."]
    for ax, (metric, by_key) in zip(axes, shown.items(), strict=False):
        for k, ((recipe, z), by_tier) in enumerate(by_key.items()):
            for t in [t for t in tier_order() if t in by_tier]:
                params, stats = zip(*by_tier[t], strict=True)
                name = tier_names()[t] + (f", z={z}" if len({q for _, q in by_key}) > 1 else "")
                name += f" ({plot_text(recipe)})" if recipe else ""
                style = {"color": colours[t], "linestyle": styles[k % len(styles)]}
                _errorbar(ax, params, stats, name, **style)
        sizes = sorted({p for by_tier in by_key.values() for v in by_tier.values() for p, _ in v})
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{_count(p)}\n{models.get(p, '')}".strip() for p in sizes])
        ax.minorticks_off()
        ax.set_xlabel("parameters (log scale), w = width, d = depth")
        _label(ax, metric, max(z for _, z in by_key))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), frameon=False,
               bbox_to_anchor=(0.5, 0.96))  # fmt: skip
    fig.suptitle("Latent-space metrics against model size (width × depth); mean ± std over seeds")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    _save(fig, path)
    return True


def model_ticks(rows: list[dict[str, Any]]) -> dict[int, str]:
    """Parameter count -> "w2 d1", the width and depth of the model that has it, so a reader
    can tell the points apart (a count shared by two models names both)."""
    names: dict[int, set[str]] = {}
    for r in rows:
        if r["status"] == "complete" and r.get("params"):
            names.setdefault(r["params"], set()).add(f"w{r['width']} d{r['depth']}")
    return {p: " / ".join(sorted(n)) for p, n in names.items()}


def _tier(tier: str) -> str:
    """A tier's name; a dataset this tool does not know, as the run's files name it (escaped)."""
    return tier_names().get(tier) or plot_text(tier)


def _count(n: int) -> str:
    """70k, 1.2M: a parameter count as a tick label."""
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def read_epoch_metrics(run_dir: Path) -> list[dict[str, float]]:
    """A run's latent_metrics.csv as rows of floats (empty if it has none or it is damaged)."""
    try:
        return read_csv_floats(run_dir / "latent_metrics.csv")
    except (OSError, ValueError):
        return []


def epochs_figure(rows: list[dict[str, Any]], sweep_dir: Path, path: Path) -> bool:
    """Each per-epoch latent metric against epoch, one line per run, coloured by tier."""
    runs = []
    for r in sorted(rows, key=run_order):
        if len(runs) == EPOCH_RUNS:
            break
        if metrics := read_epoch_metrics(sweep_dir / r["run"]):
            runs.append((r, metrics))
    if not runs:
        return False
    logged = sum(r["status"] in ("complete", "failed", "incomplete") for r in rows)
    first = f"the first {len(runs)} runs of {logged}; " if len(runs) == EPOCH_RUNS else ""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), dpi=110)
    colours = {t: plt.get_cmap("tab10")(i) for i, t in enumerate(tier_order())}
    styles = ["-", "--", ":", "-."]
    sizes = sorted({r["latent_dim"] for r, _ in runs})
    for ax, (metric, label) in zip(axes.flat, EPOCH_METRICS.items(), strict=True):
        shown: set[str] = set()
        for r, metrics in runs:
            name = _tier(r["tier"]) + (f", z={r['latent_dim']}" if len(sizes) > 1 else "")
            ax.plot(
                [m["epoch"] for m in metrics],
                [m.get(metric, float("nan")) for m in metrics],
                color=colours.get(r["tier"], "gray"),
                linestyle=styles[sizes.index(r["latent_dim"]) % len(styles)],
                marker="o",
                markersize=3,
                label=None if name in shown else name,
            )
            shown.add(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric == "active_units":  # a count out of the latent size: whole numbers from 0
            ax.set_ylim(0, max(sizes) + 0.5)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=min(len(labels), 6),
        frameon=False,
        bbox_to_anchor=(0.5, 0.955),
    )
    fig.suptitle(
        f"Latent metrics over training ({first}fixed test subset; one line per run, colour = tier)"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    _save(fig, path)
    return True


def figure_sheet(rows: list[dict[str, Any]], sweep_dir: Path, path: Path) -> bool:
    """Each complete run's tested grid, manifold (or traversal) and scatter side by side.

    All three come from the checkpoint the run's metrics.json scores (drawn after its test).
    """
    complete = sorted((r for r in rows if r["status"] == "complete"), key=run_order)
    if not complete:
        return False
    runs = complete[:SHEET_RUNS]
    fig, axes = plt.subplots(len(runs), 3, figsize=(18, 4.2 * len(runs)), dpi=80, squeeze=False)
    if len(runs) < len(complete):
        fig.suptitle(
            f"The first {len(runs)} of {len(complete)} complete runs, in report order "
            "(summary.csv has every run)",
            fontsize=16,
        )
    for row_axes, r in zip(axes, runs, strict=True):
        d = sweep_dir / r["run"]
        latent = d / "latent_manifold.png"
        latent = latent if latent.is_file() else d / "latent_traversal.png"
        for ax, file in zip(
            row_axes, [d / "grid.png", latent, d / "latent_scatter.png"], strict=True
        ):
            ax.axis("off")
            try:
                ax.imshow(read_image(file))
            except FileNotFoundError:
                ax.text(0.5, 0.5, "not drawn (callbacks off?)", ha="center", va="center")
            except (OSError, ValueError) as e:  # a picture from elsewhere: named, not shown
                ax.text(0.5, 0.5, plot_text(f"not shown: {e}"), ha="center", va="center")
        row_axes[0].set_title(
            f"{_tier(r['tier'])}, latent {r['latent_dim']}, seed {r['seed']}",
            loc="left",
            fontsize=14,
        )
    top = 1 - 0.6 / fig.get_figheight() if len(runs) < len(complete) else 1
    fig.tight_layout(rect=(0, 0, 1, top))
    _save(fig, path)
    return True
