"""The explorer's HTML: ``run_page`` and ``sweep_page`` render the data ``explorer.run_data``
computes into one self-contained page each (JSON data, inline CSS and vanilla JS from
``explorer_assets/``); ``read_run`` reads a page's data back (JSON, never code)."""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vae_latent.data.datasets import tier_names
from vae_latent.files import FileRefused, MiB, plain_tree, read_bytes
from vae_latent.latent.explorer import SCHEMA
from vae_latent.text import script_json

ASSETS = Path(__file__).parent / "explorer_assets"


@functools.cache
def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def _script(page: str) -> str:
    """One strict-mode function scope per page: nothing leaks onto window but window.explorer."""
    return f'(function () {{\n"use strict";\n{_asset("common.js")}{_asset(page)}}})();\n'


# --- pages --------------------------------------------------------------------------------


def _json_script(element_id: str, data: Any) -> str:
    return f'<script type="application/json" id="{element_id}">{script_json(data)}</script>'


def _page(title: str, body: str, data: Any, script: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_asset('explorer.css')}</style>\n</head>\n"
        f"<body>\n{body}\n{_json_script('explorer-data', data)}\n"
        f"<script>{script}</script>\n</body>\n</html>\n"
    )


RUN_BODY = """<header class="top">
  <h1 id="title"></h1>
  <p class="sub" id="subtitle"></p>
  <dl class="numbers" id="numbers"></dl>
</header>
<main class="run">
  <section class="plot-panel">
    <div class="controls">
      <fieldset id="plane-choice"><legend>Plane</legend></fieldset>
      <fieldset id="grid-choice"><legend>Decoded from</legend>
        <label><input type="radio" name="grid" value="auto" checked> auto</label>
        <label><input type="radio" name="grid" value="posterior"> posterior grid</label>
        <label><input type="radio" name="grid" value="prior"> prior grid</label>
      </fieldset>
      <span class="buttons"><button type="button" id="reset-view"
        title="or double-click the plot">Fit data</button>
      <button type="button" id="fit-prior">Fit prior grid</button></span>
    </div>
    <div class="plot-wrap" id="plot-wrap"><canvas id="scatter" tabindex="0"
      aria-label="test points in the latent plane"></canvas></div>
    <div class="legend-row"><ul class="legend" id="legend"></ul>
      <ul class="legend boxes" id="box-legend"></ul></div>
    <p class="note" id="plane-note"></p>
    <p class="hint">Move over the plot to decode; drag to pan, wheel to zoom, double-click to
      reset; hover a point to see its image, click to keep it; click a class to hide it;
      arrow keys step the cursor one grid point.</p>
  </section>
  <aside class="side">
    <section class="card">
      <h2>Decoded at the cursor</h2>
      <canvas id="tile" class="pixels"></canvas>
      <div class="readout" id="cursor-readout"></div>
      <div class="source" id="tile-source"></div>
    </section>
    <section class="card">
      <h2 id="point-heading">Test point</h2>
      <div class="pair">
        <figure><canvas id="point-image" class="pixels"></canvas>
          <figcaption>test image</figcaption></figure>
        <figure><canvas id="point-recon" class="pixels"></canvas>
          <figcaption>reconstruction</figcaption></figure>
      </div>
      <div class="readout" id="point-info">Hover or click a point.</div>
    </section>
  </aside>
</main>
<footer class="notes" id="notes"></footer>"""


def run_page(data: Mapping[str, Any]) -> str:
    """The run page: one HTML string, everything inline (see the module doc)."""
    return _page(f"{data['title']} — latent-space explorer", RUN_BODY, data, _script("run.js"))


def sweep_entry(run: Mapping[str, Any], run_id: int) -> dict[str, Any]:
    """What a sweep page keeps of one run's page data: its linked plane's prior grid and labels
    (the test points, the posterior grids and the other planes stay on the run's own page)."""
    linked = run["linked"]
    plane = next(p for p in run["planes"] if p["id"] == linked["plane"])
    return {
        "id": run_id,
        "title": run["title"],
        "tier": run["tier"],
        "tier_name": run["tier_name"],
        "latent_dim": run["latent_dim"],
        "image": run["image"],
        "numbers": run["numbers"],
        "reference": run["reference"],
        "plane": {k: plane[k] for k in ("id", "name", "axis_names", "dims", "y_kind", "note")},
        "grid": plane["grids"][linked["grid"]],
    }


SWEEP_BODY = """<header class="top">
  <h1 id="title"></h1>
  <p class="sub" id="subtitle"></p>
</header>
<main class="sweep">
  <aside class="runs card" id="run-picker">
    <h2>Latent size</h2>
    <div class="sizes" id="sizes" role="radiogroup"></div>
    <h2>Runs</h2>
    <div id="run-groups"></div>
  </aside>
  <section class="pad-panel card">
    <h2>Linked cursor</h2>
    <canvas id="pad" tabindex="0" aria-label="latent coordinate shared by the runs"></canvas>
    <div class="readout" id="pad-readout"></div>
    <p class="note" id="pad-note"></p>
  </section>
  <section class="tiles" id="tiles"></section>
</main>
<footer class="notes" id="notes"></footer>"""


def sweep_page(
    runs: Sequence[Mapping[str, Any]],
    title: str = "Latent-space explorer — sweep",
    tiers: Sequence[tuple[str, str]] | None = None,
) -> str:
    """The sweep page from several runs' page data (``run_data`` dicts, e.g. each run's page
    read back with ``read_run``); runs are grouped by tier in ``tiers`` order (the study's)."""
    tiers = tuple(tier_names().items()) if tiers is None else tiers
    order = {key: i for i, (key, _) in enumerate(tiers)}
    entries = [sweep_entry(r, i) for i, r in enumerate(runs)]
    entries.sort(key=lambda e: (order.get(e["tier"], len(order)), e["latent_dim"], e["id"]))
    data = {"schema": SCHEMA, "title": title, "tiers": [list(t) for t in tiers], "runs": entries}
    return _page(title, SWEEP_BODY, data, _script("sweep.js"))


# --- files --------------------------------------------------------------------------------

DATA_ELEMENT = re.compile(
    r'<script type="application/json" id="explorer-data">(.*?)</script>', re.DOTALL
)


# A run's page is 1-3 MB (docs/run-dir.md); a larger file is not one of ours.
PAGE_LIMIT = 64 * MiB


def read_run(path: str | Path) -> dict[str, Any]:
    """A run's page data, read back from its ``explorer.html`` (JSON only, nothing executed;
    bounded like every file from elsewhere); ValueError if the page holds none of this schema."""
    name = Path(path).name
    try:
        found = DATA_ELEMENT.search(read_bytes(path, PAGE_LIMIT).decode("utf-8"))
        if found is None:
            raise FileRefused(f"{name}: no explorer data in the page")
        data = plain_tree(json.loads(found.group(1)), name)
    except UnicodeDecodeError as e:
        raise FileRefused(f"{name} is not text") from e
    except RecursionError as e:
        raise FileRefused(f"{name} nests deeper than this tool's pages do") from e
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise FileRefused(f"{name}: not explorer data of schema {SCHEMA}")
    return data
