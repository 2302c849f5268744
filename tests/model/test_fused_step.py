"""The training step: plain eager, Lightning's, and the fused one (a CUDA graph on a GPU)."""

import copy

import lightning as L
import pytest
import torch

from vae_latent.callbacks import NonFiniteGuard
from vae_latent.errors import NonFiniteLoss
from vae_latent.model import ConvVAE, LitVAE
from vae_latent.model.fused_step import StepRunner, fused_blocker, match_mode
from vae_latent.model.lit_vae import PROVEN

from ..conftest import TINY, assert_one_line_error, read_metrics, train_tiny

cuda = pytest.mark.cuda  # skipped without a CUDA GPU (conftest.py); `pytest -m cuda` selects them
# metrics.json's step where the CPU fast path ran, after its first step matched the reference
FAST = "fused: CPU fast path (NHWC layers, backward written out), " + PROVEN


def _batch(n=16, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=gen) > 0.5).float(), torch.zeros(n, dtype=torch.long)


def _fixed_eps(monkeypatch, eps):
    """Every reparameterization draws these eps: the same noise for every path compared."""
    monkeypatch.setattr(ConvVAE, "noise", staticmethod(lambda like: eps.to(like)))


def _lightning_step(model, batch, accelerator="cpu"):
    """One real Trainer.fit step of ``model`` on ``batch``; returns the logged step loss."""
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        limit_val_batches=0,
    )
    trainer.fit(model, train_dataloaders=_OneBatch(batch))
    return trainer


