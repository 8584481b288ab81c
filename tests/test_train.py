"""fastgan.train: the step, learning on mnist-5k, outputs, checkpoints and exact resume."""

import os

import pytest
import torch

import fastgan
from fastgan.data import load_mnist_5k
from fastgan.models import build
from fastgan.train import (
    CheckpointError,
    ConfigError,
    TrainConfig,
    Trainer,
    load_checkpoint,
    read_history,
    sample,
    save_checkpoint,
    train_step,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small(out, **kw):
    """A small, fast configuration (narrow mlp-bn: batch norm, Adam and dropout all in play)."""
    base = dict(
        model="mlp-bn",
        g_widths=(32, 64, 128),
        d_widths=(64, 32),
        latent_dim=16,
        dropout=0.2,
        batch_size=256,
        out=str(out),
        progress=False,
        log_every=7,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_train_step_updates_both_networks():
    torch.manual_seed(0)
    G, D = build("dcgan", g_widths=(16, 8), d_widths=(8, 16))
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    g0 = [p.detach().clone() for p in G.parameters()]
    d0 = [p.detach().clone() for p in D.parameters()]
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    losses = train_step(G, D, opt_g, opt_d, real, None, torch.randn(8, 100), grad_clip=1.0)
    assert losses.shape == (2,) and not losses.requires_grad
    assert abs(losses[0].item() - 2 * 0.6931) < 0.1 and abs(losses[1].item() - 0.6931) < 0.1
    assert all(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))
    assert all(p.requires_grad for p in D.parameters())


def _hist(x):
    return torch.histc(x.clamp(-1, 1), 10, -1, 1) / x.numel()


def test_a_few_hundred_steps_learn_mnist_5k(tmp_path):
    """300 steps of the tutorial MLP GAN move the samples' pixel distribution toward MNIST's."""
    images, _ = load_mnist_5k()
    data = images.float() / 127.5 - 1
    trainer = Trainer(TrainConfig(model="mlp", steps=300, out=str(tmp_path), progress=False, log_every=100, seed=0))
    before = trainer.samples()
    history = trainer.fit()
    after = trainer.samples()
    assert history.shape == (300, 2) and torch.isfinite(history).all()
    # at init tanh(~0) gives mid-grey images; MNIST is mostly black background
    gap_before = abs(before.mean() - data.mean())
    gap_after = abs(after.mean() - data.mean())
    assert gap_after < 0.75 * gap_before, (gap_before, gap_after)
    hd = _hist(data)
    assert (_hist(after) - hd).abs().sum() < (_hist(before) - hd).abs().sum() - 0.1
    # the first losses are those of an untrained D (logits ~0): 2 ln 2 and ln 2
    torch.testing.assert_close(history[0], torch.tensor([1.3863, 0.6931], dtype=torch.float64), atol=0.01, rtol=0)


def test_outputs(tmp_path):
    trainer = Trainer(small(tmp_path, epochs=2))
    trainer.fit()
    spe = 5000 // 256
    for name in (
        "checkpoint.pt",
        "samples.png",
        "losses.png",
        "history.csv",
        "train.log",
        "config.json",
        "samples/epoch_0001.png",
        "samples/epoch_0002.png",
    ):
        assert os.path.isfile(tmp_path / name), name
    for png in ("samples.png", "losses.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = read_history(tmp_path / "history.csv")
    assert history.shape == (2 * spe, 2)
    torch.testing.assert_close(history, trainer.history, rtol=1e-5, atol=1e-6)
    log = (tmp_path / "train.log").read_text().splitlines()
    assert log[0].startswith("epoch 1/2") and "img/s" in log[0]
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_checkpoint_round_trip(tmp_path):
    trainer = Trainer(small(tmp_path, steps=10))
    trainer.fit()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 10 and state["config"] == trainer.cfg
    for key, module in (("generator", trainer.G), ("discriminator", trainer.D)):
        for k, v in module.state_dict().items():
            assert torch.equal(state[key][k], v), k
    assert state["opt_g"]["state"] and state["rng"]["noise"].dtype == torch.uint8
    # loads with weights_only=True: nothing but tensors and plain containers inside
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    # atomic rewrite: the new file replaces the old one, no temporary left
    save_checkpoint(dict(state, config=state["config"].to_dict(), step=11), tmp_path / "checkpoint.pt")
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 11
    assert os.listdir(tmp_path).count("checkpoint.pt") == 1
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    from fastgan._files import atomic_write

    path = tmp_path / "result.json"
    with atomic_write(path, "w") as f:
        f.write("first")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(path, "w") as f:
            f.write("half of the sec")
            raise RuntimeError("disk full")
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["result.json"]


def test_bad_checkpoints(tmp_path):
    Trainer(small(tmp_path / "run", steps=3)).fit()
    good = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*trunc.pt"):
        load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a fastgan checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="from model 'mlp-bn', not 'dcgan'"):
        Trainer(small(tmp_path / "run", model="dcgan", g_widths=None, d_widths=None), resume=True, explicit={"model"})
    with pytest.raises(CheckpointError, match="--lr .* differs"):
        Trainer(small(tmp_path / "run", lr=1e-3), resume=True, explicit={"lr"})
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(small(tmp_path / "empty"), resume=True)


def test_resume_is_exact(tmp_path):
    """A run stopped mid-epoch and resumed ends with the same weights as one that never
    stopped (19 steps per epoch: the stop at step 25 is mid-epoch 2, the end in epoch 3)."""
    straight = Trainer(small(tmp_path / "a", steps=45))
    straight.fit()
    first = Trainer(small(tmp_path / "b", steps=25))
    first.fit()
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 25
    resumed = Trainer(small(tmp_path / "b", steps=45), resume=True, explicit={"steps"})
    assert resumed.step == 25
    resumed.fit()
    for a, b in ((straight.G, resumed.G), (straight.D, resumed.D)):
        sa, sb = a.state_dict(), b.state_dict()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert torch.equal(straight.history, resumed.history)
    assert torch.equal(straight.samples(), resumed.samples())


def test_checkpoints_between_loss_syncs_hold_every_steps_losses(tmp_path, monkeypatch):
    # log_every 7, checkpoint_every 5: the step-5 and step-10 checkpoints fall between syncs
    from fastgan.train import outputs as outputs_mod

    saved, save = [], outputs_mod.save_checkpoint

    def recording_save(state, path):
        save(state, path)
        saved.append((state["step"], len(load_checkpoint(path)["history"])))

    monkeypatch.setattr(outputs_mod, "save_checkpoint", recording_save)
    straight = Trainer(small(tmp_path / "a", steps=12, checkpoint_every=5))
    straight.fit()
    assert saved[:2] == [(5, 5), (10, 10)]
    # resuming from the step-10 checkpoint continues the history where it stopped
    ckpt = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    first = Trainer(small(tmp_path / "b", steps=10, checkpoint_every=5))
    first.fit()
    resumed = Trainer(small(tmp_path / "b", steps=12, checkpoint_every=5), resume=True, explicit={"steps"})
    resumed.fit()
    assert torch.equal(resumed.history, straight.history) and len(ckpt["history"]) == 12


def test_epoch_files_are_written_while_the_next_epoch_trains(tmp_path, monkeypatch):
    """The writer thread saves the state of the step it was handed, not a later one: the
    epoch-1 checkpoint (step 19) is held back until epoch 2 has trained to step 25, and it
    still equals a run that stopped at step 19."""
    import threading

    from fastgan.train import outputs as outputs_mod

    written, save = [], outputs_mod.save_checkpoint
    mid_epoch_2 = threading.Event()

    def held_save(state, path):
        if state["step"] == 19:  # on the main thread this would wait in vain
            written.append(("epoch 2 trained meanwhile", mid_epoch_2.wait(timeout=60)))
        save(state, path)
        written.append((state["step"], threading.current_thread() is threading.main_thread(), load_checkpoint(path)))

    monkeypatch.setattr(outputs_mod, "save_checkpoint", held_save)
    two = Trainer(small(tmp_path / "two", epochs=2))
    real_step = two._step

    def step():
        if two.step == 25:
            mid_epoch_2.set()
        return real_step()

    two._step = step
    two.fit()
    assert written[0] == ("epoch 2 trained meanwhile", True)
    assert [w[:2] for w in written[1:]] == [(19, False), (38, False)]
    one = Trainer(small(tmp_path / "one", epochs=1))
    one.fit()
    epoch1 = written[1][2]
    for key, module in (("generator", one.G), ("discriminator", one.D)):
        for k, v in module.state_dict().items():
            assert torch.equal(epoch1[key][k], v), (key, k)
    assert torch.equal(epoch1["history"], one.history)
    assert epoch1["opt_g"]["state"][0]["exp_avg"].equal(one.opt_g.state_dict()["state"][0]["exp_avg"])
    assert (tmp_path / "two" / "samples" / "epoch_0001.png").read_bytes() == (
        tmp_path / "one" / "samples" / "epoch_0001.png"
    ).read_bytes()


def _failing_trainer(tmp_path, monkeypatch, at_step, then):
    """A Trainer whose epoch-1 checkpoint write fails (a full disk); at step `at_step` its step
    waits for that write to have failed, then runs then(trainer)."""
    from fastgan.train import outputs as outputs_mod

    def failing_save(state, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs_mod, "save_checkpoint", failing_save)
    t = Trainer(small(tmp_path, epochs=3))  # 19 steps an epoch, loss syncs every 7 steps
    real_step = t._step

    def step():
        if t.step == at_step:
            t._files._thread.join()  # the epoch-1 write has failed by now
            then(t)
        return real_step()

    t._step = step
    return t


def test_a_failed_background_write_stops_the_run_at_the_next_loss_sync(tmp_path, monkeypatch):
    t = _failing_trainer(tmp_path, monkeypatch, 20, lambda t: None)
    with pytest.raises(OSError, match="No space left"):
        t.fit()
    assert t.step == 21 and t.checkpoint_step is None  # 21: the first sync after the failure
    assert not (tmp_path / "samples" / "epoch_0001.png").exists()  # the checkpoint is written first


def test_ctrl_c_names_a_write_that_failed(tmp_path, monkeypatch, capsys):
    def interrupt(t):
        raise KeyboardInterrupt

    t = _failing_trainer(tmp_path, monkeypatch, 20, interrupt)
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    err = capsys.readouterr().err
    assert (
        "interrupted at step 20; no checkpoint was written yet; writing the run's files had failed: "
        "[Errno 28] No space left on device" in err
    )


def test_ctrl_c_lets_the_checkpoint_being_written_land(tmp_path, monkeypatch, capsys):
    import threading

    from fastgan.train import outputs as outputs_mod

    save, interrupted = outputs_mod.save_checkpoint, threading.Event()

    def held_save(state, path):
        assert interrupted.wait(timeout=60)  # the write is in flight when Ctrl-C comes
        save(state, path)

    monkeypatch.setattr(outputs_mod, "save_checkpoint", held_save)
    t = Trainer(small(tmp_path, epochs=3))
    real_step = t._step

    def step():
        if t.step == 20:
            interrupted.set()
            raise KeyboardInterrupt
        return real_step()

    t._step = step
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    assert (
        f"interrupted at step 20; the last checkpoint (step 19) is intact in {t.checkpoint_path}"
        in capsys.readouterr().err
    )
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 19
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_cpu_copy_is_a_snapshot_that_keeps_state_dict_metadata():
    from collections import OrderedDict

    from fastgan.train.background import cpu_copy

    bn = torch.nn.BatchNorm1d(3)
    sd = bn.state_dict()
    state = {"model": sd, "betas": (0.5, 0.999), "list": [torch.ones(2)], "step": 3}
    copy = cpu_copy(state)
    assert isinstance(copy["model"], OrderedDict) and copy["model"]._metadata == sd._metadata
    assert copy["betas"] == (0.5, 0.999) and copy["step"] == 3
    bn.running_mean.add_(1)
    state["list"][0].add_(1)
    assert copy["model"]["running_mean"].eq(0).all() and copy["list"][0].eq(1).all()
    torch.nn.BatchNorm1d(3).load_state_dict(copy["model"])


def test_background_writer_runs_jobs_in_order_and_hands_back_errors():
    import threading

    from fastgan.train.background import BackgroundWriter

    w, seen = BackgroundWriter(), []
    for i in range(5):
        w.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    w.wait()
    assert [i for i, _ in seen] == list(range(5)) and {n for _, n in seen} == {"fastgan-writer"}
    w.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        w.submit(lambda: seen.append("after"))  # the next call raises the failed job's error
    w.wait()  # the error was handed over once; the job that raised it was not run
    assert seen[-1] != "after"
    w.submit(lambda: 1 / 0)
    assert isinstance(w.drain(), ZeroDivisionError) and w.drain() is None
    gate = threading.Event()
    w.submit(lambda: gate.wait(60) and 1 / 0)
    w.check()  # still running: check() does not wait
    gate.set()
    w._thread.join()
    with pytest.raises(ZeroDivisionError):
        w.check()  # finished with an error: raised now
    w.check()


def test_resuming_a_checkpoint_with_missing_losses_keeps_the_step_numbers(tmp_path):
    Trainer(small(tmp_path, steps=6)).fit()
    path = tmp_path / "checkpoint.pt"
    state = load_checkpoint(path)
    state = dict(state, config=state["config"].to_dict(), history=state["history"][:4])  # as fastgan 0.1.0 could
    save_checkpoint(state, path)
    t = Trainer(small(tmp_path, steps=8), resume=True, explicit={"steps"})
    assert t.history.shape == (6, 2) and torch.isnan(t.history[4:]).all() and not torch.isnan(t.history[:4]).any()
    t.fit()
    assert t.history.shape == (8, 2) and not torch.isnan(t.history[6:]).any()


def test_resume_extends_epochs(tmp_path):
    Trainer(small(tmp_path, epochs=1)).fit()
    t = Trainer(small(tmp_path, epochs=2), resume=True, explicit={"epochs"})
    assert t.step == 19 and t.total_steps == 38
    t.fit()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 38


@pytest.mark.parametrize(
    "opts",
    [
        dict(optimizer="rmsprop", noise="uniform"),
        dict(model="cdcgan", g_widths=(8, 4), d_widths=(4, 8), dropout=0.4),
        dict(model="cgan", backend="torch", g_act="leaky", g_widths=(16, 32), d_widths=(32, 16), dropout=0.3),
    ],
)
def test_options_train(tmp_path, opts):
    t = Trainer(small(tmp_path, steps=5, **opts))
    if opts.get("optimizer") == "rmsprop":
        assert isinstance(t.opt_d, torch.optim.RMSprop)
        assert t.opt_d.param_groups[0]["lr"] == 8e-4 and t.opt_g.param_groups[0]["lr"] == 4e-4
        assert t.grad_clip == 1.0
    h = t.fit()
    assert h.shape == (5, 2) and torch.isfinite(h).all()


def test_sample(tmp_path):
    Trainer(small(tmp_path / "c", model="cgan", g_widths=(16, 32), d_widths=(32, 16), steps=3)).fit()
    images = sample(tmp_path / "c" / "checkpoint.pt", n=12, label=7, out=str(tmp_path / "g.png"))
    assert images.shape == (12, 1, 28, 28)
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="digit 0-9"):
        sample(tmp_path / "c" / "checkpoint.pt", label=12, out=str(tmp_path / "x.png"))
    np = pytest.importorskip("numpy")
    assert sample(
        tmp_path / "c" / "checkpoint.pt", n=np.int64(4), label=torch.tensor(2), out=str(tmp_path / "n.png")
    ).shape == (4, 1, 28, 28)
    for kw, match in (
        (dict(label=3.5), "--label must be an integer"),  # was drawn as 3
        (dict(label="3"), "--label must be an integer"),
        (dict(seed=2**70), "--seed must be an integer from 0"),
        (dict(out=str(tmp_path / "g.jpg")), "--out must be a .png file name"),
    ):
        with pytest.raises(ConfigError, match=match):
            sample(tmp_path / "c" / "checkpoint.pt", **dict(dict(out=str(tmp_path / "x.png")), **kw))
    assert not (tmp_path / "g.jpg").exists()
    Trainer(small(tmp_path / "u", steps=3)).fit()
    with pytest.raises(ConfigError, match="conditional"):
        sample(tmp_path / "u" / "checkpoint.pt", label=3, out=str(tmp_path / "x.png"))


