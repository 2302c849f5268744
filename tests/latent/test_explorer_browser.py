"""The explorer pages of real runs in headless Chromium, from file://, the network blocked.

Opt-in as the TensorBoard check (``pytest -m browser -n 0``): needs Playwright's Python package
(``pip install -e ".[browser]"``) and a Chromium (Debian: ``apt-get install chromium``; or set
CHROMIUM), skipped with a reason otherwise. Shown pixels are compared with the decoder's output
computed here from the same checkpoint.
"""

import base64
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from vae_latent import load
from vae_latent.data import VAEDataModule
from vae_latent.latent import explorer, explorer_page
from vae_latent.latent.codes import encode_split
from vae_latent.latent.drawing import quantize

from ..conftest import read_metrics, train_tiny

pytestmark = pytest.mark.browser
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARGS += ["--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason='pip install -e ".[browser]"')
    exe = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("no Chromium: apt-get install chromium, or set CHROMIUM to a Chromium binary")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=exe, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser):
    """open_page(path) -> a ready page; every non-file:// request is aborted and recorded, every
    console or page error recorded: both must stay empty."""
    opened = []

    def open_(path):
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        page.errors, page.requests = [], []
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))

        def route(r):
            if r.request.url.startswith("file://"):
                r.continue_()
            else:
                page.requests.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.goto(path.resolve().as_uri())
        page.wait_for_function("window.explorer && window.explorer.ready", timeout=30_000)
        opened.append(page)
        return page

    yield open_
    for page in opened:
        assert page.errors == [] and page.requests == [], (page.errors, page.requests)
        page.close()


def pixels(page, expression):
    """A canvas's pixels (H, W, 4), as the page holds them (toDataURL PNG: lossless)."""
    url = page.evaluate(f"({expression}).toDataURL('image/png')")
    return np.asarray(
        Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA")
    )


def upscaled(image, k):
    """(C, H, W) in [0, 1] -> (kH, kW, 4) uint8, nearest neighbour, as the page draws it."""
    rgb = quantize(image).permute(1, 2, 0).numpy()
    rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return rgba.repeat(k, axis=0).repeat(k, axis=1)


def decoded_at(vae, plane, grid, ix, iy):
    """The decoder's output at grid point (ix, iy), in the page's decoding chunks."""
    z = explorer.grid_codes(plane, grid["x"], grid["y"])
    return explorer.decode(vae, z)[iy * len(grid["x"]) + ix]


def nearest(axis, value):
    return int(np.argmin(np.abs(np.asarray(axis) - value)))


def check_run_page(open_page, run, data_root):
    vae = load(run / read_metrics(run)["test_checkpoint"])
    data = explorer_page.read_run(run / "explorer.html")
    page = open_page(run / "explorer.html")
    assert page.evaluate("explorer.pointCount()") == data["points"]["count"] == 80
    scale = data["tile_scale"]
    for plane in data["planes"]:
        page.evaluate(f"explorer.setPlane('{plane['id']}')")
        for mode in ("posterior", "prior"):
            grid = plane["grids"][mode]
            x = grid["x"][5] + 0.3 * (grid["x"][6] - grid["x"][5])  # between grid points
            y = grid["y"][-4] - 0.2 * (grid["y"][-1] - grid["y"][-2])
            page.evaluate(f"explorer.setGridMode('{mode}')")
            tile = page.evaluate(f"explorer.setCursor({x!r}, {y!r})")
            ix, iy = nearest(grid["x"], x), nearest(grid["y"], y)
            assert (tile["grid"], tile["ix"], tile["iy"]) == (mode, ix, iy)
            want = upscaled(decoded_at(vae, plane, grid, ix, iy), scale)
            assert np.array_equal(pixels(page, "explorer.tileCanvas"), want), (plane["id"], mode)
    # A click on a test point shows that test image.
    dm = VAEDataModule(root=str(data_root), download=False, val_size=40)
    dm.prepare_data()
    dm.setup("test")
    codes = encode_split(vae, dm.splits["test"])
    page.evaluate("explorer.setGridMode('auto'); explorer.resetView()")
    for i in (0, 41, 79):
        x, y = page.evaluate(f"explorer.pointClientXY({i})")
        page.mouse.click(x, y)
        chosen = page.evaluate("explorer.selectedPoint()")
        shown = chosen["testIndex"]
        image = dm.splits["test"].take([shown])[0][0]
        thumb = page.evaluate("explorer.thumbScale")
        assert np.array_equal(pixels(page, "explorer.pointImageCanvas"), upscaled(image, thumb))
        assert chosen["className"] == dm.classes[int(codes.labels[shown])]
    legend = page.inner_text("#legend")
    assert all(name.split(" - ")[-1] in legend for name in dm.classes)
    return page


