"""docs/results.md states only what its committed summary.csv files hold."""

import re
import shutil

import pytest

from benchmarks import results_page
from benchmarks.results_page import BLOCK, BLOCKS, PAGE, RESULTS, render

PAGE_TEXT = PAGE.read_text()


def test_every_number_and_verdict_on_the_page_is_what_the_csvs_give():
    assert render(PAGE_TEXT) == PAGE_TEXT, "run: python -m benchmarks.results_page --write"


def test_no_figure_is_stated_outside_the_generated_blocks():
    outside = BLOCK.sub("", PAGE_TEXT)
    assert "±" not in outside


def test_the_page_holds_every_block_once():
    names = [m[2] for m in BLOCK.finditer(PAGE_TEXT)]
    assert sorted(names) == sorted(BLOCKS)


def test_a_changed_csv_value_changes_the_page(tmp_path, monkeypatch):
    # The check above can fail: edit one seed mean in a copy of the CSVs and render again.
    copy = tmp_path / "results"
    shutil.copytree(RESULTS, copy)
    path = copy / "dims" / "summary.csv"
    lines = path.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.startswith("seed_mean,"))
    header = lines[0].rstrip("\n").split(",")
    # The seed-mean rows have no quoted commas before the metric columns: edit test_elbo.
    cells = lines[index].rstrip("\n").split(",")
    column = header.index("test_elbo")
    cells[column] = str(float(cells[column]) - 10.0)
    lines[index] = ",".join(cells) + "\n"
    path.write_text("".join(lines))
    monkeypatch.setattr(results_page, "RESULTS", copy)
    assert render(PAGE_TEXT) != PAGE_TEXT


@pytest.mark.parametrize("png", sorted(RESULTS.rglob("*.png")), ids=lambda p: p.name)
def test_the_figures_are_small(png):
    assert png.stat().st_size <= 300_000, f"{png}: {png.stat().st_size} bytes"


def test_the_figures_the_page_cites_exist():
    cited = re.findall(r"\]\((results/[^)]+)\)", PAGE_TEXT)
    assert cited, "the page cites no figure or CSV"
    for rel in cited:
        assert (PAGE.parent / rel).is_file(), rel


def _dims() -> dict[tuple[str, int], dict[str, float]]:
    from benchmarks.results_page import METRICS, rows

    return {
        (r["tier"], int(r["latent_dim"])): {m: float(r[m]) for m in METRICS} for r in rows("dims")
    }


def test_the_prose_claims_about_latent_size_hold():
    # Section 2's sentences, each checked against the seed means.
    dims, tiers = _dims(), ("mnist", "fashion_mnist")
    readings = ("test_elbo", "linear_probe_acc", "knn_acc", "silhouette")
    for t in tiers:
        assert all(dims[t, 8][m] > dims[t, 2][m] for m in readings), t  # every reading rises
        assert all(dims[t, 32][m] > dims[t, 8][m] for m in readings[:3]), t  # a little more
        assert dims[t, 32]["silhouette"] < dims[t, 8]["silhouette"], t  # while it falls
    gain = {t: dims[t, 8]["linear_probe_acc"] - dims[t, 2]["linear_probe_acc"] for t in tiers}
    assert gain["mnist"] > 2 * gain["fashion_mnist"]  # "more than twice as much"


def test_the_prose_claims_about_the_study_hold():
    from benchmarks.results_page import READINGS, _tier_pairs, winner

    verdicts = {
        z: [winner(*pair, m, "MNIST", "F") for m in READINGS] for z, pair in _tier_pairs().items()
    }
    assert "MNIST" not in verdicts["2"]  # "do not support" at latent 2
    assert verdicts["2"][0] == "undecided"  # "a linear probe cannot tell the two apart"
    assert verdicts["2"][1:] == ["F", "F"]  # "better separated (5-NN and silhouette)"
    assert verdicts["8"] == verdicts["32"] == ["MNIST"] * 3  # "holds on every reading"