def test_subpackages_load_on_first_use():
    import subprocess
    import sys

    code = (
        "import fastgan, sys; assert 'fastgan.metrics' not in sys.modules; "
        "print(fastgan.metrics.evaluate.__name__, fastgan.train.Trainer.__name__, fastgan.models.build.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["evaluate", "Trainer", "build"]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fastgan.nope  # noqa: B018 - the attribute access is the test


def test_config_validation(tmp_path):
    for bad, match in (
        (dict(epochs=0), "--epochs must be a positive"),
        (dict(steps=-3), "--steps must be a positive"),
        (dict(epochs=1, steps=1), "not both"),
        (dict(model="gan"), "unknown model"),
        (dict(dataset="cifar"), "unknown dataset"),
        (dict(lr=0.0), "--lr must be a positive"),
        (dict(beta1=1.0), "--beta1"),
        (dict(noise="cauchy"), "--noise"),
    ):
        with pytest.raises(ConfigError, match=match):
            Trainer(TrainConfig(out=str(tmp_path), **bad))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_on_cuda(tmp_path):
    t = Trainer(small(tmp_path, steps=40, device="cuda"))
    assert t.loader.images.is_cuda and next(t.G.parameters()).is_cuda
    h = t.fit()
    assert h.shape == (40, 2) and torch.isfinite(h).all()
    t2 = Trainer(small(tmp_path, steps=60, device="cuda"), resume=True, explicit={"steps"})
    assert t2.step == 40
    t2.fit()


def test_a_folder_holding_a_run_is_not_overwritten_silently(tmp_path):
    Trainer(small(tmp_path / "r", steps=3)).fit()
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match="holds a run already .*--resume continues it, --overwrite"):
        Trainer(small(tmp_path / "r", steps=2, lr=1e-3))
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before
    (tmp_path / "r" / "notes.txt").write_text("mine")
    again = Trainer(small(tmp_path / "r", steps=2, lr=1e-3), overwrite=True)
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before  # nothing removed before fit()
    again.fit()
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["step"] == 2
    assert os.listdir(tmp_path / "r" / "samples") == ["step_0000002.png"]  # the old run's grid is gone
    assert (tmp_path / "r" / "train.log").read_text().count("done:") == 1
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"  # what is not a run's output stays


