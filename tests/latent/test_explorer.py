"""The explorer page's data (no browser): what it embeds is what the tested checkpoint gives."""

import numpy as np
import pytest
import torch

from vae_latent import load
from vae_latent.data import VAEDataModule
from vae_latent.latent import explorer, explorer_page
from vae_latent.latent.codes import encode_split
from vae_latent.latent.drawing import quantize

from ..conftest import read_metrics, train_tiny


def _codes_and_split(vae, data_root):
    dm = VAEDataModule(root=str(data_root), download=False, val_size=40)
    dm.prepare_data()
    dm.setup("test")
    test = dm.splits["test"]
    return encode_split(vae, test), test


def _tiles(vae, plane, grid):
    """The decoder's output at every grid point of ``grid`` on ``plane``, as the page stores it."""
    z = explorer.grid_codes(plane, grid["x"], grid["y"])
    return quantize(explorer.decode(vae, z)).permute(0, 2, 3, 1).numpy()


def check_page(run, data_root, latent_dim):
    vae = load(run / read_metrics(run)["test_checkpoint"])
    data = explorer_page.read_run(run / "explorer.html")
    codes, test = _codes_and_split(vae, data_root)
    assert data["latent_dim"] == latent_dim and data["image"]["height"] == 28
    # The points: the test split's posterior means and labels under the tested weights.
    points = data["points"]
    index = torch.from_numpy(explorer.unpacked(points["index"]).astype(np.int64))
    assert points["total"] == len(test) == 80 and points["count"] == 80
    np.testing.assert_allclose(explorer.unpacked(points["means"]), codes.means[index], atol=1e-5)
    assert np.array_equal(explorer.unpacked(points["labels"]), codes.labels[index].numpy())
    shown = index[: points["thumbnails"]]
    images = explorer.sprite_images(points["images"])
    want = quantize(test.take(shown)[0]).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(images, want)
    # Every tile of every grid: the decoder's output at that grid point, pixel for pixel.
    for plane in data["planes"]:
        for grid in plane["grids"].values():
            stored = explorer.sprite_images(grid["sprite"])
            assert stored.shape[0] == len(grid["x"]) * len(grid["y"])
            diff = np.abs(stored.astype(int) - _tiles(vae, plane, grid).astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-4  # batching may move a bit
    return data


def test_the_run_page_embeds_the_tested_checkpoints_latent_2_space(trained, data_root):
    data = check_page(trained, data_root, 2)
    assert [p["id"] for p in data["planes"]] == ["latent"]
    numbers = {n["key"]: n["value"] for n in data["numbers"]}
    record = read_metrics(trained)
    assert numbers["test_elbo"] == pytest.approx(record["test_elbo"], abs=1e-4)
    assert numbers["active_units"] == record["active_units"]
    assert numbers["linear_probe_acc"] == record["linear_probe_acc"]
    grids = data["planes"][0]["grids"]
    assert grids["prior"]["x"][0] == -3.0 and grids["prior"]["x"][-1] == 3.0
    means = explorer.unpacked(data["points"]["means"])
    lo, hi = np.quantile(means[:, 0], [0.005, 0.995])
    assert grids["posterior"]["x"][0] < lo and grids["posterior"]["x"][-1] > hi


def test_a_latent_8_page_offers_the_top_kl_and_pca_planes(data_root, tmp_path):
    run = tmp_path / "z8"
    train_tiny(run, data_root, "model.latent_dim=8", "trainer.max_epochs=1")
    data = check_page(run, data_root, 8)
    kl_plane, pca_plane = data["planes"]
    top = np.argsort(-np.asarray(data["kl_per_dim"]), kind="stable")[:2]
    assert kl_plane["dims"] == top.tolist() and kl_plane["id"] == "kl"
    assert pca_plane["id"] == "pca" and "PC1" in pca_plane["axes"][0]
    reference = np.asarray(data["reference"]["code"])
    assert np.allclose(reference, explorer.unpacked(data["points"]["means"]).mean(0), atol=0.5)


def test_the_sweep_page_has_one_entry_per_complete_run(trained, data_root, tmp_path):
    import shutil

    from vae_latent.study.report import write_report

    sweep = tmp_path / "sweep"
    shutil.copytree(trained, sweep / "mnist")
    train_tiny(sweep / "fashion", data_root, "dataset=fashion_mnist", "trainer.max_epochs=1")
    write_report(sweep)
    page = (sweep / "explorer.html").read_text()
    assert "Latent-space explorer" in page and "explorer-data" in page
    assert (
        "[explorer.html](explorer.html): the latent spaces of 2 runs"
        in (sweep / "report.md").read_text()
    )
    data = explorer_page.DATA_ELEMENT.search(page).group(1)
    assert data.count('"tier":"mnist"') == 1 and data.count('"tier":"fashion_mnist"') == 1


def test_a_page_from_elsewhere_is_read_as_data_and_a_broken_one_is_named(trained, tmp_path):
    import shutil

    from vae_latent.study.report import write_report

    sweep = tmp_path / "sweep"
    shutil.copytree(trained, sweep / "good")
    shutil.copytree(trained, sweep / "bad")
    (sweep / "bad" / "explorer.html").write_text("<script>alert('not data')</script>")
    write_report(sweep)
    report = (sweep / "report.md").read_text()
    assert "the latent spaces of 1 run," in report and "Not read: `bad`" in report
    assert "alert" not in (sweep / "explorer.html").read_text()


def test_the_sweep_page_tells_apart_runs_that_differ_only_in_seed(trained, tmp_path):
    # A sweep over seeds once showed three identical titles per tier; each now says its seed.
    import json
    import re
    import shutil

    from vae_latent.study.report import write_report

    sweep = tmp_path / "sweep"
    for seed in (1, 2):
        run = sweep / f"seed={seed}"
        shutil.copytree(trained, run)
        config = run / ".hydra" / "config.yaml"
        text, found = re.subn(r"(?m)^seed: \d+$", f"seed: {seed}", config.read_text())
        assert found == 1
        config.write_text(text)
        record = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps({**record, "seed": seed}))
    write_report(sweep)
    page = (sweep / "explorer.html").read_text()
    runs = json.loads(explorer_page.DATA_ELEMENT.search(page).group(1))["runs"]
    titles = sorted(r["title"] for r in runs)
    assert [t.rsplit(" · ", 1)[1] for t in titles] == ["seed 1", "seed 2"], titles
