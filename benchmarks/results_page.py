"""``python -m benchmarks.results_page [--write]``: docs/results.md's tables and verdicts, from the
committed ``docs/results/<sweep>/summary.csv`` files.

Every number and verdict on the page sits in a block between ``<!-- results:NAME -->`` and
``<!-- /results -->`` that this module writes from the CSVs; ``--write`` rewrites the blocks in
place, and tests/test_results_page.py fails when a block differs from what the CSVs give (so the
page cannot drift from its data). Prose outside the blocks carries no ± figures. ``--write`` also
draws ``capacity/capacity.png`` from the same CSVs.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vae_latent.data.datasets import tier_names
from vae_latent.study import figures
from vae_latent.study.runs import METRICS as RUN_METRICS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PAGE = ROOT / "docs" / "results.md"
CAPACITY_FIGURE = RESULTS / "capacity" / "capacity.png"
BLOCK = re.compile(r"(<!-- results:(\w+) -->\n)(.*?)(<!-- /results -->)", re.S)

# metric column -> (its name on the page, decimals, higher is better)
METRICS = {
    "test_elbo": ("test ELBO (nats)", 1, True),
    "iw_nll": ("IW NLL (nats)", 1, False),
    "test_kl": ("KL (nats)", 2, False),
    "active_units": ("active units", 1, True),
    "linear_probe_acc": ("linear probe", 3, True),
    "knn_acc": ("5-NN", 3, True),
    "silhouette": ("silhouette", 3, True),
}
# The interpretability readings the verdicts compare (the study judged these from pictures).
READINGS = ("linear_probe_acc", "knn_acc", "silhouette")


def read(sweep: str, kind: str = "seed_mean") -> list[dict[str, str]]:
    """A sweep's summary.csv rows of one kind: ``seed_mean`` (a setting over its seeds) or
    ``run``; none where the sweep has no CSV yet."""
    path = RESULTS / sweep / "summary.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r["kind"] == kind]


def rows(sweep: str) -> list[dict[str, str]]:
    """The seed-mean rows of a sweep (one per setting, over its seeds)."""
    return read(sweep)


def fmt(row: dict[str, str], metric: str) -> str:
    """``mean ± std`` at the metric's decimals (std blank for one seed)."""
    digits = METRICS[metric][1]
    mean, std = row[metric], row.get(f"{metric}_std", "")
    text = f"{float(mean):.{digits}f}"
    return f"{text} ± {float(std):.{digits}f}" if std else text


def _tier(name: str) -> str:
    return tier_names().get(name, name)


def _order(r: dict[str, str]) -> tuple:
    tiers = list(tier_names())
    t = tiers.index(r["tier"]) if r["tier"] in tiers else len(tiers)
    return (t, int(r["latent_dim"]), float(r["beta"]), int(r["width"]), int(r["depth"]))


