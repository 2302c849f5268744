"""The sweep report on hand-made run directories whose conclusions are known."""

import csv
import json

import pytest
from omegaconf import OmegaConf

from vae_latent.cli import report_main as main
from vae_latent.study.report import conclusion, write_report
from vae_latent.study.runs import collect


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
        failed = {"status": "failed", "error": error, "dataset": dataset, "latent_dim": latent}
        (run / "metrics.json").write_text(json.dumps(failed))
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
        ("cifar10_rgb", "1", ""),
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
    assert not (sweep / "metrics_vs_epoch.png").exists()  # no run logged latent metrics per epoch


def test_report_states_conclusion_failures_and_incomparable_nll(sweep):
    write_report(sweep, figures=False)
    text = (sweep / "report.md").read_text()
    assert "**The study's conclusion holds**" in text
    assert "## Figures" not in text  # none drawn, none named
    assert "`d`: **failed** — vae-latent: error: boom" in text
    assert "`e`: **incomplete**" in text
    assert "0.170 †" in text  # the CIFAR-10 Bernoulli row is flagged...
    for metric in ("bits/dim", "test ELBO"):  # ...and left out of the likelihood rankings
        ranking = [line for line in text.splitlines() if line.startswith(f"- **{metric}")][0]
        assert "CIFAR-10" not in ranking and "MNIST" in ranking
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


def test_single_runs_say_no_spread_is_known(tmp_path):
    make_run(tmp_path, "a", "mnist", "native", 2, metrics=good(0.9, 0.9, 0.4))
    make_run(tmp_path, "b", "fashion_mnist", "native", 2, metrics=good(0.8, 0.8, 0.3))
    lines = conclusion(collect(tmp_path))
    assert lines[0].startswith("**The study's conclusion holds**")
    assert any("no spread over seeds is known" in line for line in lines)


def test_differences_within_seed_noise_leave_the_conclusion_undecided(tmp_path):
    for seed, (m, f) in enumerate(((0.5, 0.52), (0.7, 0.72)), start=1):
        make_run(tmp_path, f"m{seed}", "mnist", "native", 2, seed, good(m, m, m))
        make_run(tmp_path, f"f{seed}", "fashion_mnist", "native", 2, seed, good(f, f, f))
    lines = conclusion(collect(tmp_path))
    assert lines[0].startswith("**The study's conclusion cannot be decided**"), lines[0]
    assert not any("no spread" in line for line in lines)


def test_runs_of_other_recipes_are_neither_pooled_as_seeds_nor_ranked_together(tmp_path):
    """An lr search at one seed: each learning rate is its own comparison of the tiers."""
    for lr, (m, f) in ((1e-4, (0.9, 0.7)), (1e-3, (0.5, 0.3))):
        for name, dataset, value in (("m", "mnist", m), ("f", "fashion_mnist", f)):
            metrics = {**good(value, value, value), "lr": lr}
            make_run(tmp_path, f"{name}{lr:g}", dataset, "native", 2, metrics=metrics)
    lines = conclusion(collect(tmp_path))
    assert lines[0].startswith("**The study's conclusion holds**"), lines[0]  # pooled: ≈
    assert any("latent 2, lr=0.001:" in line for line in lines)
    assert any("latent 2, lr=0.0001:" in line for line in lines)
    assert not any("seeds)" in line for line in lines)


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
    write_report(tmp_path, figures=False)
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
    write_report(tmp_path, figures=False)
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    config = {r["run"]: r["config"] for r in rows if r["kind"] == "run"}
    assert config["a"] == config["b"] != config["c"]
    groups = sorted((r["config"], r["n"], r["seed"]) for r in rows if r["kind"] == "seed_mean")
    assert groups == sorted([(config["a"], "2", "1 2"), (config["c"], "1", "1")])


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"status": "complete", "test_elbo": ', "not valid JSON"),
        (b"[]", "holds a list"),
        (bytes(range(256)), "not text"),
        (b'{"test_elbo": 1}', "no known status"),
    ],
)
def test_a_damaged_run_is_reported_by_name_and_the_rest_still_are(sweep, content, why):
    (sweep / "b" / "metrics.json").write_bytes(content)
    write_report(sweep, figures=False)
    text = (sweep / "report.md").read_text()
    assert "`b`: **damaged**" in text and why in text and "1 damaged" in text
    with open(sweep / "summary.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f) if r["kind"] == "run"}
    assert rows["b"]["status"] == "damaged" and rows["a"]["status"] == "complete"
    assert "MNIST (0.900)" in text  # the others are still ranked


def test_the_report_app_names_damaged_runs_in_one_line(sweep, capsys):
    (sweep / "a" / ".hydra" / "config.yaml").write_bytes(b"\x00\xff: [unclosed")
    (sweep / "b" / "metrics.json").write_bytes(b'{"status": "complete", "test_elbo": ')
    main([str(sweep)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "damaged" in err[0] and "a (" in err[0] and "b (" in err[0]
    text = (sweep / "report.md").read_text()
    assert "`a`: **damaged**" in text and "`b`: **damaged**" in text


def test_runs_of_two_protocols_are_never_ranked_together(tmp_path):
    make_run(tmp_path, "a", "mnist", "native", 2, metrics=good(0.9, 0.95, 0.4))
    make_run(
        tmp_path,
        "b",
        "fashion_mnist",
        "native",
        2,
        metrics={**good(0.7, 0.75, 0.2), "protocol": "study"},
    )
    lines = conclusion(collect(tmp_path))
    assert lines[0].startswith("The study's conclusion cannot be judged")  # one tier per protocol
    make_run(
        tmp_path, "c", "mnist", "native", 2, metrics={**good(0.8, 0.8, 0.3), "protocol": "study"}
    )
    lines = conclusion(collect(tmp_path))
    assert any("latent 2, study protocol" in line for line in lines)
    assert not any("validation protocol" in line for line in lines)


def test_one_latent_size_is_drawn_against_the_tiers(sweep):
    write_report(sweep)
    import imageio.v3 as iio

    assert iio.imread(sweep / "metrics_vs_latent.png").shape[1] > 1000


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("test_elbo", '"abc"'),
        ("test_elbo", "NaN"),
        ("knn_acc", "Infinity"),
        ("iw_nll", "-Infinity"),
        ("latent_dim", '"abc"'),
        ("latent_dim", '{"a": 1}'),
        ("lr", "NaN"),
        ("seed", "[42]"),
    ],
)
def test_a_value_of_the_wrong_kind_in_metrics_json_makes_the_run_damaged(sweep, capsys, key, raw):
    """E8: the report is written from the other runs; the damaged one is named, with its key."""
    path = sweep / "b" / "metrics.json"
    text = json.dumps({**json.loads(path.read_text()), key: "PLACEHOLDER"})
    path.write_text(text.replace('"PLACEHOLDER"', raw))
    main([str(sweep)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b (metrics.json: " in err[0] and f"{key}=" in err[0], err
    with open(sweep / "summary.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f) if r["kind"] == "run"}
    assert rows["b"]["status"] == "damaged" and rows["a"]["status"] == "complete"
    text = (sweep / "report.md").read_text()
    assert "`b`: **damaged**" in text and "MNIST (0.900)" in text  # the others still ranked
    assert "Fashion-MNIST" not in text.split("## Runs")[0]  # the damaged run is in no ranking
