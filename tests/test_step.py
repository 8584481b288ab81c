"""make_step and the CUDA-graph step: a captured step does exactly what the eager one does."""

import os

import pytest
import torch

import fastgan
from fastgan.data.loader import DeviceLoader
from fastgan.optim import Adam as FusedAdam
from fastgan.train import TrainConfig, Trainer, make_step  # make_step: the public name issue 7 gives
from fastgan.train.graph import GraphedStep

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_device_loader_steps_walk_the_permutation_in_order_and_wrap():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    labels = torch.arange(10)
    b = DeviceLoader(images, labels, 3, generator=torch.Generator().manual_seed(0))
    perm = torch.tensor([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    b.new_epoch(perm)
    seen = [b.next()[1].tolist() for _ in range(4)]
    assert seen == [[9, 8, 7], [6, 5, 4], [3, 2, 1], [9, 8, 7]]  # 3 full batches, then wraps
    x, _ = b.next()
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x[:, 0, 0, 0], torch.tensor([6, 5, 4]) * (2 / 255) - 1)
    x, y = b.next(labels=False)  # unconditional models skip the label gather
    assert y is None and x.shape == (3, 1, 2, 2)
    torch.testing.assert_close(b.images[:, 0, 0, 0], torch.arange(10) * (2 / 255) - 1)  # scaled once
    assert images.dtype == torch.uint8 and images[9, 0, 0, 0] == 9  # input untouched
    with pytest.raises(ValueError, match="images must be uint8"):
        DeviceLoader(images.float(), labels, 3, generator=torch.Generator())


def test_device_loader_steps_new_epoch_starts_at_the_first_batch_of_its_order():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    b = DeviceLoader(images, torch.arange(10), 3, generator=torch.Generator().manual_seed(0))
    b.next(), b.next()  # two batches into the dataset-order epoch
    b.new_epoch(torch.tensor([4, 0, 7, 1, 9, 2, 8, 3, 6, 5]))
    assert b.next()[1].tolist() == [4, 0, 7] and b.next()[1].tolist() == [1, 9, 2]
    b.new_epoch()  # a fresh permutation from the generator
    first = b.next()[1]
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(0))[:3]
    assert first.tolist() == expected.tolist()


def test_device_loader_steps_reject_a_batch_larger_than_the_data():
    with pytest.raises(ValueError, match="batch size 11 is larger than the dataset"):
        DeviceLoader(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.zeros(10), 11, generator=None)


@pytest.mark.parametrize("model", ["mlp", "mlp-bn", "cgan"])
def test_make_step_trains_on_cpu(model):
    step = make_step(model, 16, "cpu")
    before = [p.detach().clone() for p in step.G.parameters()]
    losses = [step() for _ in range(3)]
    assert all(l.shape == (2,) and torch.isfinite(l).all() for l in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, step.G.parameters()))
    assert int(step.batches.index) == 3


def test_one_d_pass_is_the_same_math_as_two():
    from fastgan.models import build
    from fastgan.train.step import d_pass_mergeable, train_step

    assert d_pass_mergeable(build("mlp")[1]) and not d_pass_mergeable(build("dcgan")[1])
    assert not d_pass_mergeable(build("mlp", dropout=0.3)[1])
    results = []
    # in float64: a matrix product over 16 rows may round differently from two over 8 (by the
    # CPU's BLAS blocking), and Adam's first step, g / (|g| + eps), magnifies that for g near 0
    # up to 3e-6 in float32 on some CPUs; in float64 the same math agrees far inside the bounds
    for one in (False, True):
        torch.manual_seed(0)
        G, D = (net.double() for net in build("cgan"))
        opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
        gen = torch.Generator().manual_seed(1)
        real = torch.rand(8, 1, 28, 28, generator=gen, dtype=torch.float64) * 2 - 1
        labels = torch.randint(0, 10, (8,), generator=gen)
        z = torch.randn(8, 100, generator=gen, dtype=torch.float64)
        losses = train_step(G, D, opt_g, opt_d, real, labels, z, one_d_pass=one)
        results.append((losses, [p.detach().clone() for p in (*G.parameters(), *D.parameters())]))
    torch.testing.assert_close(results[1][0], results[0][0])
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# The next three count the compiled kernels' ops: the reference path (FASTGAN_NO_EXTENSION=1)
# runs torch's ops instead, and its Adam reads the step count on the host.
needs_kernels = pytest.mark.skipif(not fastgan.build_info()["cpu_kernels"], reason="counts fastgan._C's ops")


