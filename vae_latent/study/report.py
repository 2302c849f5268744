"""The sweep report: summary.csv, and report.md with rankings and conclusions from the table."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from vae_latent.data.datasets import tier_names
from vae_latent.files import save_atomic
from vae_latent.run.keys import names
from vae_latent.study.runs import METRICS, collect
from vae_latent.study.stats import (
    INTERPRETABILITY,
    NLL,
    Stat,
    best_trial,
    by_capacity,
    degradation,
    gap_changes,
    grouped,
    run_order,
    seed_groups,
    tier_order,
    varies_capacity,
    varying_recipe,
    within_one_std,
)
from vae_latent.text import csv_cell, markdown_code, markdown_text

# The sweep's explorer page shows at most this many runs, the first in report order.
EXPLORER_RUNS = 48
# The metrics of report.md's tables, in their order.
MARKDOWN_COLUMNS = [
    "test_elbo",
    "iw_nll",
    "bits_per_dim",
    "active_units",
    "linear_probe_acc",
    "knn_acc",
    "silhouette",
]


def write_report(
    sweep_dir: Path, rows: list[dict[str, Any]] | None = None, figures: bool = True
) -> list[dict[str, Any]]:
    """Read every run under ``sweep_dir``; write summary.csv, report.md and, by default, figures."""
    from vae_latent.study.figures import (
        capacity_figure,
        epochs_figure,
        figure_sheet,
        metrics_figure,
    )

    rows = collect(sweep_dir) if rows is None else rows
    groups = seed_groups(rows)
    save_atomic(sweep_dir / "summary.csv", csv_text(rows, groups).encode())
    drawn: dict[str, str] = {}  # file -> its caption in report.md
    explorer = explorer_page(rows, sweep_dir) if figures else None
    if figures:
        for name, caption, draw in (
            ("metrics_vs_latent.png", "metrics against latent size or tier", metrics_figure),
            ("metrics_vs_epoch.png", "latent metrics over training", epochs_figure),
            ("capacity.png", "latent metrics against model size", capacity_figure),
            ("figure_sheet.png", "figure sheet", figure_sheet),
        ):
            if draw(rows, sweep_dir, sweep_dir / name):
                drawn[name] = caption
    save_atomic(
        sweep_dir / "report.md", markdown(rows, groups, sweep_dir, drawn, explorer).encode()
    )
    return rows


def explorer_page(rows: list[dict[str, Any]], sweep_dir: Path) -> str | None:
    """explorer.html of the sweep: every complete run's page data, one linked cursor; a line
    for report.md (None when no run wrote a page)."""
    from vae_latent.latent.explorer_page import read_run, sweep_page

    pages, unread = [], []
    complete = sorted((r for r in rows if r["status"] == "complete"), key=run_order)
    told = distinguishing(complete)
    for r in complete:
        if len(pages) == EXPLORER_RUNS:  # side by side, a few dozen are all one can compare
            break
        page = sweep_dir / r["run"] / "explorer.html"
        if page.exists():
            try:
                data = read_run(page)
            except (OSError, ValueError) as e:  # a page from elsewhere: data, or nothing
                unread.append(f"{markdown_code(r['run'])} ({markdown_text(e)})")
                continue
            if told and isinstance(data.get("title"), str):
                data["title"] += " · " + ", ".join(f"{k} {r.get(k)}" for k in told)
            pages.append(data)
    if not pages:
        return None
    try:
        html = sweep_page(pages, title=f"Latent-space explorer — {sweep_dir.name}")
    except (KeyError, TypeError, ValueError) as e:
        why = markdown_text(f"{type(e).__name__}: {e}")
        return f"The sweep's explorer page could not be built ({why})."
    save_atomic(sweep_dir / "explorer.html", html.encode())
    runs = f"{len(pages)} run" + ("s" if len(pages) != 1 else "")
    if len(pages) == EXPLORER_RUNS and len(complete) > EXPLORER_RUNS:
        runs = f"the first {len(pages)} of {len(complete)} complete runs (report order)"
    line = (
        f"[explorer.html](explorer.html): the latent spaces of {runs}, one latent coordinate "
        "decoded by every selected run of a latent size."
    )
    return line + (f" Not read: {'; '.join(unread)}." if unread else "")


def distinguishing(rows: list[dict[str, Any]]) -> list[str]:
    """The run keys that tell apart ``rows`` whose pages share a title (tier and latent size are
    shown): those that vary, less any the others decide (a sweep's split_seed follows its seed)."""
    shown = {"tier", "dataset", "channels", "latent_dim"}
    varying = [k for k in names() if k not in shown and len({str(r.get(k)) for r in rows}) > 1]
    kept: list[str] = []  # from the last key (seed) back
    for key in reversed(varying):
        values: dict[tuple, set[str]] = {}
        for r in rows:
            values.setdefault(tuple(str(r.get(k)) for k in kept), set()).add(str(r.get(key)))
        if not kept or any(len(v) > 1 for v in values.values()):
            kept.append(key)
    return [k for k in varying if k in kept]


def csv_text(rows: list[dict[str, Any]], groups: list[dict[str, Any]]) -> str:
    """Every run (kind=run), then every configuration's mean over seeds (kind=seed_mean)."""
    import io

    columns = ["kind", "run", "config", "tier", *names(), "status", "n"]
    columns += [c for m in METRICS for c in (m, f"{m}_std")]
    columns += ["kl_per_dim", "nll_comparable", "error"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    # Every string is a cell a spreadsheet shows as text (a run's error or dataset may be anyone's).
    writer.writerows({k: csv_cell(v) for k, v in {"kind": "run", **r}.items()} for r in rows)
    writer.writerows({k: csv_cell(v) for k, v in g.items()} for g in groups)
    return out.getvalue()


def fmt(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1000:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def stat_text(stat: Stat) -> str:
    return fmt(stat.mean) if stat.std is None else f"{fmt(stat.mean)} ± {fmt(stat.std)}"


def _where(key: tuple[str, int]) -> str:
    """'latent 2', or 'latent 2, study protocol' when the sweep mixes recipes (``grouped``)."""
    recipe, z = key
    return f"latent {z}" + (f", {markdown_text(recipe)}" if recipe else "")


def _tier(tier: str) -> str:
    """A tier's name; a dataset this tool does not know, as the run's file names it, escaped."""
    return tier_names().get(tier) or markdown_text(tier)


def ranking_lines(rows: list[dict[str, Any]]) -> list[str]:
    """For each metric, latent size and protocol: the tiers from best to worst, by their means."""
    lines = []
    for metric in ["test_elbo", "bits_per_dim", "active_units", *INTERPRETABILITY]:
        label, higher = METRICS[metric]
        for key, by_tier in grouped(rows, metric).items():
            order = sorted(by_tier, key=lambda t: by_tier[t].mean, reverse=higher)
            text = f"{_tier(order[0])} ({stat_text(by_tier[order[0]])})"
            for prev, t in zip(order, order[1:], strict=False):
                a, b = by_tier[prev], by_tier[t]
                sign = "=" if a.mean == b.mean else "≈" if within_one_std(a, b) else ">"
                text += f" {sign} {_tier(t)} ({stat_text(b)})"
            lines.append(f"- **{label}**, {_where(key)}: {text}")
    return lines


def conclusion(rows: list[dict[str, Any]]) -> list[str]:
    """Whether interpretability degrades as complexity rises, judged from the table's means."""
    lines, verdicts, single, recipes = [], [], False, False
    for metric in INTERPRETABILITY:
        label = METRICS[metric][0]
        for key, by_tier in grouped(rows, metric).items():
            if len([t for t in tier_order() if t in by_tier]) < 2:
                continue
            falls, rises, within = degradation(by_tier)
            verdicts.append("falls" if falls > rises else "rises" if rises > falls else "even")
            seeds = sorted({s.n for s in by_tier.values()})
            single |= seeds == [1]
            recipes |= bool(key[0])  # a label: the sweep mixes protocols or recipes
            over = f" (means over {'/'.join(map(str, seeds))} seeds)" if seeds != [1] else ""
            counts = f"falls in {falls}, rises in {rises} and moves within one std in {within}"
            if not within:
                counts = f"falls in {falls} and rises in {rises}"
            lines.append(
                f"- {label}, {_where(key)}{over}: {counts} of "
                f"{falls + rises + within} ordered tier pairs."
            )
    if not verdicts:
        return [
            "The study's conclusion cannot be judged here: no latent size has complete runs "
            "of two or more complexity tiers."
        ]
    fall, n = verdicts.count("falls"), len(verdicts)
    others = f"{verdicts.count('rises')} rise, {verdicts.count('even')} undecided"
    if fall == n:
        head = "**The study's conclusion holds**: every interpretability measure falls as "
        head += "complexity rises."
    elif fall:
        head = f"**The study's conclusion holds in part**: {fall} of {n} measure × latent-size "
        head += f"comparisons fall as complexity rises ({others})."
    elif "rises" in verdicts:
        head = "**The study's conclusion does not hold** here: no interpretability measure "
        head += f"falls as complexity rises ({others})."
    else:
        head = "**The study's conclusion cannot be decided** here: every measure's tier "
        head += "differences are within one std over seeds, or fall and rise equally often."
    if any("within one std" in line for line in lines):
        lines.append(
            "- A difference smaller than the larger std of the two means is counted as "
            "neither a fall nor a rise (≈ in the rankings)."
        )
    if single:
        lines.append(
            "- Where each tier has one run, no spread over seeds is known and every difference "
            "counts; repeat the sweep with `seed=1,2,3` to see which exceed seed noise."
        )
    if recipes:
        lines.append(
            "- Runs of different protocols or recipes are compared separately: they score "
            "different weights or train different models."
        )
    return [head, "", *lines]


def capacity_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Does capacity close the gap between tiers? From the table, with seed noise as the bar."""
    if not varies_capacity(rows):
        return []
    lines, verdicts = [], []
    for metric in INTERPRETABILITY:
        label = METRICS[metric][0]
        for key, by_tier in by_capacity(rows, metric).items():
            for g in gap_changes(by_tier):
                verdicts.append(g.verdict)
                noise = (
                    "no spread over seeds known"
                    if g.noise is None
                    else f"seed noise ±{g.noise:.3f}"
                )
                simpler, harder = tier_names()[g.simpler], tier_names()[g.harder]
                lines.append(
                    f"- {label}, {_where(key)}: {simpler} − {harder} "
                    f"gap {g.gap_small:+.3f} at {g.small:,} parameters → {g.gap_large:+.3f} at "
                    f"{g.large:,}: **{g.verdict}** (change {g.change:+.3f}, {noise})."
                )
    if not verdicts:
        return [
            "## Capacity",
            "",
            "Capacity cannot be judged here: no two tiers were trained at two or more of the same "
            "model sizes.",
            "",
        ]
    counts = {v: verdicts.count(v) for v in ("shrinks", "stays", "grows", "reverses", "undecided")}
    said = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    if counts["undecided"] == len(verdicts):
        head = "**Whether capacity closes the gap between tiers cannot be decided** here: each "
        head += "model size has one run, so no seed noise is known; repeat with `seed=1,2,3`."
    elif counts["shrinks"] > counts["grows"] + counts["reverses"] + counts["stays"]:
        head = f"**Capacity closes the gap between tiers**: of {len(verdicts)} tier gaps, {said}."
    elif counts["stays"] >= max(counts["shrinks"], counts["grows"]):
        head = "**Capacity does not change the gap between tiers beyond seed noise**: of "
        head += f"{len(verdicts)} tier gaps, {said}."
    else:
        head = f"**Capacity moves the gap between tiers both ways**: of {len(verdicts)} tier "
        head += f"gaps, {said}."
    note = (
        "- The gap is the simpler tier's mean minus the harder one's, at the smallest and the "
        "largest model both were trained at; a change within the seed noise of the four means "
        "(their standard deviations combined) is counted as staying."
    )
    return ["## Capacity", "", head, "", *lines, note, ""]


def best_trial_lines(rows: list[dict[str, Any]], sweep_dir: Path) -> list[str]:
    """Optuna's best trial and the run directory that scored it, if the sweep was a search."""
    best = best_trial(rows, sweep_dir)
    if best is None:
        return []
    value, params, run = best
    params_text = ", ".join(
        markdown_code(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
        for k, v in params.items()
    )
    where = f" (run {markdown_code(run)})" if run else ""
    return [
        "## Best trial (Optuna)",
        "",
        f"Best validation ELBO {value:.2f} nats with {params_text}{where}; "
        "`optimization_results.yaml` has Optuna's own record.",
        "",
    ]


def _table(cols: list[str], cells: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [
        "| " + " | ".join(row) + " |" for row in cells
    ]


def _cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    return f"{value:.3g}" if column == "lr" and value else markdown_text(fmt(value))


def runs_table(rows: list[dict[str, Any]], recipe: list[str]) -> list[str]:
    """One markdown row per run."""
    cols = ["tier", "latent_dim", *recipe, "seed", "likelihood", "status", *MARKDOWN_COLUMNS]
    table = []
    for r in sorted(rows, key=run_order):
        cells = [_cell(r, c) for c in cols]
        if not r["nll_comparable"] and r.get("test_elbo") is not None:
            for c in NLL & set(cols):
                cells[cols.index(c)] += " †"
        table.append(cells)
    return _table(cols, table)


def seeds_table(groups: list[dict[str, Any]], recipe: list[str]) -> list[str]:
    """One markdown row per configuration: mean ± sample std over its n seeds."""
    cols = ["tier", "latent_dim", *recipe, "likelihood", "n", *MARKDOWN_COLUMNS]
    table = []
    for g in groups:
        cells = []
        for c in cols:
            if c in METRICS:
                std = g[f"{c}_std"]
                text = fmt(g[c]) if std is None else f"{fmt(g[c])} ± {fmt(std)}"
                cells.append(text + (" †" if c in NLL and not g["nll_comparable"] else ""))
            else:
                cells.append(_cell(g, c))
        table.append(cells)
    return _table(cols, table)


def markdown(
    rows: list[dict[str, Any]],
    groups: list[dict[str, Any]],
    sweep_dir: Path,
    figures: dict[str, str] | None = None,
    explorer: str | None = None,
) -> str:
    """report.md: counts, conclusion, tables, failures, rankings and the figures."""
    statuses = ("complete", "failed", "incomplete", "damaged")
    counts = {s: sum(r["status"] == s for r in rows) for s in statuses}
    # Columns for the recipe keys that vary (lr in an Optuna search, width and depth for
    # capacity), or rows of different models would read as one configuration; likelihood is
    # always a column.
    recipe = varying_recipe(rows, skip=("likelihood",))
    repeated = [
        "## Mean ± std over seeds",
        "",
        "Runs that differ only in `seed`; ± is the sample standard deviation over n seeds.",
        "",
        *seeds_table(groups, recipe),
        "",
    ]
    problems = [
        f"- {markdown_code(r['run'])}: **{r['status']}** — {markdown_text(r['error'])}"
        for r in rows
        if r["status"] != "complete"
    ]
    damaged = f", {counts['damaged']} damaged" if counts["damaged"] else ""
    text = [
        f"# Sweep report: {markdown_code(sweep_dir)}",
        "",
        f"{len(rows)} runs: {counts['complete']} complete, {counts['failed']} failed, "
        f"{counts['incomplete']} incomplete{damaged}. Every number is from the run's "
        "`metrics.json`; `summary.csv` has every column.",
        "",
        "## Conclusion",
        "",
        *conclusion(rows),
        "",
        *(repeated if any(g["n"] > 1 for g in groups) else []),
        "## Runs",
        "",
        *runs_table(rows, recipe),
        "",
    ]
    if any(not r["nll_comparable"] for r in rows if r["status"] == "complete"):
        text += [
            "† a Bernoulli likelihood on non-binary pixels is not a normalized density: this "
            "ELBO, NLL and bits/dim are not comparable with the other rows and are left out of "
            "their rankings. Use `model.likelihood=continuous_bernoulli` (or binarized data) to "
            "compare them.",
            "",
        ]
    text += capacity_lines(rows)
    text += best_trial_lines(rows, sweep_dir)
    if problems:
        text += ["## Failed, incomplete or damaged runs", "", *problems, ""]
    text += [
        "## Rankings (best first; mean ± std over seeds where there are several, "
        "≈ where two means are within one std)",
        "",
        *ranking_lines(rows),
        "",
    ]
    if explorer:
        text += ["## Explorer", "", explorer, ""]
    if figures:
        text += ["## Figures", ""]
        text += [line for name, title in figures.items() for line in (f"![{title}]({name})", "")]
    return "\n".join(text)
