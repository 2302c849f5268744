"""benchmarks.peer: vae-latent's steady state beside a peer command, in alternating rounds."""

import sys

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
    assert round_["in_run_images_per_s"] > 0 and round_["vae_latent_images_per_s"] > 0
    assert round_["in_run_ratio_to_peer"] == round(round_["in_run_images_per_s"] / 500.0, 3)