def test_resume_from_python_takes_the_config_it_is_given(tmp_path):
    """Without `explicit`, the config given is the run's: its resumable options are taken (they
    were silently replaced by the checkpoint's), and any other change is refused."""
    cfg = small(tmp_path / "r", steps=4)
    Trainer(cfg).fit()
    cfg.steps, cfg.log_every = 8, 3
    resumed = Trainer(cfg, resume=True)
    assert resumed.total_steps == 8 and resumed.cfg.log_every == 3 and resumed.step == 4
    with pytest.raises(CheckpointError, match="from model 'mlp-bn', not 'dcgan'"):
        Trainer(TrainConfig(model="dcgan", out=str(tmp_path / "r"), steps=8), resume=True)
    with pytest.raises(CheckpointError, match="--lr 0.001 differs"):
        Trainer(small(tmp_path / "r", steps=8, lr=1e-3), resume=True)
    with pytest.raises(ConfigError, match="unknown training options stpes"):
        Trainer(small(tmp_path / "r", steps=8), resume=True, explicit={"stpes"})
    # the same widths as a list are the same widths
    listed = small(tmp_path / "r", steps=8, g_widths=[32, 64, 128], d_widths=[64, 32])
    assert Trainer(listed, resume=True, explicit={"steps", "g_widths", "d_widths"}).total_steps == 8


