"""Hardening round four: a file, path or setting from someone else, by class of sink and source.

A. every string from a file, a path or a setting is escaped for where it goes;
B. a foreign file is a regular file, read once with a size bound, parsed with depth and type
   checks, or named as damaged;
C. a setting that sizes work is checked against the data's real sizes before the first step;
D. a run holds its directory: renamed or swapped under it, it still gets the run's files, and a
   failed continuation keeps the last complete record;
E. a report's cost is flat in the number of runs; a sweep is validated as a whole; every OS
   error about a place is one line.
Each case: one line on stderr and the documented exit code (or the damaged item named in the
report), no traceback, no hang, nothing outside the run created, changed or deleted.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import threading
from pathlib import Path

import lightning as L
import pytest
import torch

from vae_latent.files import FileRefused, read_bytes, read_json, read_yaml
from vae_latent.study.report import write_report
from vae_latent.text import csv_cell, markdown_code, markdown_text, one_line, script_json

from .conftest import TINY, assert_one_line_error, file_hashes, read_metrics, train_tiny
from .study.test_report import good, make_run


def bounded(fn, *args, seconds=20):
    """``fn(*args)`` in a thread: its result, or a failure (not a hung suite) if it blocks."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 (handed to the test)
            out["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__} blocked for {seconds} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


# --- A. escaped for the sink ----------------------------------------------------------------


def test_each_sink_escapes_what_would_be_syntax_there():
    assert one_line("a\nb\x1b[31m\u202ec\udcff") == "a\\nb\\x1b[31m\\u202ec\\udcff"
    for formula in ("=HYPERLINK(1)", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert not csv_cell(formula).startswith(("=", "+", "-", "@", "\t", "\r")), formula
    assert csv_cell(-157.2) == -157.2 and csv_cell("mnist") == "mnist" and csv_cell(None) is None
    text = markdown_text("<script>x</script> [a](b) |c| `d` *e* ![f](g)")
    assert "<" not in text.replace("\\<", "") and "|" not in text.replace("\\|", "")
    assert markdown_code("a``b") == "```a``b```" and markdown_code("`x") == "`` `x ``"
    hostile = {"t": "</script><!--<script>alert(1)</script>\u2028"}
    encoded = script_json(hostile)
    assert not set("<>&\u2028") & set(encoded) and json.loads(encoded) == hostile


def test_strings_from_run_files_reach_the_report_as_text(tmp_path):
    """An error text and a dataset name from someone's run folder, as formula and HTML."""
    sweep = tmp_path / "sweep"
    make_run(sweep, "a", "mnist", "native", 2, metrics=good(0.9, 0.95, 0.4))
    make_run(sweep, "b", '=HYPERLINK("http://x","y")', "native", 2, metrics=good(0.5, 0.5, 0))
    make_run(sweep, "c<img src=x onerror=alert(1)>", "mnist", "native", 8,
             error="+cmd|' /C calc'!A0 <script>alert(1)</script>\nforged line")  # fmt: skip
    write_report(sweep)
    with open(sweep / "summary.csv", newline="") as f:
        cells = [cell for row in csv.reader(f) for cell in row]
    starts = ("=", "+", "-", "@", "\t", "\r")
    assert not [c for c in cells if c.startswith(starts) and not _number(c)]
    assert "'=HYPERLINK" in " ".join(cells) and "'+cmd" in " ".join(cells)
    report = (sweep / "report.md").read_text()
    outside_code = re.sub(r"(`+).*?\1", "", report)  # a code span's text is literal Markdown
    assert "<script>" not in outside_code and "<img" not in outside_code
    assert "\nforged line" not in report and "\\<script\\>" in report


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_a_path_with_a_newline_is_one_line_on_stderr(app, tmp_path):
    proc = app(f"data.root='{tmp_path}/no\nsuch\x1b[2J'", "data.download=false",
               f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert_one_line_error(proc, "no\\nsuch\\x1b[2J")


def test_a_sweep_folder_named_like_html_keeps_its_explorer_data_inert(trained, tmp_path):
    """``<!--<script>`` in the sweep's name: the page's JSON holds no ``<``, reads back."""
    from vae_latent.latent.explorer_page import read_run

    sweep = tmp_path / "x<!--<script>alert(1)<\\script>"
    shutil.copytree(trained, sweep / "run")
    write_report(sweep)
    page = (sweep / "explorer.html").read_text()
    data_start = page.index('id="explorer-data">') + len('id="explorer-data">')
    data = page[data_start : page.index("</script>", data_start)]
    assert "<" not in data and "<!--" not in page.replace("<!DOCTYPE", "")
    assert read_run(sweep / "explorer.html")["title"].endswith(sweep.name)


# --- B. bounded reads -----------------------------------------------------------------------


@pytest.mark.parametrize("name", [".hydra/config.yaml", "metrics.json"])
def test_a_fifo_in_a_run_folder_is_damaged_not_waited_on(tmp_path, name):
    sweep = tmp_path / "sweep"
    make_run(sweep, "a", "mnist", "native", 2, metrics=good(0.9, 0.95, 0.4))
    run = make_run(sweep, "b", "mnist", "native", 8, metrics=good(0.9, 0.95, 0.4))
    (run / name).unlink()
    os.mkfifo(run / name)
    rows = bounded(write_report, sweep)
    damaged = {r["run"]: r["error"] for r in rows if r["status"] == "damaged"}
    assert list(damaged) == ["b"] and "not a regular file" in damaged["b"]
    assert "b" in (sweep / "report.md").read_text()


def test_a_fifo_or_a_deep_or_aliased_file_is_refused_by_each_reader(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for reader in (read_json, read_yaml, lambda p: read_bytes(p, 10)):
        with pytest.raises(FileRefused, match="not a regular file"):
            bounded(reader, fifo)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FileRefused, match="nests deeper|not an object"):
        read_json(deep)
    deep_object = tmp_path / "deep2.json"
    deep_object.write_text('{"a":' * 50 + "1" + "}" * 50)
    with pytest.raises(FileRefused, match="nests deeper"):
        read_json(deep_object)
    aliases = tmp_path / "bomb.yaml"  # each level refers to the last one twice: 2**30 leaves
    lines = ["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 31)]
    aliases.write_text("\n".join(lines))
    with pytest.raises(FileRefused, match="alias"):
        bounded(read_yaml, aliases, seconds=5)
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(5 << 20)  # 5 MiB of zeros, sparse on disk
    with pytest.raises(FileRefused, match="larger than 4 MiB"):
        read_json(big)


def test_a_fifo_as_a_checkpoint_or_dataset_file_is_one_line(tmp_path, app, data_root):
    from vae_latent import load
    from vae_latent.errors import DataError

    fifo = tmp_path / "last.ckpt"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        bounded(load, fifo)
    root = tmp_path / "data"
    shutil.copytree(data_root / "MNIST", root / "MNIST")
    labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.unlink()
    os.mkfifo(labels)
    proc = bounded(app, f"data.root={root}", "data.download=false", *TINY,
                   f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert_one_line_error(proc, "is not a regular file")


def test_an_optuna_record_whose_best_value_is_not_a_number_is_left_out(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep, "a", "mnist", "native", 2, metrics=good(0.9, 0.95, 0.4))
    (sweep / "optimization_results.yaml").write_text("best_params: {lr: 1}\nbest_value: abc\n")
    write_report(sweep)
    assert "Best trial" not in (sweep / "report.md").read_text()


@pytest.mark.parametrize("kind", ["sparse", "meta", "float64"])
def test_a_checkpoint_with_weights_of_another_kind_is_refused(trained, tmp_path, app, kind):
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    name = "vae.encoder.0.weight"
    weight = ckpt["state_dict"][name]
    ckpt["state_dict"][name] = {
        "sparse": weight.to_sparse(),
        "meta": torch.empty(weight.shape, device="meta"),
        "float64": weight.double(),
    }[kind]
    path = tmp_path / "hostile.ckpt"
    torch.save(ckpt, path)
    proc = app(f"ckpt={path}", f"hydra.run.dir={tmp_path / 'eval'}", main="eval")
    assert_one_line_error(proc, "hostile.ckpt", "damaged")


def test_a_picture_that_decodes_to_gigabytes_is_not_decoded(trained, tmp_path):
    """A tiny PNG whose header claims 100,000² pixels, as a run's grid.png: named, not drawn."""
    import struct
    import zlib

    sweep = tmp_path / "sweep"
    shutil.copytree(trained, sweep / "run")

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    (sweep / "run" / "grid.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )  # fmt: skip
    bounded(write_report, sweep, seconds=60)
    assert (sweep / "figure_sheet.png").is_file()


# --- C. work sized by the data, before the first step ----------------------------------------


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["metrics.iw_samples=100000", "model.latent_dim=1024"], "metrics.iw_samples ≤ 5,242"),
        (
            ["callbacks.epoch_grid.n_images=1024", "+callbacks.epoch_grid.scale=16"],
            "million pixels",
        ),
        (["callbacks.training_gif.duration_ms=655351"], "[1, 655,350]"),
        (["callbacks.latent_traversal.frame_ms=700000"], "[1, 655,350]"),
        (["trainer.limit_test_batches=0"], "would test nothing"),
        (["metrics.knn_k=500"], "at least 501 images (metrics.knn_k)"),
        (["data.val_size=239"], "training split holds 1 images"),
    ],
)
def test_a_size_the_data_or_memory_cannot_meet_is_refused_before_the_first_step(
    app, data_root, tmp_path, overrides, words
):
    run = tmp_path / "run"
    proc = app(f"data.root={data_root}", *TINY, *overrides, f"hydra.run.dir={run}")
    assert_one_line_error(proc, words)
    assert not (run / "checkpoints").exists()  # refused before any training step


def test_a_labels_file_with_a_class_past_nine_is_one_line(app, data_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_root / "MNIST", root / "MNIST")
    labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[8 + 17] = 200
    labels.write_bytes(bytes(data))
    proc = app(f"data.root={root}", "data.download=false", *TINY, f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(proc, "hold class 200, outside 0 to 9")


def test_a_test_limited_below_the_split_scores_what_it_tested(data_root, tmp_path):
    """The IW estimate draws its images from those the test scored (two batches of 16)."""
    record = train_tiny(tmp_path / "run", data_root, "trainer.max_epochs=1",
                        "data.eval_batch_size=16", "trainer.limit_test_batches=2")  # fmt: skip
    assert record["status"] == "complete" and record["iw_images"] == 32


# --- D. the run holds its directory ----------------------------------------------------------


class SwapRunDir(L.Callback):
    """At the start of the test phase, the run folder is moved away and a link to ``target``
    put in its place: what the run writes from then on must not go there."""

    def __init__(self, run: str, target: str) -> None:
        self.run, self.target = Path(run), Path(target)

    def on_test_start(self, trainer, pl_module):
        self.run.rename(self.run.with_name("moved"))
        self.run.symlink_to(self.target, target_is_directory=True)


def test_a_run_folder_swapped_for_a_link_mid_run_writes_nothing_through_it(data_root, tmp_path):
    run, target = tmp_path / "run", tmp_path / "outside"
    target.mkdir()
    (target / "keep.txt").write_text("not the run's")
    before = file_hashes(target)
    swap = f"_target_:tests.test_hostile_input.SwapRunDir,run:'{run}',target:'{target}'"
    record = train_tiny(run, data_root, f"+callbacks.swap={{{swap}}}")
    assert file_hashes(target) == before  # nothing created, changed or deleted there
    moved = tmp_path / "moved"
    assert read_metrics(moved)["status"] == "complete" == record["status"]
    assert (moved / "explorer.html").is_file() and (moved / "grid.png").is_file()


def test_a_failed_continuation_of_a_complete_run_keeps_its_record(
    data_root, tmp_path, monkeypatch, app
):
    run = tmp_path / "run"
    args = [f"data.root={data_root}", *TINY, "callbacks=none", f"hydra.run.dir={run}"]
    assert app(*args, "trainer.max_epochs=1").returncode == 0
    complete = read_metrics(run)

    def fails(self, x):  # a full disk while the continuation trains: the user's to fix
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "checkpoints" / "x"))

    monkeypatch.setattr("vae_latent.model.LitVAE.fused_step", fails)
    proc = app(*args, "trainer.max_epochs=2", "resume=true")
    assert_one_line_error(proc, "No space left on device")
    after = read_metrics(run)
    assert after["status"] == "failed" and after["previous"] == complete


def test_eval_reads_its_checkpoint_once(trained, data_root, tmp_path, app, monkeypatch):
    import vae_latent.run.checkpoints as checkpoints

    reads, real = [], checkpoints.read_bytes
    monkeypatch.setattr(
        checkpoints, "read_bytes", lambda p, limit: reads.append(str(p)) or real(p, limit)
    )
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: real_load(_bytes_only(f), *a, **k))
    ckpt = trained / "checkpoints" / "last.ckpt"
    proc = app(f"ckpt={ckpt}", f"data.root={data_root}", "metrics.iw_samples=0",
               f"hydra.run.dir={tmp_path / 'e'}", main="eval")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert reads.count(str(ckpt)) == 1


def _bytes_only(f):
    assert not isinstance(f, (str, os.PathLike)), f"torch.load read {f} by its path"
    return f


# --- E. scale and odd places ------------------------------------------------------------------


def test_the_reports_figures_and_pages_show_the_first_runs_and_say_so(
    trained, tmp_path, monkeypatch
):
    """Past the caps a report's cost stays flat (benchmarks.report_scale measures 2,000 runs)."""
    from benchmarks.report_scale import write_sweep
    from vae_latent.study import figures, report

    monkeypatch.setattr(figures, "SHEET_RUNS", 3)
    monkeypatch.setattr(figures, "EPOCH_RUNS", 4)
    monkeypatch.setattr(report, "EXPLORER_RUNS", 5)
    sweep = tmp_path / "sweep"
    write_sweep(trained, sweep, 12)
    rows = write_report(sweep)
    assert len(rows) == 12
    from vae_latent.latent.explorer_page import read_run

    assert len(read_run(sweep / "explorer.html")["runs"]) == 5
    assert "the first 5 of 12 complete runs" in (sweep / "report.md").read_text()
    import imageio.v3 as iio

    height = iio.improps(sweep / "figure_sheet.png").shape[0]
    assert height < 4 * 4.2 * 80  # three rows of pictures (and a title), not twelve


@pytest.mark.parametrize("place", ["/proc/vae-latent-test-run", "/dev/full/run"])
def test_a_run_directory_where_none_can_be_is_one_line(app, place):
    proc = app(f"hydra.run.dir={place}")
    assert_one_line_error(proc, f"cannot create {place}", "hydra.run.dir")


def test_a_run_directory_whose_path_is_not_utf8(data_root, tmp_path):
    """Held by its descriptor (/proc), the run writes there; where it cannot be, one line.
    In subprocesses started in such a folder: the path never enters this process's reports."""
    import subprocess
    import sys

    folder = bytes(tmp_path) + b"/cwd\xff"
    os.mkdir(folder)
    args = [f"data.root={data_root}", *TINY, "trainer.max_epochs=1", "callbacks=none"]
    no_proc = "import vae_latent.run.rundir as r; from pathlib import Path; "
    no_proc += "r.held = lambda path, fd: Path(path); "
    for setup, code in (("", 0), (no_proc, 2)):
        proc = subprocess.run(
            [sys.executable, "-c", f"{setup}from vae_latent.cli import train_main; train_main()",
             *args],
            cwd=folder, capture_output=True, timeout=300,
        )  # fmt: skip
        stderr = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == code, stderr[-2000:]
        if code:
            assert_one_line_error(proc_text(proc), "is not a UTF-8 path", code=2)
    runs = list(Path(os.fsdecode(folder)).glob("outputs/runs/*/*/metrics.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["status"] == "complete"


def proc_text(proc):
    from .conftest import AppResult

    decode = lambda b: b.decode("utf-8", "replace")  # noqa: E731
    return AppResult(proc.returncode, decode(proc.stdout), decode(proc.stderr))


def test_a_hostile_config_never_reaches_the_config_loader_unescaped(tmp_path):
    """A saved config with a tag is refused by the safe loader, named as damaged."""
    sweep = tmp_path / "sweep"
    run = make_run(sweep, "a", "mnist", "native", 2, metrics=good(0.9, 0.95, 0.4))
    (run / ".hydra" / "config.yaml").write_text("a: !!python/object/apply:os.system ['echo x']\n")
    rows = write_report(sweep)
    assert rows[0]["status"] == "damaged" and "not valid YAML" in rows[0]["error"]
