"""The report's capacity question: does a larger model close the gap between tiers?"""

import shutil

import pytest

from vae_latent.study.stats import Stat, gap_changes

from ..conftest import TINY


def _stats(*pairs):
    return [(params, Stat(mean, std, 3)) for params, mean, std in pairs]


@pytest.mark.parametrize(
    ("harder", "verdict"),
    [
        ([(1_000, 0.50, 0.01), (9_000, 0.88, 0.01)], "shrinks"),  # gap 0.40 -> 0.02
        ([(1_000, 0.50, 0.01), (9_000, 0.45, 0.01)], "grows"),  # gap 0.40 -> 0.45
        ([(1_000, 0.50, 0.05), (9_000, 0.52, 0.05)], "stays"),  # 0.40 -> 0.38, noise ~0.07
        ([(1_000, 0.50, 0.01), (9_000, 1.10, 0.01)], "reverses"),  # 0.40 -> -0.20
    ],
)
def test_the_gap_verdict_is_read_against_seed_noise(harder, verdict):
    by_tier = {
        "mnist": _stats((1_000, 0.90, 0.01), (9_000, 0.90, 0.01)),
        "fashion_mnist": _stats(*harder),
    }
    (change,) = gap_changes(by_tier)
    assert (change.simpler, change.harder, change.small, change.large) == (
        "mnist",
        "fashion_mnist",
        1_000,
        9_000,
    )
    assert change.verdict == verdict


def test_one_seed_leaves_the_verdict_undecided():
    one = {"mnist": [(1, Stat(0.9, None, 1)), (2, Stat(0.9, None, 1))]}
    one["fashion_mnist"] = [(1, Stat(0.5, None, 1)), (2, Stat(0.8, None, 1))]
    assert gap_changes(one)[0].verdict == "undecided"


def test_paper_capacity_runs_the_present_tiers_and_answers_in_the_report(app, data_root, tmp_path):
    """Two tiers present (CIFAR-10 absent): skipped by name; the report's Capacity section."""
    root, sweep = tmp_path / "data", tmp_path / "sweep"
    for name in ("MNIST", "FashionMNIST"):
        shutil.copytree(data_root / name, root / name)
    proc = app(
        "-m", "experiment=paper_capacity", "model.width=1,2", "model.depth=0", "seed=1,2",
        f"data.root={root}", "data.download=false", *TINY, "trainer.max_epochs=1",
        "callbacks=none", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipping tier(s) cifar10_gray, cifar10_rgb" in proc.stderr
    assert len(list(sweep.glob("*/metrics.json"))) == 8  # 2 tiers x 2 widths x 2 seeds
    report = (sweep / "report.md").read_text()
    section = report.split("## Capacity")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("- ")]
    assert any("MNIST − Fashion-MNIST gap" in line for line in lines), section
    verdicts = ("**shrinks**", "**grows**", "**stays**", "**reverses**")
    assert all(any(v in line for v in verdicts) for line in lines[:-1]), section
    assert (sweep / "capacity.png").is_file() and "![latent metrics against model size]" in report
    # The tables name each row's model: width varies here (depth and the rest do not).
    for table in ("## Mean ± std over seeds", "## Runs"):
        header = report.split(table)[1].split("\n| ")[1]
        assert header.startswith("tier | latent_dim | width | "), header
        assert "depth" not in header.split(" | likelihood")[0]


def test_the_capacity_figure_names_each_point_by_width_and_depth():
    from vae_latent.study.figures import model_ticks

    rows = [
        {"status": "complete", "params": 70_000, "width": 1, "depth": 0},
        {"status": "complete", "params": 70_000, "width": 1, "depth": 0},  # a second seed
        {"status": "complete", "params": 250_000, "width": 2, "depth": 0},
        {"status": "complete", "params": 250_000, "width": 1, "depth": 3},  # the same count
        {"status": "failed", "params": 900_000, "width": 4, "depth": 0},
    ]
    assert model_ticks(rows) == {70_000: "w1 d0", 250_000: "w1 d3 / w2 d0"}