def test_options_from_numpy_pathlib_and_torch_are_plain_in_the_checkpoint(tmp_path):
    """A run trained and then wrote a checkpoint it could not read (np.float64 lr: a pickled numpy
    object under weights_only) or crashed writing config.json (a Path --out)."""
    np = pytest.importorskip("numpy")
    import pathlib

    cfg = small(
        pathlib.Path(tmp_path / "r"),
        steps=2,
        lr=np.float64(3e-4),
        dropout=np.float32(0.25),
        seed=torch.tensor(4),
        device=torch.device("cpu"),
        g_widths=[np.int64(32), 64, 128],
    )
    Trainer(cfg).fit()
    saved = load_checkpoint(tmp_path / "r" / "checkpoint.pt")["config"]
    assert saved.lr == 3e-4 and type(saved.lr) is float and saved.dropout == 0.25 and saved.seed == 4
    assert saved.out == str(tmp_path / "r") and saved.device == "cpu" and saved.g_widths == (32, 64, 128)
    for bad, match in (
        (dict(checkpoint_every=2.5), "--checkpoint-every must be an integer"),
        (dict(checkpoint_every=True), "--checkpoint-every must be an integer"),
        (dict(lr="2e-4"), "--lr must be a number"),
    ):
        with pytest.raises(ConfigError, match=match):
            Trainer(small(tmp_path / "s", **bad))


