"""Data-parallel training on the CPU with gloo: 2 processes on 127.0.0.1 (torchrun, or the
ranks started here with torchrun's environment running tests/distributed_worker.py), each
launch bounded in time (a hang fails the test)."""

import io
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from fastgan.data import DeviceLoader
from fastgan.nn import BatchNorm1d, SyncBatchNorm, convert_sync_batchnorm
from fastgan.train import TrainConfig, Trainer, load_checkpoint
from fastgan.train.distributed import Ranks

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "distributed_worker.py")
LAUNCH_TIMEOUT_S = 90  # one launch of 2 ranks takes ~10 s on a loaded 2-core machine


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    import fastgan

    root = os.path.dirname(os.path.dirname(os.path.abspath(fastgan.__file__)))  # the ranks import this fastgan
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root + (os.pathsep + path if path else ""))


def _torchrun(n, argv):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n)]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "fastgan", *argv]
    try:
        return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun did not end within {LAUNCH_TIMEOUT_S} s: {' '.join(cmd)}")


def _ranks(n, args, first_only=False):
    """Runs tests/distributed_worker.py ARGS as n ranks; [(returncode, stdout, stderr)] by rank.
    first_only: waits for rank 0 alone, then kills the others still running (a rank made to
    hang; its returncode is then None)."""
    env = dict(_env(), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(n))
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, *args],
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(n)
    ]
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    results = []
    try:
        for r, p in enumerate(procs):
            killed = first_only and r > 0 and p.poll() is None
            if killed:
                p.kill()
            try:
                out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"rank {r} did not end within {LAUNCH_TIMEOUT_S} s: {' '.join(args)}")
            results.append((None if killed else p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def _ok(results):
    for r, (rc, out, err) in enumerate(results):
        assert rc == 0, f"rank {r} exited with {rc}:\n{out}\n{err[-3000:]}"


def _printed(stdout, what):
    import json

    line = [x for x in stdout.splitlines() if x.startswith(what + ": ")][-1]
    return json.loads(line[len(what) + 2 :])


def _state(out):
    return load_checkpoint(os.path.join(out, "checkpoint.pt"))


def _weights_mismatch(a, b):
    """The largest fraction, over G's and D's tensors, of elements of checkpoint a that differ
    from b's beyond float32 rounding (1e-5 + 1e-4 relative). Not 0 for the same math: the same
    sums in another order (2 ranks, another thread count) differ in the last bits, and Adam's
    first steps, lr * g / |g| for a near-zero g, magnify that for some elements to up to lr."""
    worst = 0.0
    for net in ("generator", "discriminator"):
        for name, t in a[net].items():
            ref = b[net][name].double()
            far = (t.double() - ref).abs() > 1e-5 + 1e-4 * ref.abs()
            worst = max(worst, far.double().mean().item())
    return worst


def _train(tmp_path, name, **kw):
    cfg = TrainConfig(device="cpu", out=str(tmp_path / name), progress=False, **kw)
    trainer = Trainer(cfg, log=io.StringIO())
    trainer.fit()
    return trainer


# -- in one process ------------------------------------------------------------------------


def test_the_ranks_shards_are_the_rows_of_one_global_batch():
    images = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8)
    labels = torch.arange(50)
    one = DeviceLoader(images, labels, 8, seed=3)
    shards = [DeviceLoader(images, labels, 4, seed=3, shard=(r, 2)) for r in range(2)]
    assert one.steps_per_epoch == shards[0].steps_per_epoch == 6
    for loader in (one, *shards):
        loader.new_epoch()
    for _ in range(8):  # past the end of the epoch: the walk wraps the same way
        _, rows = one.next()
        parts = [s.next()[1] for s in shards]
        assert torch.equal(torch.cat(parts), rows)
    with pytest.raises(Exception, match=r"global batch \(2 ranks x 30\) is larger than the dataset"):
        DeviceLoader(images, labels, 30, shard=(0, 2))


def test_one_rank_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks, device = Ranks.setup(torch.device("cpu"), 60.0)
    assert (ranks.rank, ranks.world_size, ranks.main, ranks.parallel, device.type) == (0, 1, True, False, "cpu")
    t = torch.arange(6.0)
    assert ranks.shard(t) is t and ranks.mean(t) is t


def test_convert_sync_batchnorm_keeps_the_fused_slope_and_the_tensors():
    net = torch.nn.Sequential(BatchNorm1d(5, negative_slope=0.2), torch.nn.BatchNorm1d(5, momentum=None))
    weight, mean = net[0].weight, net[1].running_mean
    sync = convert_sync_batchnorm(net)
    assert [type(m) for m in sync] == [SyncBatchNorm, SyncBatchNorm]
    assert sync[0].negative_slope == 0.2 and sync[1].negative_slope is None and sync[1].momentum is None
    assert sync[0].weight is weight and sync[1].running_mean is mean
    # on one process it is fastgan's batch norm: the same outputs and statistics
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    plain = torch.nn.Sequential(BatchNorm1d(5, negative_slope=0.2), BatchNorm1d(5, momentum=None))
    plain.load_state_dict(sync.state_dict())
    assert torch.allclose(sync(x), plain(x), atol=1e-6)
    assert torch.allclose(sync[1].running_var, plain[1].running_var, atol=1e-6)


def test_another_rank_count_recomputes_the_epoch_order_from_the_step(tmp_path):
    """Epoch e's order is the (e+1)-th permutation of the seeded loader generator: recomputed
    for a resume on another rank count, it is the state a run that never stopped had."""
    from fastgan.train.checkpoint import save_checkpoint

    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    cfg = TrainConfig(model="mlp", dataset="user", steps=20, batch_size=8, device="cpu", out=str(tmp_path / "r"))
    cfg.progress = False
    Trainer(cfg, data=(images, None), log=io.StringIO()).fit()  # 8 steps an epoch: 20 is in epoch 3
    path = os.path.join(cfg.out, "checkpoint.pt")
    state = torch.load(path, weights_only=True)
    saved_order = state["rng"]["epoch"]
    state["world_size"] = 2  # as if trained on 2 ranks (of 4 images: the same global batch)
    save_checkpoint({k: v for k, v in state.items() if not k.startswith("format")}, path)
    log = io.StringIO()
    resumed = Trainer(TrainConfig(out=cfg.out, steps=24), resume=True, explicit={"steps"}, data=(images, None), log=log)
    assert "the data order is recomputed from step 20 (epoch 3, batch 5 of 8)" in log.getvalue()
    assert torch.equal(resumed.epoch_rng, saved_order)


# -- 2 processes ---------------------------------------------------------------------------


def test_torchrun_2_ranks_of_32_train_as_1_process_of_64_and_resume_on_1(tmp_path):
    """torchrun -m fastgan train: the same weights and losses as one process over the same global
    batches (the ranks' slices of one permutation and of one noise draw); rank 0 reports the
    global batch. Resumed on 1 rank, the data order is recomputed from the step."""
    two = str(tmp_path / "two")
    argv = ["train", "--model", "mlp", "--steps", "3", "--batch-size", "32", "--device", "cpu", "--out", two]
    run = _torchrun(2, [*argv, "--no-progress"])
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "3 steps of 64 (2 ranks x 32) on cpu" in run.stdout
    assert run.stdout.count("fastgan train:") == 1  # rank 0 alone speaks
    one = _train(tmp_path, "one", model="mlp", steps=3, batch_size=64)
    half = _train(tmp_path, "half", model="mlp", steps=3, batch_size=32)  # rank 0's rows only
    a, b = _state(two), _state(one.cfg.out)
    assert a["world_size"] == 2 and b["world_size"] == 1
    assert _weights_mismatch(a, b) < 0.05 < 0.5 < _weights_mismatch(a, _state(half.cfg.out))
    assert torch.allclose(a["history"], b["history"], atol=1e-5)

    log = io.StringIO()
    resumed = Trainer(TrainConfig(out=two, steps=5, progress=False), resume=True, explicit={"steps"}, log=log)
    assert resumed.global_batch == 32
    resumed.fit()
    assert "trained on 2 ranks, resuming on 1: the global batch is now 1 x 32" in log.getvalue()
    c = _state(two)
    assert c["step"] == 5 and c["world_size"] == 1 and len(c["history"]) == 5
    assert torch.equal(c["history"][:3], a["history"])


def test_sync_bn_dcgan_on_2_ranks_is_1_process_over_the_global_batch_and_only_rank_0_writes(tmp_path):
    """--sync-bn: dcgan (batch norm in G and D) on 2 ranks x 8 trains as 1 process x 16 (weights,
    running statistics, losses); rank 1 writes nothing under the run folders (Python's audit
    events, recorded on rank 0 too, where they must not be empty), and resumes on 2 ranks a
    run of 1. --r1 with it is refused (a synchronized batch norm is differentiable once)."""
    synced, resumed = str(tmp_path / "synced"), str(tmp_path / "resumed")
    ref = _train(tmp_path, "ref", model="dcgan", sync_bn=True, steps=2, batch_size=16)
    _train(tmp_path, "resumed", model="dcgan", steps=2, batch_size=8)
    common = ["--device", "cpu", "--no-progress"]
    results = _ranks(
        2,
        ["cli", synced, resumed, "--"]
        + ["train", "--model", "dcgan", "--sync-bn", "--steps", "2", "--batch-size", "8", "--out", synced, *common]
        + ["--", "train", "--out", resumed, "--resume", "--steps", "3", *common]
        + ["--", "train", "--model", "dcgan", "--sync-bn", "--r1", "10", "--out", str(tmp_path / "r1"), *common],
    )
    _ok(results)
    assert [_printed(out, "codes") for _, out, _ in results] == [[0, 0, 2]] * 2
    assert "error: --sync-bn with --r1/--gp: the penalty differentiates D twice" in results[0][2]
    assert _printed(results[0][1], "writes") and _printed(results[1][1], "writes") == []
    a, b = _state(synced), _state(ref.cfg.out)
    assert _weights_mismatch(a, b) < 0.05
    for net in ("generator", "discriminator"):  # the running statistics: one process's over the global batch
        for name, t in a[net].items():
            if "running" in name or "num_batches" in name:
                assert torch.allclose(t.double(), b[net][name].double(), atol=1e-5, rtol=1e-4), (net, name)
    assert torch.allclose(a["history"], b["history"], atol=1e-5)
    c = _state(resumed)
    assert c["step"] == 3 and c["world_size"] == 2
    with open(os.path.join(resumed, "train.log")) as f:
        assert "trained on 1 rank, resuming on 2: the global batch is now 2 x 8" in f.read()


# each model with a head of its own (fastgan.train.head), and what it needs to train here
FAMILY = {"acgan": {}, "infogan": {}, "stackgan": {}, "discogan": {}, "srgan": {"feature_weight": 0.0}, "lapgan": {}}


def _first_gradient_mismatch(a, b):
    """The largest difference between checkpoint a's and b's Adam first moments after one step
    (0.1 x the gradient that the step averaged over the ranks), relative to b's largest element
    in that optimizer (not in each tensor: a gradient that is zero in theory, such as a bias
    before batch norm, is float32 rounding alone)."""
    worst = 0.0
    for opt in ("opt_g", "opt_d"):
        states = b[opt]["state"]
        scale = max(s["exp_avg"].double().abs().max().item() for s in states.values())
        for i, state in states.items():
            diff = (a[opt]["state"][i]["exp_avg"].double() - state["exp_avg"].double()).abs().max().item()
            worst = max(worst, diff / scale)
    return worst


def test_the_family_on_2_synced_ranks_trains_as_1_process_over_the_global_batch(tmp_path):
    """Each model whose head changes the step (its batch, G's input, D's outputs, the losses) on
    2 ranks x 8 with --sync-bn takes the step of 1 process x 16: the same losses (the heads see
    each rank's slice of one global batch and noise: infogan's codes, lapgan's pyramid, srgan's
    low-res batch, discogan's pairs) and the same gradient, averaged once. One step, compared
    by Adam's first moment: its weights' first update is lr x the gradient's sign, which float32
    rounding flips wherever a gradient is near zero, and later steps magnify such flips (in
    discogan's two chained translators, to whole tensors by step 2)."""
    argv = ["cli", *(str(tmp_path / m) for m in FAMILY)]
    for model, kw in FAMILY.items():
        options = [a for k, v in kw.items() for a in ("--" + k.replace("_", "-"), str(v))]
        argv += ["--", "train", "--model", model, "--sync-bn", "--steps", "1", "--batch-size", "8"]
        argv += ["--out", str(tmp_path / model), "--device", "cpu", "--no-progress", *options]
    results = _ranks(2, argv)
    _ok(results)
    assert _printed(results[0][1], "codes") == [0] * len(FAMILY)
    for model, kw in FAMILY.items():
        ref = _train(tmp_path, f"ref-{model}", model=model, sync_bn=True, steps=1, batch_size=16, **kw)
        a, b = _state(str(tmp_path / model)), _state(ref.cfg.out)
        assert a["world_size"] == 2 and torch.allclose(a["history"], b["history"], atol=1e-5), model
        # measured: 2e-6 to 6e-4 (float32 sums in another order); rank 0's rows alone: 0.3 to 1.3
        assert _first_gradient_mismatch(a, b) < 5e-3, model


def test_sync_batch_norm_matches_1_process_over_the_global_batch():
    """mlp-bn's and dcgan's networks with SyncBatchNorm on 2 ranks: outputs, input and parameter
    gradients and running statistics of one process over the global batch; without sync, each
    rank's statistics are its own (tests/distributed_worker.py bn asserts them)."""
    results = _ranks(2, ["bn"])
    _ok(results)
    assert all("bn ok" in out for _, out, _ in results)


@pytest.mark.parametrize("how", ["KILL", "STOP"])
def test_a_dead_or_hung_rank_ends_the_others_with_a_clear_error(tmp_path, how):
    """Rank 1 killed (or stopped) at step 3: rank 0 fails within --dist-timeout with a message
    naming it (exit code 1), instead of waiting forever."""
    out = str(tmp_path / "run")
    argv = ["train", "--model", "mlp", "--steps", "500", "--batch-size", "8", "--device", "cpu", "--out", out]
    t0 = time.monotonic()
    results = _ranks(2, ["die", "3", how, "--", *argv, "--no-progress", "--dist-timeout", "3"], first_only=True)
    rc, _, err = results[0]
    assert rc == 1, err[-3000:]
    assert "fastgan train: error: rank 0 of 2: " in err and "failed: another rank died, hung longer than" in err
    assert time.monotonic() - t0 < LAUNCH_TIMEOUT_S
    assert results[1][0] == (-signal.SIGKILL if how == "KILL" else None)  # dead by itself, or still hanging


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL takes one per rank)")
@pytest.mark.parametrize("graph", ["--cuda-graph", "--no-cuda-graph"])
def test_torchrun_2_gpus_train_as_1_gpu_with_the_global_batch(tmp_path, graph):
    """NCCL, the step (all-reduces and synchronized batch norm included) in a CUDA graph or not."""
    two = str(tmp_path / "two")
    argv = ["train", "--model", "dcgan", "--sync-bn", "--steps", "5", "--batch-size", "32", "--device", "cuda"]
    run = _torchrun(2, [*argv, "--out", two, "--no-progress", graph])
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "5 steps of 64 (2 ranks x 32, synchronized batch norm) on cuda" in run.stdout
    cfg = dict(model="dcgan", sync_bn=True, steps=5, batch_size=64, cuda_graph=graph == "--cuda-graph")
    one = Trainer(TrainConfig(device="cuda", out=str(tmp_path / "one"), progress=False, **cfg), log=io.StringIO())
    one.fit()
    assert _weights_mismatch(_state(two), _state(one.cfg.out)) < 0.05