@needs_kernels
@pytest.mark.parametrize("model", ["mlp", "mlp-bn", "dcgan", "cgan"])
def test_step_never_waits_for_the_device(model):
    """No op of a step reads a value back to the host (.item(), a data-dependent shape): what
    a CUDA graph cannot capture, and a stall per step without one."""
    from fastgan.bench.profile import ops_per_step

    ops = ops_per_step(model, 16)
    assert ops and not [k for k in ops if "_local_scalar_dense" in k or "nonzero" in k], ops


@needs_kernels
@pytest.mark.parametrize("model", ["mlp-bn", "dcgan"])
def test_batch_norm_launches_nothing_around_its_kernels(model):
    """Batch norm's saved statistics get no gradient, and autograd is told not to make zero
    tensors for them (it did: two memset kernels per batch norm call, 10 per DCGAN step); its
    num_batches_tracked is counted inside the forward kernel, not by an add_ of its own."""
    from fastgan.bench.profile import ops_per_step

    ops = ops_per_step(model, 16)
    assert ops["fastgan.batch_norm_backward.default"] > 0
    assert "aten.zeros.default" not in ops and "aten.zero_.default" not in ops, ops
    assert ops["aten.add_.Tensor"] == 1, ops  # the batch index's own step, nothing per batch norm


@needs_kernels
def test_mlp_step_kernel_budget():
    """The MLP step's kernels, counted as the ops it dispatches (on a GPU each is at least one
    kernel, and in a graph each costs a few microseconds): its 30 matrix products, 9 fused
    bias+activation passes each way, one launch per loss and per Adam, and 11 others (batch
    gather, noise, cat, output layers' bias sums and tanh, Adam's step counts, the losses'
    stack). More ops than this is a regression of the 0.30 ms target's budget."""
    from fastgan.bench.profile import ops_per_step

    ops = ops_per_step("mlp", 16)
    assert ops["aten.mm.default"] + ops["aten.addmm.default"] == 30
    assert ops["fastgan.bias_leaky_relu.default"] == ops["fastgan.bias_leaky_relu_backward.default"] == 9
    assert ops["fastgan.adam_.default"] == 2 and "aten.ones_like.default" not in ops  # seeds made once
    assert sum(ops.values()) <= 68, ops


# The ops each objective option's MLP step dispatches (fastgan train's step, batch 16), as
# measured at this commit: a ceiling, as the default step's 68 above. The loss kinds cost
# nothing (one fused launch each way, as bce); --gp and --r1 add D's extra pass and its double
# backward; spectral norm one power iteration per weight layer per D (or G) forward; --n-critic
# 5 four more critic steps; --ema one multi-tensor lerp.
OBJECTIVE_BUDGETS = [
    ({}, 68),
    ({"loss": "hinge"}, 68),
    ({"loss": "lsgan"}, 68),
    ({"loss": "wgan", "gp": 10.0}, 158),
    ({"r1": 10.0}, 129),
    ({"loss": "wgan", "gp": 10.0, "n_critic": 5}, 666),
    ({"spectral_norm": True}, 208),
    ({"spectral_norm": True, "spectral_norm_g": True}, 296),
    ({"ema": 0.999}, 69),
]