class _OneBatch:
    """An iterable of one batch (a list would read as several dataloaders to Lightning)."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        yield self.batch

    def __len__(self):
        return 1


@pytest.mark.filterwarnings("ignore:You defined a `validation_step`")
@pytest.mark.parametrize("step", ["lightning", "fused"])
def test_one_step_matches_the_plain_eager_step(monkeypatch, step):
    """From the same weights and eps: the same loss and the same updated weights."""
    torch.manual_seed(0)
    base = LitVAE(latent_dim=2, step="lightning")
    x, y = _batch()
    _fixed_eps(monkeypatch, torch.randn(16, 2, generator=torch.Generator().manual_seed(2)))

    plain = copy.deepcopy(base)  # the plain PyTorch loop: forward, loss, backward, Adam
    opt = torch.optim.Adam(plain.parameters(), lr=plain.hparams.lr)
    recon, kl = plain(x)
    plain_loss = (recon + kl).mean()
    plain_loss.backward()
    opt.step()

    model = LitVAE(latent_dim=2, step=step)
    model.load_state_dict(base.state_dict())
    trainer = _lightning_step(model, (x, y))
    want = {
        "lightning": "lightning",
        "fused": FAST,
    }[step]
    assert trainer.global_step == 1 and model.step_used == want
    loss = trainer.callback_metrics["train/elbo_step"]
    torch.testing.assert_close(-loss, plain_loss.detach())
    for (name, a), b in zip(model.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_fused_and_lightning_steps_train_the_same_run(data_root, tmp_path):
    lightning = train_tiny(tmp_path / "a", data_root, "model.step=lightning")
    fused = train_tiny(tmp_path / "b", data_root, "model.step=fused")
    assert (fused["step"], lightning["step"]) == (
        FAST,
        "lightning",
    )
    for key in ("epochs", "global_steps", "train_images", "checkpoint_epoch", "test_checkpoint"):
        assert fused[key] == lightning[key], key
    assert fused["test_elbo"] == pytest.approx(lightning["test_elbo"], abs=1e-4)
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    adam = ckpt["optimizer_states"][0]["state"][0]
    assert float(adam["step"]) == fused["global_steps"]  # Adam's state travels in the checkpoint


def test_a_fused_run_resumes_from_its_last_checkpoint(data_root, tmp_path, app):
    run = tmp_path / "run"
    args = [
        f"data.root={data_root}",
        *TINY,
        "callbacks=none",
        "model.step=fused",
        f"hydra.run.dir={run}",
    ]
    assert app(*args, "trainer.max_epochs=1").returncode == 0
    (run / "metrics.json").unlink()
    done = app(*args, "trainer.max_epochs=2", "resume=true")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = read_metrics(run)
    assert (metrics["epochs"], metrics["global_steps"]) == (2, 8)
    adam = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]
    assert float(adam["state"][0]["step"]) == 8  # resumed from step 4, not from zero


@pytest.mark.parametrize(
    "override, word",
    [
        ("+trainer.gradient_clip_val=1.0", "clip"),
        ("+trainer.accumulate_grad_batches=2", "accumulate"),
        ("trainer=ddp", "strategy=ddp"),
        ("trainer.precision=bf16-mixed", "precision=bf16-mixed"),
    ],
)
def test_the_fused_step_refuses_what_lightning_does_in_its_backward_or_step(
    app, tmp_path, override, word
):
    proc = app("model.step=fused", override, f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(proc, "model.step=fused", word)


@pytest.mark.parametrize(
    "kwargs, why",
    [
        ({}, None),
        ({"gradient_clip_val": 1.0}, "clipping"),
        ({"accumulate_grad_batches": 2}, "accumulation"),
        ({"precision": "bf16-mixed"}, "precision bf16-mixed"),
        ({"strategy": "ddp"}, "DDPStrategy"),
    ],
)
def test_the_auto_step_keeps_lightnings_step_where_lightning_does_that_work(kwargs, why):
    """``model.step=auto`` fuses (and captures, on one GPU) only where nothing is skipped."""
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, **kwargs)
    blocker = fused_blocker(trainer)
    assert blocker is None if why is None else why in blocker


def test_a_graph_runs_optimizer_state_loads_into_an_eager_run():
    """A CUDA-graph run saves Adam with capturable=True; resumed on the CPU it must still step."""
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=2)
    saved = torch.optim.Adam(model.parameters(), lr=1e-4)
    torch.stack(model(_batch()[0])).mean().backward()
    saved.step()
    state = saved.state_dict()
    for group in state["param_groups"]:
        group["capturable"] = True  # as the graph run's checkpoint holds it
    plain = torch.optim.Adam(model.parameters(), lr=1e-4)
    plain.load_state_dict(copy.deepcopy(state))
    with pytest.raises((AssertionError, RuntimeError)):  # what a resume did before
        plain.step()
    eager = torch.optim.Adam(model.parameters(), lr=1e-4)
    match_mode(eager)
    eager.load_state_dict(state)
    assert not eager.param_groups[0]["capturable"] and state["param_groups"][0]["capturable"]
    before = [p.detach().clone() for p in model.parameters()]
    eager.step()
    assert float(eager.state[next(model.parameters())]["step"]) == 2  # continued, not restarted
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


class _Losses(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no")
@pytest.mark.parametrize("step", ["lightning", "fused"])
def test_each_logged_step_loss_is_that_steps_own(tmp_path, step):
    """TensorBoard's ``train/elbo_step`` at step s is the ELBO of batch s, not of an earlier one."""
    import csv

    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    losses = _Losses()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        log_every_n_steps=3,
        logger=CSVLogger(tmp_path, name="", version=""),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[losses],
    )
    data = DataLoader(TensorDataset(*_batch(64)), batch_size=8)
    trainer.fit(LitVAE(latent_dim=2, step=step), data)
    with open(tmp_path / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["train/elbo_step"]]
    logged = {int(r["step"]): float(r["train/elbo_step"]) for r in rows}
    assert sorted(logged) == [2, 5]  # every 3rd of 8 steps, 0-based
    for s, value in logged.items():
        assert value == pytest.approx(-losses.losses[s], rel=1e-6), s


class _PoisonLastBatch(L.Callback):
    """NaN weights before the second epoch's last batch: that step's loss is NaN."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == trainer.num_training_batches - 1:
            with torch.no_grad():
                next(pl_module.vae.decoder.parameters()).fill_(float("nan"))


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no")
@pytest.mark.parametrize("validate", [True, False])
def test_the_guard_stops_a_bad_epoch_before_it_is_checkpointed(tmp_path, validate):
    """Between two reads of the loss (a GPU's logging interval) the epoch's sums still catch it."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(*_batch(64)), batch_size=16)
    guard = NonFiniteGuard()
    guard.on_before_backward = None  # no per-step read: as on a GPU between two intervals
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=1 if validate else 0,
        callbacks=[
            _PoisonLastBatch(),
            guard,
            ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True),
        ],
    )
    with pytest.raises(NonFiniteLoss, match=r"epoch 2, step 8 \(NaN/inf\).*kept"):
        trainer.fit(LitVAE(latent_dim=2, step="lightning"), data, data if validate else None)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0  # the first epoch's, not the poisoned one
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_the_runner_calls_the_step_once_per_batch_off_cuda():
    calls = []
    runner = StepRunner(lambda x: calls.append(x) or x.sum(), graph=False)
    for i in range(5):
        assert runner(torch.full((2,), float(i))) == 2 * i
    assert len(calls) == 5 and not runner.captured