def test_the_prose_claims_about_beta_hold():
    from benchmarks.results_page import READINGS, beta_rows, winner

    by = {(r["tier"], float(r["beta"])): r for r in beta_rows()}
    betas = sorted({b for _, b in by})
    assert betas == [0.5, 1.0, 2.0, 4.0]

    def verdicts(a, b):
        return [winner(by[a], by[b], m, "a", "b") for m in READINGS]

    assert verdicts(("mnist", 4.0), ("mnist", 1.0)) == ["b"] * 3  # "MNIST's read worse on all"
    assert verdicts(("fashion_mnist", 4.0), ("fashion_mnist", 1.0)) == ["undecided"] * 3
    for t in ("mnist", "fashion_mnist"):  # "at β = 0.5 neither tier moves"
        assert verdicts((t, 0.5), (t, 1.0)) == ["undecided"] * 3
    for b in betas:  # "at every β, MNIST is ahead on none of the readings"
        assert "a" not in verdicts(("mnist", b), ("fashion_mnist", b))


def test_the_prose_claims_about_capacity_hold():
    from benchmarks.results_page import capacity_rows, separated, tier_counts, winner

    by = {(r["tier"], int(r["width"]), int(r["depth"])): r for r in capacity_rows()}
    models = [(2, 0), (1, 1), (2, 1)]
    assert sorted({(w, d) for _, w, d in by}) == sorted([(1, 0), *models])
    for t in ("mnist", "fashion_mnist"):  # "every larger model fits both tiers better"
        for w, d in models:
            larger, base = by[t, w, d], by[t, 1, 0]
            assert float(larger["test_elbo"]) > float(base["test_elbo"]), (t, w, d)
            assert separated(larger, base, "test_elbo"), (t, w, d)
    for width in (1, 2):
        deep, _ = tier_counts((by["mnist", width, 1], by["fashion_mnist", width, 1]))
        assert deep.count("MNIST") == 2 and "Fashion-MNIST" not in deep  # "two ... worse on none"
        shallow, _ = tier_counts((by["mnist", width, 0], by["fashion_mnist", width, 0]))
        assert "MNIST" not in shallow  # "without them ... MNIST is ahead on none"
    pair = by["mnist", 1, 1], by["fashion_mnist", 1, 1]  # "that reading stays undecided"
    assert winner(*pair, "knn_acc", "MNIST", "F") == "undecided"
    assert float(pair[0]["knn_acc_std"]) > 3 * float(pair[1]["knn_acc_std"])  # "spreads widely"


def test_a_setting_run_at_one_seed_decides_nothing():
    from benchmarks.results_page import winner

    two = {"knn_acc": "0.90", "knn_acc_std": "0.01"}
    one = {"knn_acc": "0.50", "knn_acc_std": ""}  # one seed: the report leaves the std blank
    assert winner(two, one, "knn_acc", "a", "b") == "undecided"
    assert winner(two, {"knn_acc": "0.50", "knn_acc_std": "0.01"}, "knn_acc", "a", "b") == "a"


def test_the_capacity_figure_is_drawn_from_the_committed_csvs(tmp_path):
    path = tmp_path / "capacity.png"
    assert results_page.capacity_figure(path)
    assert 0 < path.stat().st_size <= 300_000


def test_the_reproduce_commands_are_the_ones_that_were_timed():
    # Each sweep's time.txt names the command that ran; the page must give the same overrides.
    block = PAGE_TEXT[PAGE_TEXT.index("## Reproduce") :]
    block = block[block.index("```bash") : block.index("```", block.index("```bash") + 3)]
    page = [set(c.split()) for c in block.replace("\\\n", " ").splitlines()]
    machine = ("data.root=", "data.download=", "hydra.sweep.dir=", "resume=")
    timed = re.findall(r'Command being timed: "(.*)"', "".join(
        p.read_text() for p in sorted(RESULTS.glob("*/time.txt"))))  # fmt: skip
    assert len(timed) >= 3
    for command in timed:
        wanted = {t for t in command.split() if "=" in t and not t.startswith(machine)}
        assert any(wanted <= c for c in page), f"not on the page: {sorted(wanted)}"
