"""benchmarks.peer: vae-latent's steady state beside a peer command, in alternating rounds."""

import sys

import pytest

from benchmarks import peer


def test_the_peer_and_both_steady_states_are_measured_per_round(data_root, tmp_path):
    stand_in = tmp_path / "peer.py"  # prints images_per_s as tf_cvae.py --time-steps does
    stand_in.write_text('import json; print(json.dumps({"peer": "x", "images_per_s": 500.0}))\n')
    result = peer.main(
        ["--peer", f"{sys.executable} {stand_in}", "--data-root", str(data_root), "--rounds", "1",
         "--short", "2", "--long", "6", "--batch-size", "16", "data.batch_size=16",
         "data.val_size=40"]
    )  # fmt: skip
    (round_,) = result["rounds"]
    assert round_["peer_images_per_s"] == 500.0 and round_["wall_long_s"] > 0
    # Timed inside the run, so positive; the two-run rate's 4 steps are within start-up noise
    # here (its sign is not asserted), but it is the steps over the walls' difference.
    assert round_["in_run_images_per_s"] > 0
    assert round_["in_run_ratio_to_peer"] == round(round_["in_run_images_per_s"] / 500.0, 3)
    walls = round_["wall_long_s"] - round_["wall_short_s"]
    rounding = 0.02 / abs(walls)  # the walls are printed to 0.01 s
    assert round_["vae_latent_images_per_s"] == pytest.approx(4 * 16 / walls, rel=rounding)


def test_a_baseline_checkout_runs_in_the_same_rounds(data_root, tmp_path):
    stand_in = tmp_path / "peer.py"
    stand_in.write_text('import json; print(json.dumps({"peer": "x", "images_per_s": 500.0}))\n')
    result = peer.main(
        ["--peer", f"{sys.executable} {stand_in}", "--data-root", str(data_root), "--rounds", "2",
         "--short", "2", "--long", "6", "--batch-size", "16", "--baseline", str(peer.HERE),
         "data.batch_size=16", "data.val_size=40"]
    )  # fmt: skip
    # 4 steps' difference is within start-up noise here: the rates' signs are not asserted
    for round_ in result["rounds"]:
        # The rates are stored to 0.1 image/s and the ratio to 0.001, from the unrounded rates:
        # at a few images/s (4 steps, a loaded machine) rounding alone moves the ratio by >1 %.
        ours, base = round_["vae_latent_images_per_s"], round_["baseline_images_per_s"]
        # (On a loaded machine a 4-step difference can even be negative: take every corner.)
        corners = [(ours + a) / (base + b) for a in (-0.05, 0.05) for b in (-0.05, 0.05)]
        assert min(corners) - 5e-4 <= round_["ratio_to_baseline"] <= max(corners) + 5e-4, round_
        assert round_["baseline_ratio_to_peer"] == round(round_["baseline_images_per_s"] / 500, 3)
    ratios = sorted(r["ratio_to_baseline"] for r in result["rounds"])
    assert result["median_ratio_to_baseline"] == pytest.approx(sum(ratios) / 2)
    assert result["baseline"] == str(peer.HERE)


def test_a_baseline_that_is_not_a_checkout_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        peer.main(["--peer", "true", "--baseline", str(tmp_path)])
    assert "has no vae_latent package" in str(exit_.value) and "\n" not in str(exit_.value)


def test_the_baseline_arm_runs_the_baseline_checkouts_code(data_root, tmp_path):
    """Started from this checkout (whose package ``-m`` would find first), the baseline arm
    runs the other checkout's ``vae_latent``: here a stand-in that says so and fails."""
    base = tmp_path / "base" / "vae_latent"
    base.mkdir(parents=True)
    (base / "__init__.py").write_text("")
    (base / "__main__.py").write_text("raise SystemExit('the baseline checkout ran')\n")
    stand_in = tmp_path / "peer.py"
    stand_in.write_text('import json; print(json.dumps({"peer": "x", "images_per_s": 500.0}))\n')
    with pytest.raises(SystemExit) as exit_:
        peer.main(
            ["--peer", f"{sys.executable} {stand_in}", "--data-root", str(data_root),
             "--rounds", "1", "--short", "2", "--long", "6", "--batch-size", "16",
             "--baseline", str(base.parent), "data.batch_size=16", "data.val_size=40"]
        )  # fmt: skip
    assert "the baseline checkout ran" in str(exit_.value)