@needs_kernels
@pytest.mark.parametrize("options,budget", OBJECTIVE_BUDGETS, ids=lambda o: str(o))
def test_each_objective_options_step_stays_within_its_op_budget(options, budget):
    from fastgan.bench.profile import ops_per_trainer_step

    ops = ops_per_trainer_step("mlp", 16, **options)
    n_critic = options.get("n_critic", 1)
    assert ops["fastgan.gan_d_loss.default"] == ops["fastgan.gan_d_loss_backward.default"] == n_critic, ops
    assert ops["fastgan.gan_g_loss.default"] == ops["fastgan.gan_g_loss_backward.default"] == 1, ops
    assert ops["fastgan.adam_.default"] == n_critic + 1, ops  # one launch per network update
    assert ops["aten._foreach_lerp_.Scalar"] == (1 if "ema" in options else 0), ops
    assert not [k for k in ops if "_local_scalar_dense" in k or "nonzero" in k], ops  # no host sync
    assert sum(ops.values()) <= budget, ops


def test_make_step_uses_fastgans_adam_where_its_kernels_are():
    # fastgan's adam_ is one vectorized pass on the CPU too; the reference path is slower than torch's
    expected = FusedAdam if fastgan.build_info()["cpu_kernels"] else torch.optim.Adam
    step = make_step("mlp", 8, "cpu")
    assert type(step.opt_g) is expected and type(step.opt_d) is expected
    assert type(make_step("mlp", 8, "cpu", fused_adam=False).opt_g) is torch.optim.Adam


