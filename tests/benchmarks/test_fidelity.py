"""The fidelity comparison runs both sides and summarises them (the numbers need real data)."""

import json
import sys

from benchmarks import fidelity


def test_fidelity_runs_each_arm_beside_the_peer(data_root, tmp_path, capsys):
    peer = tmp_path / "peer.py"  # prints per-epoch JSON lines as tf_cvae.py does
    peer.write_text(
        "import json\nfor e, v in enumerate([-200.0, -160.5], 1):\n"
        "    print(json.dumps({'peer': 'tf', 'epoch': e, 'test_elbo': v}))\n"
    )
    one_epoch = "trainer.max_epochs=1 trainer.limit_train_batches=2"
    arms = ["--arm", f"keras=model.init=keras {one_epoch}"]
    arms += ["--arm", f"torch=model.init=torch {one_epoch}"]
    args = ["--peer", f"{sys.executable} {peer}", "--seeds", "3", "--data-root", str(data_root)]
    out = fidelity.main([*args, *arms])
    assert out["peer"] == {"mean": -160.5, "std": None, "n": 1, "values": [-160.5]}
    assert out["keras"]["n"] == out["torch"]["n"] == 1
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    runs = [p for p in printed if "arm" in p]
    assert [(r["arm"], r["seed"], r["init"]) for r in runs] == [
        ("keras", 3, "keras"),
        ("torch", 3, "torch"),
    ]
    assert all(r["epochs"] == 1 for r in runs)