def table(selected: list[dict[str, str]], keys: list[tuple[str, str]], metrics: list[str]) -> str:
    """A Markdown table: the key columns, n, then each metric's mean ± std."""
    head = [label for _, label in keys] + ["n"] + [METRICS[m][0] for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(selected, key=_order):
        cells = [_tier(r[k]) if k == "tier" else r[k] for k, _ in keys]
        cells += [r["n"]] + [fmt(r, m) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def separated(a: dict[str, str], b: dict[str, str], metric: str) -> bool:
    """Whether two seed means differ by more than the sum of their stds. A setting run at one
    seed has no spread to compare against, so it separates from nothing."""
    spreads = a[f"{metric}_std"], b[f"{metric}_std"]
    if "" in spreads:
        return False
    return abs(float(a[metric]) - float(b[metric])) > sum(map(float, spreads))


def winner(a: dict[str, str], b: dict[str, str], metric: str, name_a: str, name_b: str) -> str:
    """The name of the better of two seed means, or "undecided" within the seeds' spread."""
    if not separated(a, b, metric):
        return "undecided"
    return name_a if METRICS[metric][2] == (float(a[metric]) > float(b[metric])) else name_b


def _compare(a: dict[str, str], b: dict[str, str], metric: str, name_a: str, name_b: str) -> str:
    verdict = winner(a, b, metric, name_a, name_b)
    verdict = f"{verdict} ahead" if verdict != "undecided" else verdict
    return f"{name_a} {fmt(a, metric)}, {name_b} {fmt(b, metric)}: {verdict}"


def _tier_pairs() -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Latent size -> (MNIST's seed means, Fashion-MNIST's), where both tiers have them."""
    by = {(r["tier"], r["latent_dim"]): r for r in rows("dims")}
    sizes = sorted({z for _, z in by}, key=int)
    pairs = {z: (by.get(("mnist", z)), by.get(("fashion_mnist", z))) for z in sizes}
    return {z: p for z, p in pairs.items() if None not in p}


def tier_verdicts() -> str:
    """At each latent size: MNIST against Fashion-MNIST on each interpretability reading."""
    lines = []
    for z, pair in _tier_pairs().items():
        parts = [
            f"{METRICS[m][0]}: " + _compare(*pair, m, "MNIST", "Fashion-MNIST") for m in READINGS
        ]
        lines.append(f"- latent {z}: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n" if lines else "(no tier has two complete settings yet)\n"


def tier_counts(pair: tuple[dict[str, str], dict[str, str]]) -> tuple[list[str], str]:
    """MNIST's and Fashion-MNIST's seed means compared on each reading: the verdicts, and how
    many readings each tier leads (or neither)."""
    verdicts = [winner(*pair, m, "MNIST", "Fashion-MNIST") for m in READINGS]
    names = ("MNIST", "Fashion-MNIST", "undecided")
    return verdicts, ", ".join(f"{name} {verdicts.count(name)}" for name in names)


def study_claim() -> str:
    """The study's claim (the simpler data's latent space reads better) counted per latent size:
    on how many readings MNIST is ahead, Fashion-MNIST is, or neither is."""
    lines = []
    for z, pair in _tier_pairs().items():
        verdicts, counts = tier_counts(pair)
        holds = "holds" if verdicts.count("MNIST") == len(READINGS) else "does not hold"
        lines.append(
            f"- latent {z}: of {len(READINGS)} readings, ahead: {counts}; the claim {holds}."
        )
    return "\n".join(lines) + "\n" if lines else "(no tier has two complete settings yet)\n"


def latent_verdicts() -> str:
    """Per tier: how each reading moves from latent 2 to 8 to 32."""
    lines = []
    for t in tier_names():
        sel = sorted((r for r in rows("dims") if r["tier"] == t), key=_order)
        if len(sel) < 2:
            continue
        parts = []
        for m in ("test_elbo", *READINGS):
            values = " → ".join(fmt(r, m) for r in sel)
            parts.append(f"{METRICS[m][0]} {values}")
        sizes = " → ".join(r["latent_dim"] for r in sel)
        lines.append(f"- {_tier(t)}, latent {sizes}: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n" if lines else "(no sweep results yet)\n"


def dims_table() -> str:
    metrics = ["test_elbo", "iw_nll", "active_units", *READINGS]
    return table(rows("dims"), [("tier", "tier"), ("latent_dim", "latent")], metrics)


def study_model_rows(kind: str = "seed_mean") -> list[dict[str, str]]:
    """The study's own setting (latent 2, β = 1, width 1, depth 0) from the latent-size sweep:
    the baseline the β and capacity sweeps vary from (its seed means, or its ``run`` rows)."""
    return [r for r in read("dims", kind) if r["latent_dim"] == "2"]


def beta_rows() -> list[dict[str, str]]:
    """The β sweep's settings, with β = 1 at latent 2 from the latent-size sweep."""
    return study_model_rows() + rows("beta")


def beta_table() -> str:
    metrics = ["test_elbo", "test_kl", "active_units", *READINGS]
    return table(beta_rows(), [("tier", "tier"), ("beta", "β")], metrics)


def beta_verdicts() -> str:
    """Per tier: each reading at the smallest and the largest β against β = 1; then, per β, the
    tiers against each other (does β change the study's verdict?)."""
    lines = []
    for t in tier_names():
        sel = {float(r["beta"]): r for r in beta_rows() if r["tier"] == t}
        if 1.0 not in sel or len(sel) < 2:
            continue
        for end in sorted({min(sel), max(sel)} - {1.0}):
            parts = [
                f"{METRICS[m][0]}: " + _compare(sel[end], sel[1.0], m, f"β = {end:g}", "β = 1")
                for m in READINGS
            ]
            lines.append(f"- {_tier(t)}, β = {end:g} against β = 1: " + "; ".join(parts) + ".")
    by = {(r["tier"], float(r["beta"])): r for r in beta_rows()}
    for beta in sorted({b for _, b in by}):
        pair = by.get(("mnist", beta)), by.get(("fashion_mnist", beta))
        if None in pair:
            continue
        verdicts, counts = tier_counts(pair)
        lines.append(f"- β = {beta:g}, MNIST against Fashion-MNIST: ahead: {counts}.")
    return "\n".join(lines) + "\n" if lines else "(the β sweep has no results yet)\n"


def capacity_rows() -> list[dict[str, str]]:
    """The capacity sweep's settings, with width 1, depth 0 from the latent-size sweep."""
    return study_model_rows() + rows("capacity")


def capacity_table() -> str:
    metrics = ["test_elbo", *READINGS]
    keys = [("tier", "tier"), ("width", "width"), ("depth", "depth")]
    return table(capacity_rows(), keys, metrics)


def capacity_verdicts() -> str:
    """Per model (width × depth): MNIST against Fashion-MNIST (does capacity close the gap?)."""
    by = {(r["tier"], int(r["width"]), int(r["depth"])): r for r in capacity_rows()}
    lines = []
    for width, depth in sorted({(w, d) for _, w, d in by}):
        pair = by.get(("mnist", width, depth)), by.get(("fashion_mnist", width, depth))
        if None in pair:
            continue
        _, counts = tier_counts(pair)
        model = f"width {width}, depth {depth}"
        lines.append(f"- {model}, MNIST against Fashion-MNIST: ahead: {counts}.")
    return "\n".join(lines) + "\n" if lines else "(the capacity sweep has no results yet)\n"


def _as_run(row: dict[str, str]) -> dict[str, Any]:
    """A summary.csv run row typed as the report's own rows are (blank cells are missing)."""
    typed: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
    for key in ("latent_dim", "width", "depth", "params", "seed"):
        typed[key] = int(row[key])
    for metric in RUN_METRICS:
        typed[metric] = float(row[metric]) if row[metric] else None
    typed["nll_comparable"] = row["nll_comparable"] == "True"
    return typed


def capacity_figure(path: Path = CAPACITY_FIGURE) -> bool:
    """The report's capacity figure over every capacity run, the study's model (latent 2 of the
    latent-size sweep) included: no one sweep folder holds all of them."""
    runs = study_model_rows("run") + read("capacity", "run")
    return figures.capacity_figure([_as_run(r) for r in runs], path.parent, path)


def sweeps_table() -> str:
    """What each committed sweep holds: runs by status, and their training time (each run's
    ``train_seconds``: the fit alone, as that run's machine allowed it)."""
    cols = ["sweep", "runs", "complete", "failed", "incomplete", "training, summed", "fastest run"]
    lines = ["| " + " | ".join([*cols, "slowest"]) + " |", "|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*/summary.csv")):
        found = read(path.parent.name, "run")
        status = [r["status"] for r in found]
        counts = [status.count(s) for s in ("complete", "failed", "incomplete")]
        seconds = sorted(float(r["train_seconds"]) for r in found if r["train_seconds"])
        cells = [path.parent.name, str(len(status)), *map(str, counts)]
        ends = [f"{x / 60:.1f} min" for x in (seconds[:1] + seconds[-1:])] if seconds else ["", ""]
        cells += [f"{sum(seconds) / 60:.0f} min", *ends]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


BLOCKS: dict[str, Callable[[], str]] = {
    "sweeps": sweeps_table,
    "dims_table": dims_table,
    "study_claim": study_claim,
    "tier_verdicts": tier_verdicts,
    "latent_verdicts": latent_verdicts,
    "beta_table": beta_table,
    "beta_verdicts": beta_verdicts,
    "capacity_table": capacity_table,
    "capacity_verdicts": capacity_verdicts,
}


def render(page: str) -> str:
    """The page with every block rewritten from the CSVs (unknown block names raise KeyError)."""
    return BLOCK.sub(lambda m: m[1] + BLOCKS[m[2]]() + m[4], page)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.results_page")
    parser.add_argument(
        "--write", action="store_true", help="rewrite docs/results.md's blocks and capacity.png"
    )
    args = parser.parse_args(argv)
    page = PAGE.read_text()
    new = render(page)
    if args.write:
        PAGE.write_text(new)
        capacity_figure()
    else:
        print(new, end="")


if __name__ == "__main__":
    main()