class _HostReads(L.Callback):
    """Counts reads of a tensor's value on the host per batch (what syncs a GPU), outside Adam."""

    def __init__(self, monkeypatch):
        import inspect

        self.per_step: dict[int, int] = {}
        self._count = 0
        for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                frames = inspect.stack(context=0)[1:6]
                if not any("torch/optim" in f.filename for f in frames):
                    self._count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._count = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.per_step[trainer.global_step - 1] = self._count


@pytest.mark.parametrize("step", ["fused", "lightning"])
def test_no_host_read_between_logging_steps(data_root, tmp_path, monkeypatch, step):
    """The app's own Trainer (progress bar, callbacks, logger) reads a training tensor on the
    host only on the logged batches: on a GPU, every other batch runs without a sync."""
    from vae_latent.callbacks import NonFiniteGuard
    from vae_latent.run.build import build

    from ..conftest import compose

    cfg = compose(f"data.root={data_root}", *TINY, f"model.step={step}", "trainer.max_epochs=2",
                  "trainer.log_every_n_steps=3", "trainer.enable_progress_bar=true",
                  "callbacks.progress_bar.refresh_rate=1")  # fmt: skip
    run = build(cfg, tmp_path)
    for callback in run.trainer.callbacks:  # read as on a GPU: once per logging interval
        if isinstance(callback, NonFiniteGuard):
            callback.every_step_on_cpu = False
    reads = _HostReads(monkeypatch)
    run.trainer.callbacks.append(reads)
    run.trainer.fit(run.model, datamodule=run.datamodule)
    assert sorted(reads.per_step) == list(range(8))
    logged = {s for s in reads.per_step if (s + 1) % 3 == 0}
    if step == "fused":  # the CPU fast path's first step compares itself with the reference
        assert reads.per_step[0] > 0
        logged.add(0)
    assert {s: n for s, n in reads.per_step.items() if s not in logged and n} == {}
    assert all(reads.per_step[s] > 0 for s in logged)  # the counter sees the reads it should


def test_a_capture_that_fails_warns_once_and_the_run_ends_on_lightnings_step(
    data_root, tmp_path, monkeypatch, caplog
):
    """model.step=auto as on one GPU, but capture raises: Lightning's step takes over."""
    from vae_latent.model import lit_vae
    from vae_latent.model.fused_step import StepChoice

    class RefusingGraph:
        def __init__(self):
            raise RuntimeError("capture refused by this test")

    monkeypatch.setattr(lit_vae, "choose_step", lambda *a: StepChoice(fused=True, graph=True))
    monkeypatch.setattr(torch.cuda, "CUDAGraph", RefusingGraph)
    fallback = train_tiny(tmp_path / "fallback", data_root, "callbacks=none")
    assert fallback["step"] == (
        "lightning (CUDA graph failed: RuntimeError: capture refused by this test)"
    )
    warned = [r for r in caplog.records if "CUDA graph is off" in r.getMessage()]
    assert len(warned) == 1 and "capture refused by this test" in warned[0].getMessage()
    monkeypatch.undo()
    plain = train_tiny(tmp_path / "plain", data_root, "callbacks=none", "model.step=lightning")
    assert fallback["global_steps"] == plain["global_steps"] == 8
    assert fallback["test_elbo"] == pytest.approx(plain["test_elbo"], abs=1e-3)


