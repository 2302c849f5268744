"""The sweep report on hand-made run directories whose conclusions are known."""

import csv
import json

import pytest
from omegaconf import OmegaConf

from vae_latent.report import collect, conclusion, main, write_report


def make_run(
    root,
    name,
    dataset,
    channels,
    latent,
    seed=42,
    metrics=None,
    error=None,
    binarize=True,
    likelihood="bernoulli",
):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    cfg = {
        "seed": seed,
        "data": {"name": dataset, "channels": channels, "binarize": binarize, "batch_size": 32},
        "model": {"latent_dim": latent, "lr": 1e-4, "kl": "mc", "likelihood": likelihood},
    }
    OmegaConf.save(OmegaConf.create(cfg), run / ".hydra" / "config.yaml")
    if metrics is not None:
        full = {
            "status": "complete",
            "dataset": dataset,
            "channels": channels,
            "latent_dim": latent,
            "seed": seed,
            "binarize": binarize,
            "likelihood": likelihood,
            "test_elbo": -100.0,
            "iw_nll": 95.0,
            "bits_per_dim": 0.17,
            "active_units": latent,
            **metrics,
        }
        (run / "metrics.json").write_text(json.dumps(full))
    if error is not None:
        (run / "error.txt").write_text(error)
    return run


def good(probe, knn, sil):
    return {"linear_probe_acc": probe, "knn_acc": knn, "silhouette": sil}


@pytest.fixture
def sweep(tmp_path):
    make_run(tmp_path, "a", "mnist", "native", 2, metrics=good(0.9, 0.95, 0.4))
    make_run(tmp_path, "b", "fashion_mnist", "native", 2, metrics=good(0.7, 0.75, 0.2))
    make_run(tmp_path, "c", "cifar10", "rgb", 2, binarize=False, metrics=good(0.2, 0.25, -0.05))
    make_run(tmp_path, "d", "cifar10", "gray", 2, error="vae-latent: error: boom")
    make_run(tmp_path, "e", "mnist", "native", 8)  # killed before metrics.json
    return tmp_path


def test_summary_has_one_row_per_run_with_status(sweep):
    write_report(sweep)
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert [r["status"] for r in rows] == ["complete"] * 3 + ["failed", "incomplete"]
    assert rows[3]["error"] == "vae-latent: error: boom"
    assert {
        "iw_nll",
        "bits_per_dim",
        "active_units",
        "linear_probe_acc",
        "knn_acc",
        "silhouette",
        "test_elbo",
        "latent_dim",
        "channels",
        "seed",
    } <= set(rows[0])
    assert [r["nll_comparable"] for r in rows[:3]] == ["True", "True", "False"]
    assert "kl_per_dim" in rows[0]
    for name in ("report.md", "metrics_vs_latent.png", "figure_sheet.png"):
        assert (sweep / name).is_file()


def test_report_states_conclusion_failures_and_incomparable_nll(sweep):
    write_report(sweep)
    text = (sweep / "report.md").read_text()
    assert "**The study's conclusion holds**" in text
    assert "`d`: **failed** — vae-latent: error: boom" in text
    assert "`e`: **incomplete**" in text
    assert "0.170 †" in text  # the CIFAR-10 Bernoulli row is flagged...
    ranking = [line for line in text.splitlines() if line.startswith("- **bits/dim**")][0]
    assert "CIFAR-10" not in ranking  # ...and left out of the NLL ranking
    probe = [line for line in text.splitlines() if line.startswith("- **linear-probe")][0]
    assert (
        probe.index("MNIST (0.900)")
        < probe.index("Fashion-MNIST (0.700)")
        < probe.index("CIFAR-10 RGB")
    )


def test_conclusion_follows_the_numbers(tmp_path):
    make_run(tmp_path, "a", "mnist", "native", 2, metrics=good(0.5, 0.5, 0.1))
    make_run(tmp_path, "b", "fashion_mnist", "native", 2, metrics=good(0.8, 0.9, 0.3))
    assert conclusion(collect(tmp_path))[0].startswith("**The study's conclusion does not hold**")
    make_run(tmp_path, "c", "mnist", "native", 8, metrics=good(0.9, 0.95, 0.4))
    make_run(tmp_path, "d", "fashion_mnist", "native", 8, metrics=good(0.6, 0.7, 0.2))
    assert conclusion(collect(tmp_path))[0].startswith("**The study's conclusion holds in part**")


def test_one_tier_cannot_be_judged(tmp_path):
    make_run(tmp_path, "a", "mnist", "native", 2, metrics=good(0.5, 0.5, 0.1))
    assert "cannot be judged" in conclusion(collect(tmp_path))[0]


def test_cli_regenerates_and_rejects_bad_dirs(sweep, tmp_path, capsys):
    main([str(sweep)])
    assert (sweep / "summary.csv").is_file()
    for bad in (tmp_path / "missing", tmp_path / "a" / ".hydra"):
        with pytest.raises(SystemExit) as exit_:
            main([str(bad)])
        assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("vae-latent-report: error:") for line in err)