def test_the_g_step_leaves_frozen_d_parameters_frozen():
    torch.manual_seed(0)
    G, D = build("mlp", g_widths=(16, 32), d_widths=(32, 16))
    frozen = next(D.parameters())
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    opt_g = torch.optim.Adam(G.parameters(), 2e-4)
    opt_d = torch.optim.Adam([p for p in D.parameters() if p.requires_grad], 2e-4)
    for _ in range(2):
        train_step(G, D, opt_g, opt_d, torch.rand(8, 1, 28, 28) * 2 - 1, None, torch.randn(8, 100))
        assert not frozen.requires_grad and all(p.requires_grad for p in list(D.parameters())[1:])
    assert torch.equal(frozen, before)


def test_epoch_outputs_append_the_history_and_redraw_the_curves_sparingly(tmp_path, monkeypatch):
    """history.csv gains each epoch's rows (a 50-epoch run rewrote 46,900 rows every epoch) and is
    the same file a full write gives, across a resume; losses.png is drawn at the first epoch, then
    at most every PLOT_EVERY_S seconds, and at the end."""
    from fastgan.train import images
    from fastgan.train import outputs as outputs_mod

    drawn = []
    real = outputs_mod.plot_losses
    monkeypatch.setattr(outputs_mod, "plot_losses", lambda *a, **k: drawn.append(len(a[0])) or real(*a, **k))
    monkeypatch.setattr(outputs_mod, "PLOT_EVERY_S", 1e9)
    t = Trainer(small(tmp_path / "r", steps=19 * 3 + 5))  # 19 steps an epoch: 4 epochs, the last short
    t.fit()
    assert drawn == [19, 19 * 3 + 5]
    full = tmp_path / "full.csv"
    images.write_history(t.history, full, t.steps_per_epoch)
    assert (tmp_path / "r" / "history.csv").read_text() == full.read_text()
    resumed = Trainer(small(tmp_path / "r", steps=19 * 5), resume=True, explicit={"steps"})
    resumed.fit()
    images.write_history(resumed.history, full, resumed.steps_per_epoch)
    assert (tmp_path / "r" / "history.csv").read_text() == full.read_text()
    assert (tmp_path / "r" / "samples.png").read_bytes() == (tmp_path / "r" / "samples" / "epoch_0005.png").read_bytes()