def test_anomaly_detection_is_refused_with_the_fused_step_and_keeps_lightnings_under_auto(
    app, data_root, tmp_path
):
    proc = app("model.step=fused", "+trainer.detect_anomaly=true", f"hydra.run.dir={tmp_path}/a")
    assert_one_line_error(proc, "model.step=fused", "detect_anomaly")
    trainer = L.Trainer(accelerator="cpu", logger=False, detect_anomaly=True)
    assert "anomaly detection" in fused_blocker(trainer)
    record = train_tiny(tmp_path / "b", data_root, "callbacks=none", "+trainer.detect_anomaly=true")
    assert record["step"].startswith("lightning (anomaly detection reads every backward output")


def test_a_callback_with_hooks_the_fused_step_would_skip_blocks_it():
    class ClipsGradients(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            pass

    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[ClipsGradients()])
    assert "ClipsGradients.on_before_optimizer_step" in fused_blocker(trainer)


def test_a_condition_added_to_the_one_list_refuses_fused_in_validation_and_in_choose_step(
    monkeypatch,
):
    """The fused step's conditions live in FUSED_CONDITIONS: validation (before data) and
    choose_step (auto's reason, fused's refusal) both follow a condition added there."""
    from vae_latent.errors import ConfigError
    from vae_latent.model import fused_step
    from vae_latent.run.validate import validate

    from ..conftest import compose

    why = "a hypothetical setting runs in Lightning's optimizer step"
    added = fused_step.FusedCondition(
        lambda t: why if t.max_epochs == 7 else None,
        lambda t: f"trainer.max_epochs={t.get('max_epochs')} hypothetically skips work",
    )
    monkeypatch.setattr(fused_step, "FUSED_CONDITIONS", [*fused_step.FUSED_CONDITIONS, added])
    with pytest.raises(ConfigError, match="fused runs Adam inside the step: trainer.max_epochs="):
        validate(compose("model.step=fused", "trainer.max_epochs=7"))
    validate(compose("model.step=auto", "trainer.max_epochs=7"))  # auto takes Lightning's step
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, max_epochs=7)
    assert fused_step.choose_step("auto", trainer, ConvVAE(latent_dim=2)).why == why
    with pytest.raises(ConfigError, match=f"model.step=fused cannot run here: {why}"):
        fused_step.choose_step("fused", trainer, ConvVAE(latent_dim=2))


def test_validation_names_the_fused_steps_conditions_in_its_own_order():
    """One list, two readings: a config with several conditions is refused as before."""
    from vae_latent.model.fused_step import fused_refusal

    both = {"strategy": "ddp", "gradient_clip_val": 1.0}
    assert "it cannot clip or accumulate gradients" in fused_refusal(both)
    assert "trainer.strategy=ddp syncs" in fused_refusal({"strategy": "ddp"})
    assert fused_refusal({"precision": "32-true", "strategy": "auto"}) is None


# --- on a CUDA GPU --------------------------------------------------------------------------


def _gpu_args(data_root, *dropped):
    """TINY without its accelerator (and ``dropped`` keys), no pictures."""
    keep = [a for a in TINY if not any(k in a for k in ("accelerator", *dropped))]
    return [f"data.root={data_root}", *keep, "callbacks=none"]


def _graph_and_eager(lr=1e-4):
    """Two copies of one model on the GPU: one stepped through a CUDA graph, one eagerly."""
    torch.manual_seed(0)
    base = LitVAE(latent_dim=2).cuda()
    graphed, eager = copy.deepcopy(base), copy.deepcopy(base)
    for m in (graphed, eager):
        m._optimizer = torch.optim.Adam(m.parameters(), lr=lr, capturable=m is graphed)
    return graphed, eager, StepRunner(graphed.fused_step, graph=True, state=graphed.step_state)


