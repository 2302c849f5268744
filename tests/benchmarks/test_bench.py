"""The benchmark runs end to end on fixture data (no timing is asserted: that is its output)."""

from benchmarks import bench


def test_bench_prints_both_rates_and_their_ratio(data_root, capsys):
    result = bench.main(
        [
            "--device",
            "cpu",
            "--steps",
            "4",
            "--warmup",
            "2",
            "--repeats",
            "1",
            "--batch-size",
            "16",
            "--data-root",
            str(data_root),
            "data.val_size=40",
            "trainer.enable_progress_bar=false",
        ]
    )
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith("{") and '"ratio"' in printed
    for key in (
        "lightning_images_per_s",
        "plain_images_per_s",
        "test_eval_seconds",
        "peak_rss_mb",
        "lightning_median_step_images_per_s",
        "plain_median_step_images_per_s",
    ):
        assert result[key] > 0
    want = result["lightning_images_per_s"] / result["plain_images_per_s"]
    assert abs(result["ratio"] - want) <= 0.01 * want  # one repeat: the ratio of the two rates
    assert result["device"] and result["batch_size"] == 16
    # Both paths ran the timed steps, the plain loop in turns between Lightning's.
    assert result["timed_steps_per_run"] == {"lightning": 4, "plain": 4}


def test_the_argument_check_takes_batch_512_with_the_default_steps():
    """300 timed steps + 30 warm-up at batch 512 span several epochs of MNIST's 55,000."""
    import pytest

    args = bench.parse_args(["--batch-size", "512"])
    assert (args.warmup, args.steps) == (30, 300)
    bench.check_args(args, 55_000)  # accepted: the steps run on across epochs
    with pytest.raises(SystemExit, match="--batch-size 512 is more than the 200 training images"):
        bench.check_args(args, 200)


def test_the_bench_runs_a_peer_command_in_turns_and_reports_the_ratio(data_root, tmp_path):
    """A stand-in peer that prints images_per_s as tf_cvae.py does."""
    import statistics
    import sys

    import pytest

    peer = tmp_path / "peer.py"
    peer.write_text('import json; print(json.dumps({"peer": "x", "images_per_s": 1000.0}))\n')
    result = bench.main(
        ["--device", "cpu", "--steps", "4", "--warmup", "2", "--repeats", "2", "--batch-size",
         "16", "--data-root", str(data_root), "--peer", f"{sys.executable} {peer}",
         "data.val_size=40", "trainer.enable_progress_bar=false"]
    )  # fmt: skip
    assert result["peer_runs"] == [1000.0, 1000.0] and result["peer_images_per_s"] == 1000.0
    ratios = [lightning / 1000.0 for lightning in result["lightning_runs"]]
    assert result["ratio_to_peer"] == pytest.approx(statistics.median(ratios), rel=0.01)