def test_each_network_gets_its_own_learning_rate_and_betas(tmp_path):
    t = Trainer(small(tmp_path, steps=1, lr_d=1e-3, lr_g=3e-4, beta1=0.4, beta2=0.99))
    assert {id(p) for p in t.opt_d.param_groups[0]["params"]} == {id(p) for p in t.D.parameters()}
    assert {id(p) for p in t.opt_g.param_groups[0]["params"]} == {id(p) for p in t.G.parameters()}
    assert t.opt_d.param_groups[0]["lr"] == 1e-3 and t.opt_g.param_groups[0]["lr"] == 3e-4
    assert t.opt_d.param_groups[0]["betas"] == t.opt_g.param_groups[0]["betas"] == (0.4, 0.99)


def test_grad_clip_clips_each_network_by_its_own_norm(monkeypatch):
    """train_step clips D's gradients before D's update and G's before G's, each over that
    network's parameters (with SGD lr 1 an update is minus the clipped gradient: its norm <= clip)."""
    torch.manual_seed(0)
    G, D = build("mlp", g_widths=(16, 32), d_widths=(32, 16), latent_dim=8)
    opt_g, opt_d = torch.optim.SGD(G.parameters(), lr=1.0), torch.optim.SGD(D.parameters(), lr=1.0)
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm, **kw):
        params = list(params)
        clipped.append(({id(p) for p in params}, max_norm))
        return real_clip(params, max_norm, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    g0 = torch.cat([p.detach().flatten() for p in G.parameters()])
    d0 = torch.cat([p.detach().flatten() for p in D.parameters()])
    train_step(G, D, opt_g, opt_d, torch.rand(16, 1, 28, 28) * 2 - 1, None, torch.randn(16, 8), grad_clip=1e-3)
    assert clipped == [({id(p) for p in D.parameters()}, 1e-3), ({id(p) for p in G.parameters()}, 1e-3)]
    for net, before in ((G, g0), (D, d0)):
        step = torch.cat([p.detach().flatten() for p in net.parameters()]) - before
        assert 0 < step.norm() <= 1e-3 * (1 + 1e-4)


def test_each_epoch_draws_a_new_order_and_a_resume_replays_it(tmp_path, monkeypatch):
    from fastgan.data.loader import DeviceLoader

    orders, new_epoch = [], DeviceLoader.new_epoch

    def recording(self, perm=None, start=0):
        orders.append(None if perm is None else perm.clone())
        return new_epoch(self, perm, start)

    monkeypatch.setattr(DeviceLoader, "new_epoch", recording)
    Trainer(small(tmp_path / "a", epochs=3)).fit()
    straight = orders[:]
    assert len(straight) == 3 and all(o is not None for o in straight)
    assert not torch.equal(straight[0], straight[1]) and not torch.equal(straight[1], straight[2])
    orders.clear()
    Trainer(small(tmp_path / "b", steps=25)).fit()  # stops mid-epoch 2
    Trainer(small(tmp_path / "b", epochs=3), resume=True, explicit={"epochs"}).fit()
    assert [o.tolist() for o in orders] == [
        straight[0].tolist(),
        straight[1].tolist(),
        straight[1].tolist(),
        straight[2].tolist(),
    ]


def test_a_steps_run_resumed_with_epochs_runs_to_that_many_epochs(tmp_path):
    Trainer(small(tmp_path, steps=5)).fit()
    t = Trainer(small(tmp_path, epochs=2), resume=True, explicit={"epochs"})
    assert (t.cfg.steps, t.cfg.epochs, t.total_steps) == (None, 2, 2 * t.steps_per_epoch)
    t.fit()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2 * t.steps_per_epoch
    back = Trainer(small(tmp_path, steps=45), resume=True, explicit={"steps"})
    assert (back.cfg.steps, back.cfg.epochs, back.total_steps) == (45, None, 45)


def test_each_step_starts_from_fresh_gradients():
    """With lr 0 nothing moves, so a second step on the same batch and noise must leave the same
    gradients as the first: a missed zero_grad would double them."""
    torch.manual_seed(0)
    G, D = build("mlp", g_widths=(16, 32), d_widths=(32, 16), latent_dim=8)
    opt_g, opt_d = torch.optim.SGD(G.parameters(), lr=0.0), torch.optim.SGD(D.parameters(), lr=0.0)
    real, z = torch.rand(16, 1, 28, 28) * 2 - 1, torch.randn(16, 8)
    grads = []
    for _ in range(2):
        train_step(G, D, opt_g, opt_d, real, None, z)
        grads.append([p.grad.clone() for p in (*G.parameters(), *D.parameters())])
    assert all(g.abs().sum() > 0 for g in grads[0])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


def test_eval_options_are_resumable(tmp_path):
    Trainer(small(tmp_path, steps=1)).fit()
    t = Trainer(
        small(tmp_path, steps=2, eval_every=5, eval_n=64), resume=True, explicit={"steps", "eval_every", "eval_n"}
    )
    assert (t.cfg.eval_every, t.cfg.eval_n) == (5, 64)