def test_make_step_rejects_bad_options():
    with pytest.raises(ValueError, match="precision"):
        make_step("mlp", 8, "cpu", precision="fp8")
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        make_step("mlp", 8, "cpu", cuda_graph=True)
    for bad in (0, 8.0, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            make_step("mlp", bad, "cpu")
    if not torch.cuda.is_available():  # the default device, on a machine without a GPU
        with pytest.raises(ValueError, match="needs a CUDA GPU.*pass device='cpu'"):
            make_step("mlp", 8)
    with pytest.raises(ValueError, match="cgan is conditional: give labels"):
        make_step("cgan", 8, "cpu", images=torch.zeros(64, 28, 28, dtype=torch.uint8))


def test_make_step_on_images_without_labels():
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    losses = make_step("mlp", 16, "cpu", images=images)()
    assert losses.shape == (2,) and torch.isfinite(losses).all()


def _activation_dtypes(step):
    """Records the dtypes of the models' layer outputs during the next step."""
    seen = set()
    for m in (*step.G.modules(), *step.D.modules()):
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            m.register_forward_hook(lambda mod, inputs, out: seen.add(out.dtype))
    return seen


@pytest.mark.parametrize("model", ["mlp", "mlp-bn", "dcgan", "cgan"])
def test_bf16_step_runs_forward_in_bf16_and_keeps_float32_state(model):
    step = make_step(model, 16, "cpu", precision="bf16")
    seen = _activation_dtypes(step)
    losses = [step() for _ in range(2)]
    assert seen == {torch.bfloat16}
    assert all(l.dtype == torch.float32 and torch.isfinite(l).all() for l in losses)
    for net, opt in ((step.G, step.opt_g), (step.D, step.opt_d)):
        for p in net.parameters():
            assert p.dtype == torch.float32
            assert p.grad is None or p.grad.dtype == torch.float32
            assert all(v.dtype == torch.float32 for k, v in opt.state[p].items() if k != "step")
        for name, b in net.named_buffers():
            if "running" in name:  # batch-norm statistics accumulate in float32
                assert b.dtype == torch.float32 and torch.isfinite(b).all(), name


@pytest.mark.parametrize("model", ["mlp", "mlp-bn", "dcgan", "cgan"])
def test_bf16_step_is_as_close_to_float32_as_torchs_own_bf16(model):
    """Under bfloat16 autocast fastgan's fused layers lose no more accuracy than torch.nn's
    layers under the same autocast: the first step's gradients of both, against the float32
    step's, differ by about the same relative error (whole-network norms, so that a single
    near-zero gradient that cancels does not decide)."""

    def grads(net):
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    runs = [
        make_step(model, 32, "cpu", precision=p, backend=b)
        for p, b in (("bf16", "fastgan"), ("bf16", "torch"), ("fp32", "torch"))
    ]
    losses = [s() for s in runs]
    torch.testing.assert_close(losses[0], losses[2], rtol=2e-2, atol=2e-2)
    for net in ("G", "D"):
        ours, theirs, exact = (grads(getattr(s, net)) for s in runs)
        err_ours = ((ours - exact).norm() / exact.norm()).item()
        err_theirs = ((theirs - exact).norm() / exact.norm()).item()
        assert 0 < err_ours < 0.25, (net, err_ours)  # bfloat16 really ran, and not wildly off
        assert err_ours <= 1.25 * err_theirs, (net, err_ours, err_theirs)


def test_trainer_bf16_on_cpu(tmp_path):
    cfg = TrainConfig(
        model="mlp",
        g_widths=(16, 32),
        d_widths=(32, 16),
        batch_size=32,
        steps=3,
        precision="bf16",
        progress=False,
        device="cpu",
        out=str(tmp_path / "run"),
    )
    trainer = Trainer(cfg, log=open(os.devnull, "w"))
    history = trainer.fit()
    assert history.shape == (3, 2) and torch.isfinite(history).all()
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["config"]["precision"] == "bf16"
    with pytest.raises(ValueError, match="--precision must be one of fp32, bf16"):
        TrainConfig(precision="fp16").validate()


def _conv_outputs_channels_last(step):
    """Records, during the next step, whether each convolution's output (more than one
    channel) is in channels_last memory format."""
    seen = []

    def hook(module, inputs, out):
        if out.shape[1] > 1:
            seen.append(out.is_contiguous(memory_format=torch.channels_last))

    for m in (*step.G.modules(), *step.D.modules()):
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            m.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("model", ["dcgan", "cdcgan"])
def test_channels_last_step_is_the_same_math(model):
    """channels_last changes where the numbers lie in memory, not what they are: the same
    losses and weights as the NCHW step, with the convolutions' weights, outputs and Adam
    state in channels_last."""
    nchw = make_step(model, 16, "cpu")
    nhwc = make_step(model, 16, "cpu", channels_last=True)
    seen = _conv_outputs_channels_last(nhwc)
    le, lc = [nchw()], [nhwc()]
    assert seen and all(seen)
    # the first D step starts from the same weights: the same gradients, to float rounding
    for a, b in zip(nhwc.D.parameters(), nchw.D.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-6)
    le += [nchw() for _ in range(2)]
    lc += [nhwc() for _ in range(2)]
    torch.testing.assert_close(torch.stack(lc), torch.stack(le), rtol=1e-4, atol=1e-5)
    for k, a in _state(nhwc).items():
        # convolutions sum in another order; Adam turns a gradient that is ~0 either way into a
        # step of about lr (2e-4) whose size or sign may differ: a few such elements, bounded by
        # lr per step. A layout mistake would move most elements.
        b = _state(nchw)[k]
        if not a.is_floating_point():
            assert torch.equal(a, b), k
            continue
        close = (a - b).abs() <= 1e-5 + 1e-4 * b.abs()
        assert close.float().mean() > 0.98 and (a - b).abs().max() <= 3 * 2 * 2e-4, k
    weights = [p for net in (nhwc.G, nhwc.D) for p in net.parameters() if p.dim() == 4]
    opt_state = [
        t
        for opt in (nhwc.opt_g, nhwc.opt_d)
        for p in weights
        if p in opt.state
        for k, t in opt.state[p].items()
        if k != "step"
    ]
    assert len(weights) == 4 and len(opt_state) == 8
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in weights + opt_state)
    assert all(not t.is_contiguous() for t in weights + opt_state if t.shape[1] > 1)  # NHWC, not NCHW


