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
    groups = [r for r in rows if r["kind"] == "seed_mean"]
    rows = [r for r in rows if r["kind"] == "run"]
    assert [r["run"] for r in rows] == ["a", "b", "c", "d", "e"]
    # One configuration per complete run here: means of one seed, no std.
    assert [(g["tier"], g["n"], g["test_elbo_std"]) for g in groups] == [
        ("mnist", "1", ""),
        ("fashion_mnist", "1", ""),
        ("cifar10-rgb", "1", ""),
    ]
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


def test_seeds_are_averaged_and_differences_within_one_std_count_neither_way(tmp_path):
    # MNIST's probe accuracy 0.8 ± 0.1 over three seeds; Fashion-MNIST 0.75 ± 0.03: the
    # means fall, but by less than one std. The 5-NN accuracy falls clearly.
    for seed, probe in zip((1, 2, 3), (0.9, 0.8, 0.7), strict=True):
        make_run(tmp_path, f"m{seed}", "mnist", "native", 2, seed, good(probe, 0.95, 0.4))
    for seed, probe in zip((1, 2, 3), (0.75, 0.78, 0.72), strict=True):
        make_run(tmp_path, f"f{seed}", "fashion_mnist", "native", 2, seed, good(probe, 0.7, 0.2))
    write_report(tmp_path)
    with open(tmp_path / "summary.csv") as f:
        groups = {r["tier"]: r for r in csv.DictReader(f) if r["kind"] == "seed_mean"}
    assert groups["mnist"]["n"] == "3" and groups["mnist"]["seed"] == "1 2 3"
    assert float(groups["mnist"]["linear_probe_acc"]) == pytest.approx(0.8)
    assert float(groups["mnist"]["linear_probe_acc_std"]) == pytest.approx(0.1)
    assert float(groups["fashion_mnist"]["linear_probe_acc_std"]) == pytest.approx(0.03)
    assert groups["mnist"]["knn_acc_std"] == "0.0"

    text = (tmp_path / "report.md").read_text()
    assert "| mnist | 2 | bernoulli | 3 | -100 ± 0 |" in text
    assert "0.800 ± 0.100" in text and "0.750 ± 0.030" in text
    probe = next(line for line in text.splitlines() if line.startswith("- **linear-probe"))
    assert "MNIST (0.800 ± 0.100) ≈ Fashion-MNIST (0.750 ± 0.030)" in probe
    lines = conclusion(collect(tmp_path))
    probe = next(line for line in lines if line.startswith("- linear-probe"))
    assert "(means over 3 seeds)" in probe
    assert "falls in 0, rises in 0 and moves within one std in 1 of 1" in probe
    knn = next(line for line in lines if line.startswith("- 5-NN"))
    assert "falls in 1 and rises in 0 of 1" in knn
    assert lines[0].startswith("**The study's conclusion holds in part**: 2 of 3")


def test_runs_that_differ_in_more_than_the_seed_are_not_averaged(tmp_path):
    for name, seed, precision in (("a", 1, "32"), ("b", 2, "32"), ("c", 1, "bf16-mixed")):
        run = make_run(tmp_path, name, "mnist", "native", 2, seed, good(0.9, 0.9, 0.4))
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        cfg.trainer = {"precision": precision}
        cfg.data.root = f"/somewhere/{name}"  # where the data lives does not matter
        OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    write_report(tmp_path)
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    config = {r["run"]: r["config"] for r in rows if r["kind"] == "run"}
    assert config["a"] == config["b"] != config["c"]
    groups = sorted((r["config"], r["n"], r["seed"]) for r in rows if r["kind"] == "seed_mean")
    assert groups == sorted([(config["a"], "2", "1 2"), (config["c"], "1", "1")])
