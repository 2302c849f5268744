"""TensorBoard on a run's own output, in a real headless Chromium (opt-in: ``pytest -m browser``).

Needs Playwright's Python package (``pip install -e ".[browser]"``) and a Chromium on the PATH
(Debian: ``apt-get install chromium``; or set CHROMIUM to its path); skipped otherwise.
"""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.browser

# WebGL through SwiftShader (the projector needs it) and no calls home from a closed network.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    found = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not found:
        pytest.skip("no Chromium: apt-get install chromium, or set CHROMIUM to a Chromium binary")
    return found


@pytest.fixture(scope="module")
def dashboard(trained):
    """`tensorboard --logdir` on the tiny run's output, and a headless Chromium page."""
    sync_api = pytest.importorskip("playwright.sync_api", reason='pip install -e ".[browser]"')
    executable = _chromium()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(trained / "tensorboard")]
        + ["--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.2)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        yield page, f"http://127.0.0.1:{port}"
        browser.close()
    server.terminate()
    server.wait(timeout=30)


# All text of the page: through open shadow roots and same-origin iframes (TensorBoard puts the
# projector in an iframe that Playwright's frame tree does not list).
DEEP_TEXT = """() => {
  const out = [];
  const walk = (n) => {
    if (!n) return;
    if (n.nodeType === 3) { const t = n.textContent.trim(); if (t) out.push(t); return; }
    if (n.shadowRoot) walk(n.shadowRoot);
    if (n.tagName === "IFRAME") { try { walk(n.contentDocument.body); } catch (e) {} }
    for (const c of n.childNodes || []) walk(c);
  };
  walk(document.body);
  return out.join(" ");
}"""


def _text_when(page, ready, timeout=90):
    """The page's deep text once ``ready(text)`` holds (or at the timeout)."""
    deadline = time.time() + timeout
    text = page.evaluate(DEEP_TEXT)
    while not ready(text) and time.time() < deadline:
        time.sleep(1)
        text = page.evaluate(DEEP_TEXT)
    return " ".join(text.split())


def _open(dashboard, tab):
    page, url = dashboard
    page.goto(f"{url}/#{tab}")
    return page


def test_scalars_show_the_run_curves(dashboard):
    page = _open(dashboard, "scalars")
    search = page.locator("tf-tag-filterer input")  # the "Filter tags" box
    search.wait_for(state="attached", timeout=60_000)
    for tag in ("val/elbo", "test/elbo", "train/elbo", "latent/linear_probe_acc"):
        search.fill(tag)  # cards render lazily: filter to the one asked for
        page.get_by_text(f"tag: {tag}", exact=True).first.wait_for(timeout=30_000)
    assert page.get_by_text("No scalar data was found").count() == 0


def test_images_show_the_pictures(dashboard):
    page = _open(dashboard, "images")
    page.get_by_text("epoch_grid", exact=True).first.wait_for(timeout=30_000)
    for tag in ("latent_manifold", "latent_traversal", "latent_scatter", "tested_grid"):
        assert page.get_by_text(tag, exact=True).count() > 0, tag
    page.locator("img").first.wait_for(timeout=30_000)


def test_hparams_compare_runs_by_the_test_elbo(dashboard):
    page = _open(dashboard, "hparams")
    page.get_by_text("hp/test_elbo").first.wait_for(state="attached", timeout=30_000)
    assert page.get_by_text("dataset").count() > 0
    assert page.get_by_text("No hparams data was found").count() == 0


def test_the_projector_draws_every_test_point_at_latent_2(dashboard):
    page = _open(dashboard, "projector")
    text = _text_when(
        page, lambda t: "Total variance described:" in t and "%" in t.split("described:")[-1]
    )
    assert "Points: 80" in text, text[:500]  # every fixture test image (80 < max_points)
    described = text.split("Total variance described:")[-1].split()[0]
    assert described == "100.0%." or described == "100.0%", text[-300:]
    assert "NaN" not in text