def test_trainer_channels_last_on_cpu(tmp_path):
    cfg = TrainConfig(
        model="dcgan",
        g_widths=(8, 4),
        d_widths=(4, 8),
        batch_size=16,
        steps=2,
        channels_last=True,
        progress=False,
        device="cpu",
        out=str(tmp_path / "run"),
    )
    trainer = Trainer(cfg, log=open(os.devnull, "w"))
    assert trainer.G.net.deconv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(trainer.fit()).all()
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["channels_last"] is True
    # the layout is not part of the math: a run may resume in the other one
    cfg2 = TrainConfig(
        model="dcgan",
        g_widths=(8, 4),
        d_widths=(4, 8),
        batch_size=16,
        steps=3,
        progress=False,
        device="cpu",
        out=str(tmp_path / "run"),
    )
    resumed = Trainer(cfg2, resume=True, explicit={"steps", "channels_last"}, log=open(os.devnull, "w"))
    assert not resumed.cfg.channels_last and resumed.G.net.deconv1.weight.is_contiguous()
    assert torch.isfinite(resumed.fit()).all() and resumed.step == 3


def _state(step):
    return {
        **{f"G.{k}": v for k, v in step.G.state_dict().items()},
        **{f"D.{k}": v for k, v in step.D.state_dict().items()},
    }


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize(
    "model,precision,channels_last",
    [
        ("mlp", "fp32", False),
        ("mlp-bn", "fp32", False),
        ("dcgan", "fp32", False),
        ("cdcgan", "fp32", False),
        ("mlp", "bf16", False),
        ("dcgan", "bf16", False),
        ("dcgan", "fp32", True),
        ("dcgan", "bf16", True),
    ],
)
def test_graph_step_matches_eager_steps(model, precision, channels_last):
    """N graph-captured steps from the same state and seed give the weights, batch-norm
    running statistics and losses of N eager steps (also under bfloat16 autocast, and with
    channels_last weights, whose Adam state fastgan.optim.Adam keeps in the same layout)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True  # the same convolution algorithms both ways
    torch.backends.cudnn.benchmark = False
    eager = make_step(model, 32, "cuda", cuda_graph=False, precision=precision, channels_last=channels_last)
    graph = make_step(model, 32, "cuda", cuda_graph=True, precision=precision, channels_last=channels_last)
    tol = dict(rtol=1e-4, atol=1e-5) if precision == "fp32" else dict(rtol=1e-3, atol=1e-4)
    for a, b in zip(_state(eager).values(), _state(graph).values()):
        assert torch.equal(a, b)
    n = 8  # 3 warm-up steps, the capture, and replays
    le = [eager().clone() for _ in range(n)]
    lg = [graph().clone() for _ in range(n)]
    torch.testing.assert_close(torch.stack(lg), torch.stack(le), **tol)
    se, sg = _state(eager), _state(graph)
    for k in se:
        torch.testing.assert_close(sg[k], se[k], **tol, msg=lambda m: f"{k}: {m}")
    assert torch.equal(graph.noise_generator.get_state(), eager.noise_generator.get_state())
    assert isinstance(graph.fn, GraphedStep) and graph.fn.graph is not None


@pytest.mark.cuda
@cuda
def test_trainer_with_and_without_graph_agree(tmp_path):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    histories = []
    for graph in (False, True):
        cfg = TrainConfig(
            model="mlp",
            steps=40,
            batch_size=32,
            log_every=10,
            progress=False,
            out=str(tmp_path / f"graph{graph}"),
            device="cuda",
            cuda_graph=graph,
        )
        trainer = Trainer(cfg)
        assert trainer.cuda_graph == graph
        histories.append(trainer.fit())
    torch.testing.assert_close(histories[1], histories[0], rtol=1e-4, atol=1e-5)