@cuda
def test_n_graph_steps_equal_n_eager_steps_from_one_seed():
    """Seeded once: the replays draw the noise the eager steps draw, step after step."""
    graphed, eager, runner = _graph_and_eager()
    x, steps = _batch(32)[0].cuda(), 8  # 3 eager warm-up steps, the captured one, 4 replays
    torch.cuda.manual_seed(7)
    graph_losses = [runner(x).clone() for _ in range(steps)]
    assert runner.captured and runner.failed is None
    torch.cuda.manual_seed(7)
    eager_losses = [eager.fused_step(x) for _ in range(steps)]
    torch.testing.assert_close(torch.stack(graph_losses), torch.stack(eager_losses))
    for a, b in zip(graphed.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@cuda
def test_each_replay_draws_fresh_noise():
    """At lr=0 the weights never move, so only the noise can change the single-sample KL."""
    graphed, _, runner = _graph_and_eager(lr=0.0)
    x = _batch(32)[0].cuda()
    before = [p.detach().clone() for p in graphed.parameters()]
    for _ in range(8):
        runner(x)
    assert runner.captured
    kl_sums = []
    for _ in range(5):  # replays only: the KL term summed over the batch after each
        runner(x)
        kl_sums.append(float(graphed._last_sums[1]))
    assert len(set(kl_sums)) == 5, kl_sums
    for a, b in zip(before, graphed.parameters(), strict=True):
        assert torch.equal(a, b)


@cuda
def test_no_host_sync_between_logging_steps_on_the_gpu(data_root, tmp_path):
    """300 graph steps under torch's sync debug mode: syncs only on the logged batches."""
    from benchmarks.gpu_acceptance import count_syncs

    found = count_syncs(str(data_root), tmp_path, overrides=("data.val_size=40",))
    assert found["step"] == "fused, CUDA graph" and found["steps"] == 300
    assert found["syncs_between"] == {}


@cuda
def test_a_graph_run_counts_steps_resumes_and_names_the_gpu(data_root, tmp_path, app):
    run = tmp_path / "run"
    args = [*_gpu_args(data_root), "trainer.accelerator=gpu", f"hydra.run.dir={run}"]
    assert app(*args, "trainer.max_epochs=1").returncode == 0
    first = read_metrics(run)
    assert first["step"] == "fused, CUDA graph" and first["global_steps"] == 4
    assert first["device"] == torch.cuda.get_device_name() and first["accelerator"] == "cuda"
    (run / "metrics.json").unlink()
    assert app(*args, "trainer.max_epochs=2", "resume=true").returncode == 0
    metrics = read_metrics(run)
    assert (metrics["epochs"], metrics["global_steps"]) == (2, 8)
    eager = train_tiny(
        tmp_path / "eager",
        data_root,
        "model.step=lightning",
        "trainer.accelerator=gpu",
        "callbacks=none",
    )
    assert eager["global_steps"] == metrics["global_steps"]


@cuda
def test_a_graph_run_takes_short_last_batches_and_resumes_an_eager_checkpoint(
    data_root, tmp_path, app
):
    run = tmp_path / "run"
    # 200 training images in batches of 16: 12 full batches and one of 8 per epoch
    args = [*_gpu_args(data_root, "limit_train"), f"hydra.run.dir={run}"]
    assert app(*args, "trainer.accelerator=cpu", "trainer.max_epochs=1").returncode == 0
    (run / "metrics.json").unlink()
    done = app(*args, "trainer.accelerator=gpu", "trainer.max_epochs=3", "resume=true")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = read_metrics(run)
    assert metrics["step"] == "fused, CUDA graph"
    assert (metrics["epochs"], metrics["global_steps"]) == (3, 39)
    assert metrics["test_elbo"] == metrics["test_elbo"]  # finite, not NaN
    (run / "metrics.json").unlink()  # and back: the graph run's Adam state, eagerly on the CPU
    done = app(*args, "trainer.accelerator=cpu", "trainer.max_epochs=4", "resume=true")
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_metrics(run)["global_steps"] == 52


@cuda
def test_the_guard_stops_a_diverging_graph_run(data_root, tmp_path, app):
    run = tmp_path / "run"
    args = _gpu_args(data_root)
    proc = app(
        *args,
        "trainer.accelerator=gpu",
        "model.lr=1e3",
        "trainer.log_every_n_steps=1",
        "trainer.max_epochs=3",
        f"hydra.run.dir={run}",
    )
    assert_one_line_error(proc, "non-finite loss", code=1)
    assert read_metrics(run)["status"] == "failed"


def test_a_default_cpu_run_records_the_fast_step_it_ran(trained):
    """model.step=auto on the CPU: the fused step through the NHWC layers; metrics.json says so."""
    assert read_metrics(trained)["step"] == FAST