def test_the_latent_2_run_page(open_page, trained, data_root):
    page = check_run_page(open_page, trained, data_root)
    assert "test ELBO" in page.inner_text("body")


def test_the_latent_8_run_page_and_its_planes(open_page, data_root, tmp_path):
    run = tmp_path / "z8"
    train_tiny(run, data_root, "model.latent_dim=8", "trainer.max_epochs=1")
    page = check_run_page(open_page, run, data_root)
    assert page.evaluate("explorer.planes()") == ["kl", "pca"]


def test_the_sweep_page_shows_one_tile_per_selected_run(open_page, trained, data_root, tmp_path):
    from vae_latent.study.report import write_report

    sweep = tmp_path / "sweep"
    shutil.copytree(trained, sweep / "mnist")
    train_tiny(sweep / "fashion", data_root, "dataset=fashion_mnist", "trainer.max_epochs=1")
    write_report(sweep)
    page = open_page(sweep / "explorer.html")
    runs = {
        r["tier"]: r
        for r in (explorer_page.read_run(sweep / n / "explorer.html") for n in ("mnist", "fashion"))
    }
    tiles = page.evaluate(
        "explorer.setCursor(0.5, -1.0)"
        ".map(t => ({tier: t.tier, ix: t.ix, iy: t.iy, scale: t.scale}))"
    )
    assert sorted(t["tier"] for t in tiles) == ["fashion_mnist", "mnist"]
    for k, tile in enumerate(tiles):
        run = sweep / ("mnist" if tile["tier"] == "mnist" else "fashion")
        vae = load(run / read_metrics(run)["test_checkpoint"])
        plane = runs[tile["tier"]]["planes"][0]
        grid = plane["grids"]["prior"]
        want = upscaled(decoded_at(vae, plane, grid, tile["ix"], tile["iy"]), tile["scale"])
        assert np.array_equal(pixels(page, f"explorer.tiles()[{k}].canvas"), want)
    page.evaluate("explorer.setSelected([0])")
    assert page.locator("#tiles .tile-card").count() == 1


def test_a_sweep_folder_named_like_html_runs_no_script_of_its_name(browser, trained, tmp_path):
    """``<!--<script>`` (and an image with an onerror) in the sweep's folder name: the page
    runs, shows the name as text, and no script of the name runs, at load or after."""
    from vae_latent.study.report import write_report

    sweep = tmp_path / "s<!--<script>alert(1)<\\script><img src=x onerror=alert(2)>"
    shutil.copytree(trained, sweep / "mnist")
    write_report(sweep)
    page = browser.new_page()
    page.add_init_script("window.__calls = []; window.alert = m => window.__calls.push(m);")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((sweep / "explorer.html").resolve().as_uri())
    page.wait_for_function("window.explorer && window.explorer.ready", timeout=30_000)
    page.evaluate("explorer.setCursor(0.5, -1.0)")
    assert page.evaluate("window.__calls") == [] and errors == []
    assert sweep.name in page.title() and page.locator("img").count() == 0
    page.close()
