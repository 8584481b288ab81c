"""batch_norm (+ LeakyReLU): parity with torch.nn.functional.batch_norm (+ leaky_relu) forward,
backward and running stats, every dtype and layout; the large-mean case; gradients to second
order; opcheck; torch.compile; bad input; the BatchNorm1d/2d modules."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

import fastgan
from fastgan import ops
from fastgan.ops import reference

from op_testing import (
    DEVICES,
    DTYPES,
    FORWARD_TOL,
    GRAD_TOL,
    HAS_CUDA,
    assert_close,
    ref_dtype,
    requires_kernels,
    scaled_atol,
    seed_for,
)

# (N,C), (N,C,L), (N,C,H,W); odd channel counts, N=2, a size-1 spatial map, channels over 32
SHAPES = [(2, 3), (64, 33), (7, 5, 9), (4, 5, 3, 7), (2, 8, 4, 4), (3, 16, 1, 1), (2, 40, 3, 3)]


def layouts(shape):
    return ["contiguous", "channels_last"] if len(shape) == 4 else ["contiguous"]


def make_x(shape, dtype, device, layout="contiguous", mean=0.5, std=2.0):
    x = (torch.randn(shape, device=device) * std + mean).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided":  # every other channel of a wider tensor
        wide = (torch.randn((shape[0], shape[1] * 2) + tuple(shape[2:]), device=device) * std + mean).to(dtype)
        x = wide[:, ::2]
    return x


def make_params(c, dtype, device, affine=True, stats=True):
    w = (torch.rand(c, device=device) + 0.5).to(dtype) if affine else None
    b = torch.randn(c, device=device).to(dtype) if affine else None
    rm = torch.randn(c, device=device).to(dtype) if stats else None
    rv = (torch.rand(c, device=device) + 0.5).to(dtype) if stats else None
    return w, b, rm, rv


def clone(t, dtype=None):
    return None if t is None else t.detach().clone().to(dtype or t.dtype)


def run_both(x, w, b, rm, rv, training, momentum, slope, dtype, eps=1e-5):
    """fastgan (y, grads, running stats) and the reference's, computed in ref_dtype(dtype)."""
    rd = ref_dtype(dtype)
    xs = x.detach().requires_grad_()
    ws, bs = [None if t is None else t.detach().clone().requires_grad_() for t in (w, b)]
    rms, rvs = clone(rm), clone(rv)
    y = ops.batch_norm(xs, ws, bs, rms, rvs, training, momentum, eps, slope)
    g = torch.randn(y.shape, device=y.device).to(dtype)
    inputs = [t for t in (xs, ws, bs) if t is not None]
    grads = torch.autograd.grad(y, inputs, g)

    xr = x.detach().to(rd).requires_grad_()
    wr, br = [None if t is None else t.detach().to(rd).requires_grad_() for t in (w, b)]
    rmr, rvr = clone(rm, rd), clone(rv, rd)
    yr = reference.batch_norm(xr, wr, br, rmr, rvr, training, momentum, eps, slope)
    grads_r = torch.autograd.grad(yr, [t for t in (xr, wr, br) if t is not None], g.to(rd))
    return (y, grads, rms, rvs), (yr, grads_r, rmr, rvr)


def check_parity(mine, ref, dtype, x):
    (y, grads, rm, rv), (yr, grads_r, rmr, rvr) = mine, ref
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, yr, FORWARD_TOL[dtype], "y")
    assert_close(grads[0], grads_r[0], GRAD_TOL[dtype], "grad x")
    n = x.numel() // x.shape[1]
    for name, a, e in zip(("grad weight", "grad bias"), grads[1:], grads_r[1:]):
        assert_close(a, e, scaled_atol(GRAD_TOL[dtype], math.sqrt(n) * float(e.abs().max())), name)
    if rm is not None:
        assert_close(rm, rmr, FORWARD_TOL[dtype], "running_mean")
        assert_close(rv, rvr, FORWARD_TOL[dtype], "running_var")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("slope", [None, 0.2])
def test_matches_reference(device, dtype, shape, slope):
    seed_for(shape, dtype, slope)
    w, b, rm, rv = make_params(shape[1], dtype, device)
    for layout in layouts(shape):
        x = make_x(shape, dtype, device, layout)
        for training in (True, False):
            mine, ref = run_both(x, w, b, rm, rv, training, 0.1, slope, dtype)
            check_parity(mine, ref, dtype, x)
            if layout == "channels_last":
                assert mine[0].is_contiguous(memory_format=torch.channels_last)
                assert mine[1][0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("affine,stats", [(False, True), (True, False), (False, False)])
def test_optional_weight_bias_running_stats(device, dtype, affine, stats):
    torch.manual_seed(4)
    w, b, rm, rv = make_params(6, dtype, device, affine, stats)
    x = make_x((5, 6, 3), dtype, device)
    for slope in (None, 0.1):
        for training in (True, False) if stats else (True,):
            mine, ref = run_both(x, w, b, rm, rv, training, 0.3, slope, dtype)
            check_parity(mine, ref, dtype, x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_float32_params_with_half_input(device, dtype):
    """torch's mixed precision batch norm: half x, float32 weight/bias/running stats."""
    torch.manual_seed(5)
    w, b, rm, rv = make_params(12, torch.float32, device)
    for layout in ("contiguous", "channels_last"):
        x = make_x((4, 12, 3, 5), dtype, device, layout)
        for training in (True, False):
            mine, ref = run_both(x, w, b, rm, rv, training, 0.1, 0.2, dtype)
            (y, grads, rms, rvs), (yr, grads_r, rmr, rvr) = mine, ref
            assert y.dtype == dtype and grads[1].dtype == torch.float32 and rms.dtype == torch.float32
            assert_close(y, yr, FORWARD_TOL[dtype], "y")
            assert_close(grads[0], grads_r[0], GRAD_TOL[dtype], "grad x")
            assert_close(grads[2], grads_r[2], scaled_atol(GRAD_TOL[dtype], 10 * float(grads_r[2].abs().max())), "gb")
            assert_close(rms, rmr, (1e-5, 1e-6), "running_mean")
            assert_close(rvs, rvr, (1e-5, 1e-6), "running_var")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_strided_input(device, dtype):
    torch.manual_seed(6)
    x = make_x((4, 6, 3, 5), dtype, device, "strided")
    assert not x.is_contiguous()
    w, b, rm, rv = make_params(6, dtype, device)
    mine, ref = run_both(x, w, b, rm, rv, True, 0.1, 0.2, dtype)
    check_parity(mine, ref, dtype, x)
    assert mine[0].is_contiguous()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape,layout",
    [
        ((2048, 256), "contiguous"),
        ((64, 32, 14, 14), "contiguous"),
        ((64, 32, 14, 14), "channels_last"),
        ((600, 3, 5, 7), "contiguous"),
        ((32, 12, 15), "contiguous"),
    ],
)
@pytest.mark.parametrize("slope", [None, 0.2])
def test_large_shapes_split_reduction(device, shape, layout, slope):
    """Large enough that the CUDA reductions split over chunks (several launches)."""
    torch.manual_seed(7)
    x = make_x(shape, torch.float32, device, layout)
    w, b, rm, rv = make_params(shape[1], torch.float32, device)
    for training in (True, False):
        mine, ref = run_both(x, w, b, rm, rv, training, 0.1, slope, torch.float32)
        # statistics over ~10^4 values per channel: float32 sums (ours) and torch's differ by
        # a few 1e-7 in the mean; allow that near y == 0
        (y, *_), (yr, *_) = mine, ref
        assert_close(y, yr, (1e-5, 4e-6), "y")
        check_parity((yr.detach().to(y.dtype), *mine[1:]), ref, torch.float32, x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape,layout",
    [
        ((256, 8), "contiguous"),
        ((16, 4, 8, 8), "channels_last"),
        ((16, 4, 8, 8), "contiguous"),
        ((4096, 64), "contiguous"),
    ],
)
def test_large_mean_is_normalized_accurately(device, shape, layout):
    """mean 1e4, std 1: the shifted sums keep float32 statistics and y at float32 accuracy
    (compared with the float64 reference of the same float32 input)."""
    torch.manual_seed(8)
    x = make_x(shape, torch.float32, device, layout, mean=1e4, std=1.0)
    w, b, rm, rv = make_params(shape[1], torch.float32, device)
    rms, rvs = rm.clone(), rv.clone()
    xs = x.detach().requires_grad_()
    y = ops.batch_norm(xs, w, b, rms, rvs, True, 0.1, 1e-5, 0.2)
    xr = x.detach().double().requires_grad_()
    rmr, rvr = rm.double(), rv.double()
    yr = reference.batch_norm(xr, w.double(), b.double(), rmr, rvr, True, 0.1, 1e-5, 0.2)
    torch.testing.assert_close(y.double(), yr, rtol=1e-5, atol=2e-5)
    assert y.std().item() > 0.3  # really normalized, not collapsed to the bias
    torch.testing.assert_close(rms.double(), rmr, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rvs.double(), rvr, rtol=1e-4, atol=1e-5)
    # backward: xhat = (x - mean) * invstd with the float32 mean, as torch's own float32
    # batch norm, so it is accurate to float32's resolution at 1e4 (~1e-3 relative). Without
    # the activation: with it, the mask recomputed from the float32 mean can differ from the
    # forward's for the few values with |z| < ~1e-3 (a known limit at such means).
    xs = x.detach().requires_grad_()
    y = ops.batch_norm(xs, w, b, rm.clone(), rv.clone(), True, 0.1, 1e-5)
    xr = x.detach().double().requires_grad_()
    yr = reference.batch_norm(xr, w.double(), b.double(), None, None, True, 0.1, 1e-5)
    g = torch.randn_like(y)
    gx = torch.autograd.grad(y, xs, g)[0]
    gxr = torch.autograd.grad(yr, xr, g.double())[0]
    torch.testing.assert_close(gx.double(), gxr, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic(device):
    x = make_x((3000, 67), torch.float32, device)
    w, b, rm, rv = make_params(67, torch.float32, device)
    g = torch.randn(3000, 67, device=device)

    def run():
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = ops.batch_norm(xs, ws, b, rm.clone(), rv.clone(), True, 0.1, 1e-5, 0.2)
        return (y, *torch.autograd.grad(y, (xs, ws), g))

    for a, e in zip(run(), run()):
        assert torch.equal(a, e)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("slope", [None, 0.2])
def test_gradcheck_and_gradgradcheck(device, layout, training, slope):
    torch.manual_seed(9)
    x = make_x((3, 4, 3, 2), torch.float64, device, layout).requires_grad_()
    w, b, rm, rv = make_params(4, torch.float64, device)
    w.requires_grad_()
    b.requires_grad_()
    stats = (None, None) if training else (rm, rv)
    f = lambda x, w, b: ops.batch_norm(x, w, b, *stats, training, 0.1, 1e-5, slope)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


@pytest.mark.parametrize("device", DEVICES)
def test_gradgradcheck_without_weight_or_bias(device):
    torch.manual_seed(10)
    x = torch.randn(5, 3, device=device, dtype=torch.float64, requires_grad=True)
    p = torch.rand(3, device=device, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: ops.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, 0.1), (x,))
    assert torch.autograd.gradgradcheck(
        lambda x, b: ops.batch_norm(x, None, b, None, None, True, 0.1, 1e-5, 0.1), (x, p)
    )
    assert torch.autograd.gradgradcheck(lambda x, w: ops.batch_norm(x, w, None, None, None, True, 0.1, 1e-5), (x, p))
    # a bias but no weight, with running statistics (training updates them; eval reads them)
    rm, rv = torch.zeros(3, device=device, dtype=torch.float64), torch.rand(3, device=device, dtype=torch.float64) + 0.5
    for training in (True, False):
        f = lambda x, b: ops.batch_norm(x, None, b, rm, rv, training, 0.1, 1e-5, 0.1)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x, p)) and torch.autograd.gradgradcheck(f, (x, p))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", [None, 0.2])
@pytest.mark.parametrize("training", [True, False])
def test_gradient_penalty_matches_plain_ops(device, slope, training):
    """Second order where the incoming gradient depends on x itself (a nonlinear loss of the
    output, then the norm of the input gradient, as in a gradient penalty): gradcheck's random
    grad_outputs do not reach this case. The oracle is batch norm written in plain ops."""
    torch.manual_seed(12)
    x0 = torch.randn(7, 3, device=device, dtype=torch.float64)
    w0 = torch.rand(3, device=device, dtype=torch.float64) + 0.5
    b0 = torch.randn(3, device=device, dtype=torch.float64) * 0.3
    rm, rv = torch.randn(3, device=device, dtype=torch.float64), torch.rand(3, device=device, dtype=torch.float64) + 0.5

    def penalty(fn):
        x, w, b = (t.clone().requires_grad_() for t in (x0, w0, b0))
        g = torch.autograd.grad(fn(x, w, b).sin().sum(), x, create_graph=True)[0]
        return torch.autograd.grad(g.pow(2).sum(), (x, w, b))

    def plain(x, w, b):
        mean, var = (x.mean(0), x.var(0, unbiased=False)) if training else (rm, rv)
        z = (x - mean) / torch.sqrt(var + 1e-5) * w + b
        return z if slope is None else F.leaky_relu(z, slope)

    mine = penalty(lambda x, w, b: ops.batch_norm(x, w, b, rm.clone(), rv.clone(), training, 0.1, 1e-5, slope))
    for a, e in zip(mine, penalty(plain)):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("device", DEVICES)
def test_third_order_matches_plain_ops(device):
    """The double backward is itself differentiable (create_graph all the way); torch's own
    batch norm stops at second order, so the oracle is batch norm written in plain ops."""
    torch.manual_seed(11)
    x0 = torch.randn(6, 3, device=device, dtype=torch.float64)
    w0 = torch.rand(3, device=device, dtype=torch.float64) + 0.5

    def third(fn):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        y = fn(x, w)
        g = torch.autograd.grad(y.pow(3).sum(), x, create_graph=True)[0]
        h = torch.autograd.grad(g.pow(2).sum(), (x, w), create_graph=True)
        return torch.autograd.grad(h[0].pow(2).sum() + h[1].sum(), (x, w))

    mine = third(lambda x, w: ops.batch_norm(x, w, None, None, None, True, 0.1, 1e-5))
    theirs = third(lambda x, w: (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5) * w)
    for a, e in zip(mine, theirs):
        torch.testing.assert_close(a, e)


@requires_kernels
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = torch.randn(4, 6, 3, 3, device=device, requires_grad=True)
    w = torch.rand(6, device=device, requires_grad=True)
    b = torch.randn(6, device=device, requires_grad=True)
    rm, rv = torch.zeros(6, device=device), torch.ones(6, device=device)
    op = torch.ops.fastgan.batch_norm.default
    torch.library.opcheck(op, (x, w, b, rm, rv, True, 0.1, 1e-5, None))
    torch.library.opcheck(op, (x.detach().to(memory_format=torch.channels_last), w, b, rm, rv, False, 0.1, 1e-5, 0.2))
    torch.library.opcheck(op, (torch.randn(8, 5, device=device), None, None, None, None, True, 0.1, 1e-5, 0.2))
    count = torch.tensor(7, device=device)
    torch.library.opcheck(op, (x, w, b, rm, rv, True, 0.1, 1e-5, None, count))
    torch.library.opcheck(op, (x, w, b, rm, rv, False, 0.1, 1e-5, None, count))
    torch.library.opcheck(
        op,
        (
            torch.randn(8, 5, device=device, dtype=torch.bfloat16),
            torch.rand(5, device=device),
            None,
            torch.zeros(5, device=device),
            torch.ones(5, device=device),
            True,
            0.1,
            1e-5,
            0.2,
        ),
    )
    sm, si = torch.randn(6, device=device), torch.rand(6, device=device) + 0.5
    xb = torch.randn(4, 6, 3, 3, device=device)
    torch.library.opcheck(
        torch.ops.fastgan.batch_norm_backward.default,
        (torch.randn(4, 6, 3, 3, device=device), xb, w.detach(), b.detach(), sm, si, True, 0.2, [True, True, False]),
    )
    torch.library.opcheck(
        torch.ops.fastgan.batch_norm_backward.default,
        (
            torch.randn(8, 5, device=device),
            torch.randn(8, 5, device=device),
            None,
            None,
            sm[:5],
            si[:5],
            False,
            None,
            [True, False, False],
        ),
    )


@requires_kernels
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", [None, 0.2])
def test_torch_compile_fullgraph(device, slope):
    torch._dynamo.reset()
    torch.manual_seed(12)
    lin = torch.randn(16, 8, device=device, requires_grad=True)
    w = torch.rand(16, device=device, requires_grad=True)
    b = torch.randn(16, device=device, requires_grad=True)

    def layer(x, rm, rv, training):
        h = ops.batch_norm(x @ lin.t(), w, b, rm, rv, training, 0.1, 1e-5, slope)
        return (h * h).sum()

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    x = torch.randn(5, 8, device=device)
    rm_c, rv_c = torch.zeros(16, device=device), torch.ones(16, device=device)
    rm_e, rv_e = rm_c.clone(), rv_c.clone()
    for training in (True, False):
        loss = compiled(x, rm_c, rv_c, training)
        grads = torch.autograd.grad(loss, (lin, w, b))
        loss_e = layer(x, rm_e, rv_e, training)
        grads_e = torch.autograd.grad(loss_e, (lin, w, b))
        torch.testing.assert_close(loss, loss_e)
        for a, e in zip(grads, grads_e):
            torch.testing.assert_close(a, e)
        torch.testing.assert_close(rm_c, rm_e)  # the running stats' update survives compilation
        torch.testing.assert_close(rv_c, rv_e)
    assert not torch.equal(rm_c, torch.zeros(16, device=device))


# ---- bad input: the compiled op and the Python checks (fake kernel, reference fallback) ----


def _python_path(monkeypatch):
    import sys

    monkeypatch.setattr(sys.modules["fastgan.ops.batch_norm"], "_forward", None)


@pytest.fixture(params=["kernel", "python"])
def path(request, monkeypatch):
    if request.param == "kernel" and not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("fastgan._C is not built")
    if request.param == "python":
        _python_path(monkeypatch)
    return request.param


def test_one_value_per_channel_in_training_raises_like_torch(path):
    x = torch.randn(1, 4)
    with pytest.raises(ValueError) as theirs:
        F.batch_norm(x, None, None, training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training") as mine:
        ops.batch_norm(x, None, None, None, None, True)
    assert str(theirs.value).split(",")[0] in str(mine.value)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        ops.batch_norm(torch.randn(1, 4, 1, 1), None, None, torch.zeros(4), torch.ones(4), True)
    # eval mode with one value per channel is fine, as in torch
    y = ops.batch_norm(x, None, None, torch.zeros(4), torch.ones(4), False)
    torch.testing.assert_close(y, F.batch_norm(x, torch.zeros(4), torch.ones(4), training=False))
    # and so is eps=0 in eval mode (the running variance is the user's), as in torch
    y = ops.batch_norm(x, None, None, torch.zeros(4), torch.ones(4), False, eps=0.0)
    torch.testing.assert_close(y, F.batch_norm(x, torch.zeros(4), torch.ones(4), training=False, eps=0.0))


@pytest.mark.parametrize(
    "kwargs,match,exc",
    [
        (dict(weight=torch.ones(5)), "weight must have shape", ValueError),
        (dict(bias=torch.ones(2, 2)), "bias must have shape", ValueError),
        (dict(weight=torch.ones(4, dtype=torch.float64)), "weight must have x's dtype", TypeError),
        (dict(running_mean=torch.zeros(3), running_var=torch.ones(4)), "running_mean must have shape", ValueError),
        (dict(running_mean=torch.zeros(4), running_var=torch.ones(5)), "running_var must have shape", ValueError),
        (
            dict(running_mean=torch.zeros(4, dtype=torch.float64), running_var=torch.ones(4)),
            "running_mean must have x's dtype",
            TypeError,
        ),
        (
            dict(running_mean=torch.zeros(4, dtype=torch.int64), running_var=torch.ones(4)),
            "running_mean must be float32",
            TypeError,
        ),
        (dict(running_mean=torch.zeros(4), running_var=None), "both be None or neither", ValueError),
        (dict(training=False), "running_mean and running_var must be given when training is False", ValueError),
        (dict(eps=-1.0), "eps must be >= 0", ValueError),
        (dict(eps=0.0), "eps must be > 0 when training", ValueError),  # torch: "eps must be positive"
        (dict(momentum=float("nan")), "momentum must be finite", ValueError),
        (dict(negative_slope=float("inf")), "negative_slope must be finite", ValueError),
        (dict(momentum=None), "momentum must be a number", TypeError),  # torch: TypeError too
        (dict(eps="1e-5"), "eps must be a number", TypeError),
        (dict(negative_slope=True), "negative_slope must be a number", TypeError),
    ],
)
def test_bad_arguments(path, kwargs, match, exc):
    args = dict(weight=None, bias=None, running_mean=None, running_var=None, training=True)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ops.batch_norm(torch.randn(3, 4), **args)


def test_bad_x(path):
    with pytest.raises(TypeError, match="x must be float32"):
        ops.batch_norm(torch.ones(3, 4, dtype=torch.int64), None, None, None, None, True)
    with pytest.raises(ValueError, match="x must have at least 2 dims"):
        ops.batch_norm(torch.randn(4), None, None, None, None, True)
    # an empty batch in training is taken (test_empty_batch_in_training), its arguments still checked
    with pytest.raises(ValueError, match="weight must have shape"):
        ops.batch_norm(torch.randn(0, 4), torch.ones(5), None, None, None, True)
    with pytest.raises(TypeError, match="momentum must be a number"):
        ops.batch_norm(torch.randn(0, 4), None, None, None, None, True, None)


def test_the_raw_op_still_refuses_an_empty_batch_in_training():
    # ops.batch_norm answers it without the op; the op and its fake kernel refuse it alike
    if not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("fastgan._C is not built")
    from torch._subclasses.fake_tensor import FakeTensorMode

    op = torch.ops.fastgan.batch_norm
    with pytest.raises(ValueError, match="x must not be empty when training"):
        op(torch.randn(0, 4), None, None, None, None, True, 0.1, 1e-5, None)
    with FakeTensorMode(), pytest.raises(ValueError, match="x must not be empty when training"):
        op(torch.randn(0, 4), None, None, None, None, True, 0.1, 1e-5, None)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 4), (0, 4, 5), (0, 4, 3, 3), (2, 4, 0, 3), (0, 4, 2, 3, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_empty_batch_in_training(path, device, shape, dtype):
    """torch's batch norm takes an empty batch in training: an empty output in x's layout, the
    running stats untouched, weight and bias gradients of zeros (of their own dtype), gradients
    to the second order; fastgan's op the same, and num_batches_tracked counts it."""
    pdtype = torch.float32 if dtype == torch.bfloat16 else dtype
    x = torch.randn(shape, device=device).to(dtype)
    if len(shape) == 4:
        x = x.to(memory_format=torch.channels_last)
    w, b, rm, rv = make_params(4, pdtype, device)
    for slope in (None, 0.2):
        for stats in (True, False):
            xs, ws, bs = (t.detach().clone().requires_grad_() for t in (x, w, b))
            rms, rvs = (rm.clone(), rv.clone()) if stats else (None, None)
            count = torch.tensor(3, device=device)
            y = ops.batch_norm(xs, ws, bs, rms, rvs, True, 0.1, 1e-5, slope, count)
            xt, wt, bt = (t.detach().clone().requires_grad_() for t in (x, w, b))
            rmt, rvt = (rm.clone(), rv.clone()) if stats else (None, None)
            yt = F.batch_norm(xt, rmt, rvt, wt, bt, True, 0.1, 1e-5)
            assert y.shape == yt.shape and y.dtype == yt.dtype == dtype and y.stride() == yt.stride()
            assert int(count) == 4
            if stats:
                assert torch.equal(rms, rm) and torch.equal(rvs, rv) and torch.equal(rmt, rm) and torch.equal(rvt, rv)
            mine = torch.autograd.grad(y.sum(), (xs, ws, bs), create_graph=True)
            theirs = torch.autograd.grad(yt.sum(), (xt, wt, bt), create_graph=True)
            for a, e in zip(mine, theirs):
                assert a.shape == e.shape and a.dtype == e.dtype and torch.equal(a, e)
            assert torch.equal(mine[1], torch.zeros_like(w))
            (gw2,) = torch.autograd.grad((mine[0] ** 2).sum() + mine[1].sum(), ws, allow_unused=True)
            assert gw2 is None or torch.equal(gw2, torch.zeros_like(w))


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize(
    "cls, shape", [("BatchNorm1d", (0, 4)), ("BatchNorm1d", (0, 4, 5)), ("BatchNorm2d", (0, 4, 3, 3))]
)
def test_module_takes_an_empty_batch_in_training_as_torch(path, momentum, cls, shape):
    """torch.nn's: the batch is counted (with momentum None too, whose next factor is 1/count),
    the running stats are not changed, weight and bias get zero gradients."""
    torch.manual_seed(16)
    mine, theirs = getattr(fastgan.nn, cls)(4, momentum=momentum), getattr(torch.nn, cls)(4, momentum=momentum)
    with torch.no_grad():
        for p in (theirs.weight, theirs.bias, theirs.running_mean, theirs.running_var):
            p.uniform_(0.5, 1.5)
    mine.load_state_dict(theirs.state_dict())
    for x in (torch.randn(shape), torch.randn((6,) + shape[1:]), torch.randn(shape)):
        for m in (mine, theirs):
            m.zero_grad()
            y = m(x)
            assert y.shape == x.shape
            y.sum().backward()
        for (k, a), (k2, e) in zip(mine.state_dict().items(), theirs.state_dict().items()):
            assert k == k2
            torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-6, msg=k)
        for a, e in ((mine.weight.grad, theirs.weight.grad), (mine.bias.grad, theirs.bias.grad)):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
    assert int(mine.num_batches_tracked) == 3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 4), (0, 4, 3, 3), (2, 4, 0, 3)])
def test_empty_batch_in_eval_mode(path, device, shape):
    """Eval mode needs no batch statistics: an empty batch gives an empty output, as torch's, and
    zero parameter gradients (no kernel runs: a CUDA grid cannot be empty)."""
    x = torch.randn(shape, device=device, requires_grad=True)
    w = torch.rand(4, device=device, requires_grad=True)
    b = torch.rand(4, device=device, requires_grad=True)
    rm, rv = torch.randn(4, device=device), torch.rand(4, device=device) + 0.5
    for slope in (None, 0.2):
        y = ops.batch_norm(x, w, b, rm, rv, False, 0.1, 1e-5, slope)
        assert y.shape == x.shape and y.device == x.device
        gx, gw, gb = torch.autograd.grad(y.sum(), (x, w, b))
        assert gx.shape == x.shape
        assert torch.equal(gw, torch.zeros_like(w)) and torch.equal(gb, torch.zeros_like(b))
    m = fastgan.nn.BatchNorm2d(4).to(device).eval() if x.dim() == 4 else fastgan.nn.BatchNorm1d(4).to(device).eval()
    assert m(x).shape == x.shape


def test_empty_eval_batch_without_channels_has_a_second_derivative(path):
    # C = 0: the double backward's 1/(N*HW) divided by C (an integer 0/0 killed the process)
    if path == "python":
        pytest.skip("torch's own batch norm (the reference path) fails on 0 channels: select() out of range")
    x = torch.randn(4, 0, requires_grad=True)
    w = torch.rand(0, requires_grad=True)
    y = ops.batch_norm(x, w, None, torch.zeros(0), torch.ones(0), False, 0.1, 1e-5, 0.2)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (gw,) = torch.autograd.grad(gx.sum(), w, allow_unused=True, materialize_grads=True)
    assert gx.shape == (4, 0) and gw.shape == (0,)


def test_fake_kernel_checks_arguments():
    """The checks run in the fake kernel too: torch.compile's tracing reports them."""
    if not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("fastgan._C is not built")
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.randn(3, 4)
        with pytest.raises(ValueError, match="weight must have shape"):
            torch.ops.fastgan.batch_norm(x, torch.ones(5), None, None, None, True, 0.1, 1e-5, None)
        y, m, s = torch.ops.fastgan.batch_norm(x.to(torch.bfloat16), None, None, None, None, True, 0.1, 1e-5, 0.2)
        assert y.dtype == torch.bfloat16 and m.dtype == torch.float32 and s.shape == (4,)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and the CUDA kernels")
def test_params_on_other_device():
    x = torch.randn(3, 4, device="cuda")
    with pytest.raises(ValueError, match="weight must be on x's device"):
        ops.batch_norm(x, torch.ones(4), None, None, None, True)
    with pytest.raises(ValueError, match="running_mean must be on x's device"):
        ops.batch_norm(x, None, None, torch.zeros(4), torch.ones(4, device="cuda"), True)
    with pytest.raises(ValueError, match="running_var must be on x's device"):
        ops.batch_norm(x, None, None, torch.zeros(4, device="cuda"), torch.ones(4), True)


# ---- modules ----


def _pair(cls, torch_cls, shape, **kw):
    slope = kw.pop("negative_slope", None)
    mine, theirs = cls(shape[1], negative_slope=slope, **kw), torch_cls(shape[1], **kw)
    theirs.load_state_dict(mine.state_dict())
    return mine, theirs, slope


@pytest.mark.parametrize(
    "cls,torch_cls,shape",
    [
        (fastgan.nn.BatchNorm1d, torch.nn.BatchNorm1d, (16, 10)),
        (fastgan.nn.BatchNorm1d, torch.nn.BatchNorm1d, (8, 6, 5)),
        (fastgan.nn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 6, 5, 5)),
    ],
)
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(momentum=None),
        dict(momentum=0.3, negative_slope=0.2),
        dict(affine=False),
        dict(track_running_stats=False, negative_slope=0.1),
    ],
)
def test_module_matches_torch_over_steps(cls, torch_cls, shape, kw):
    torch.manual_seed(13)
    mine, theirs, slope = _pair(cls, torch_cls, shape, **kw)
    act = (lambda t: t) if slope is None else (lambda t: F.leaky_relu(t, slope))
    for step in range(4):
        if step == 3:
            mine.eval()
            theirs.eval()
        x = torch.randn(shape) * (step + 1) + step
        xs, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
        y, yt = mine(xs), act(theirs(xt))
        torch.testing.assert_close(y, yt, rtol=1e-5, atol=1e-5)
        g = torch.randn(shape)
        torch.testing.assert_close(
            torch.autograd.grad(y, xs, g)[0], torch.autograd.grad(yt, xt, g)[0], rtol=1e-4, atol=1e-5
        )
        for (k, a), (k2, e) in zip(mine.state_dict().items(), theirs.state_dict().items()):
            assert k == k2
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6, msg=f"step {step}: {k}")
    assert mine.training is False and theirs.training is False
    mine.train()
    assert mine.training


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(16, 8), (4, 8, 5, 5), (300, 64), (1024, 512), (64, 8, 32, 32)])
def test_num_batches_tracked_counts_in_the_kernel(device, layout, shape):  # (the last two: CUDA's split plans)
    """Training adds exactly 1 to num_batches_tracked per call (whichever kernel plan the shape
    takes), eval adds nothing, and a module's counter matches torch.nn's."""
    x = torch.randn(shape, device=device)
    if layout == "channels_last":
        if x.dim() != 4:
            pytest.skip("channels_last is 4-d")
        x = x.to(memory_format=torch.channels_last)
    c = shape[1]
    rm, rv, count = torch.zeros(c, device=device), torch.ones(c, device=device), torch.tensor(5, device=device)
    for _ in range(3):
        ops.batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5, 0.2, count)
    assert int(count) == 8
    ops.batch_norm(x, None, None, rm, rv, False, 0.1, 1e-5, 0.2, count)
    assert int(count) == 8
    mine = (fastgan.nn.BatchNorm1d if x.dim() == 2 else fastgan.nn.BatchNorm2d)(c).to(device)
    theirs = (torch.nn.BatchNorm1d if x.dim() == 2 else torch.nn.BatchNorm2d)(c).to(device)
    for module in (mine, theirs):
        for _ in range(2):
            module(x)
        module.eval()(x)
    assert int(mine.num_batches_tracked) == int(theirs.num_batches_tracked) == 2


def test_num_batches_tracked_counts_on_the_python_path_too(path):
    """The reference path (no compiled kernels, FASTGAN_NO_EXTENSION=1) counts as the kernel
    does: +1 per training call, nothing in eval."""
    x, rm, rv, count = torch.randn(16, 8), torch.zeros(8), torch.ones(8), torch.tensor(5)
    for _ in range(3):
        ops.batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5, 0.2, count)
    assert int(count) == 8
    ops.batch_norm(x, None, None, rm, rv, False, 0.1, 1e-5, 0.2, count)
    assert int(count) == 8


@pytest.mark.parametrize(
    "bad,match,exc",
    [
        (torch.tensor(1.0), "num_batches_tracked must be int64", TypeError),
        (torch.tensor([1, 2]), "num_batches_tracked must hold one number", ValueError),
    ],
)
def test_num_batches_tracked_bad_arguments(bad, match, exc):
    with pytest.raises(exc, match=match):
        ops.batch_norm(torch.randn(4, 3), None, None, None, None, True, 0.1, 1e-5, None, bad)


def test_module_with_weight_but_no_bias_like_torch():
    torch.manual_seed(15)
    mine = fastgan.nn.BatchNorm2d(4, bias=False)  # torch.nn.BatchNorm2d's keyword
    assert mine.bias is None and mine.weight is not None and "bias" not in mine.state_dict()
    with torch.no_grad():
        mine.weight.uniform_(0.5, 1.5)
    x = torch.randn(6, 4, 3, 3)
    rm, rv = torch.zeros(4), torch.ones(4)
    expected = F.batch_norm(x, rm, rv, mine.weight, None, True, 0.1)
    torch.testing.assert_close(mine(x), expected)
    torch.testing.assert_close(mine.running_var, rv)
    if "bias" in inspect.signature(torch.nn.BatchNorm2d.__init__).parameters:
        theirs = torch.nn.BatchNorm2d(4, bias=False)
        theirs.load_state_dict(mine.state_dict())  # strict, both ways
        mine.load_state_dict(theirs.state_dict())


def test_module_state_dict_round_trip_both_ways():
    torch.manual_seed(14)
    theirs = torch.nn.BatchNorm2d(6, momentum=None)
    for _ in range(3):
        theirs(torch.randn(4, 6, 3, 3))
    mine = fastgan.nn.BatchNorm2d(6, momentum=None, negative_slope=0.2)
    mine.load_state_dict(theirs.state_dict())
    assert int(mine.num_batches_tracked) == 3
    assert set(mine.state_dict()) == set(theirs.state_dict())
    mine(torch.randn(4, 6, 3, 3))  # the cumulative average carries on from 3 batches
    back = torch.nn.BatchNorm2d(6, momentum=None)
    back.load_state_dict(mine.state_dict())
    assert int(back.num_batches_tracked) == 4
    for k, v in mine.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    assert "negative_slope=0.2" in repr(mine)


def test_module_bad_input_dims():
    with pytest.raises(ValueError, match="BatchNorm1d"):
        fastgan.nn.BatchNorm1d(4)(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="BatchNorm2d"):
        fastgan.nn.BatchNorm2d(4)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        fastgan.nn.BatchNorm1d(4)(torch.randn(1, 4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_module_half_input_float32_params(dtype):
    """Under autocast a float32 module sees half activations, as torch's BatchNorm does."""
    torch.manual_seed(15)
    mine = fastgan.nn.BatchNorm1d(8)
    theirs = torch.nn.BatchNorm1d(8)
    x = torch.randn(16, 8)
    y = mine(x.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), theirs(x.to(dtype).float()), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(mine.running_mean, theirs.running_mean, rtol=1e-2, atol=1e-3)


def test_a_nan_in_a_channel_reaches_its_running_variance(path):
    # the clamp of a rounded-negative variance turned NaN into 0: running_var stayed finite
    x = torch.randn(8, 3)
    x[2, 0] = float("nan")
    rm, rv = torch.zeros(3), torch.ones(3)
    trm, trv = rm.clone(), rv.clone()
    ops.batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5)
    F.batch_norm(x, trm, trv, training=True, momentum=0.1)
    assert math.isnan(rv[0]) and math.isnan(trv[0])
    torch.testing.assert_close(rv[1:], trv[1:])


def test_statistics_of_a_huge_channel_are_accurate():
    """10.5M values in one channel, 7 to a plane (the scalar tail path): one running float32 sum
    lost 2% of the variance; the sums are chunked now."""
    if not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("needs the compiled kernels")
    x = torch.randn(1_500_000, 1, 7, generator=torch.Generator().manual_seed(3))
    rm, rv = torch.zeros(1), torch.ones(1)
    ops.batch_norm(x, None, None, rm, rv, True, 1.0, 1e-5)
    x64 = x.double()
    assert rm.item() == pytest.approx(x64.mean().item(), abs=1e-6)
    assert rv.item() == pytest.approx(x64.var().item(), rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(16, 3), (16, 11), (4, 3, 5), (4, 3, 13)])  # vectors and scalar tails
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_dead_channel_takes_the_slope_at_exactly_zero(device, shape, dtype):
    """A channel of zeros with bias 0 normalizes to z == 0 exactly, where torch's LeakyReLU
    gradient is the negative slope (z > 0 takes 1): dx, dweight and dbias as torch's."""
    seed_for(shape, dtype)
    x = torch.randn(shape, dtype=dtype)
    x[:, 0] = 0.0
    c = shape[1]
    w, b = torch.rand(c, dtype=dtype) + 0.5, torch.zeros(c, dtype=dtype)
    g = torch.randn(shape, dtype=dtype)
    ours = [t.to(device).requires_grad_() for t in (x, w, b)]
    got = torch.autograd.grad(ops.batch_norm(*ours, None, None, True, 0.1, 1e-5, 0.2), ours, g.to(device))
    theirs = [t.double().requires_grad_() for t in (x, w, b)]
    want = torch.autograd.grad(reference.batch_norm(*theirs, None, None, True, 0.1, 1e-5, 0.2), theirs, g.double())
    for a, e, name in zip(got, want, ("dx", "dweight", "dbias")):
        torch.testing.assert_close(a.double().cpu(), e, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(4, 8), (64, 4, 2, 2), (64, 4, 1, 3)])  # fewer than 8 values to shift by
def test_a_large_mean_with_few_values_per_row_or_plane(device, shape):
    seed_for(shape)
    x = torch.randn(shape) + 1e4
    rm, rv = torch.zeros(shape[1], device=device), torch.ones(shape[1], device=device)
    y = ops.batch_norm(x.to(device), None, None, rm, rv, True, 1.0, 1e-5)
    rmr, rvr = torch.zeros(shape[1], dtype=torch.float64), torch.ones(shape[1], dtype=torch.float64)
    yr = reference.batch_norm(x.double(), None, None, rmr, rvr, True, 1.0, 1e-5)
    torch.testing.assert_close(rv.double().cpu(), rvr, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(y.double().cpu(), yr, rtol=1e-3, atol=2e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False])
def test_strided_weight_bias_and_running_stats(device, training):
    """Per-channel tensors that are views with a stride (every other element of a buffer) are
    read and updated in place as torch does, and the elements between them are left alone."""
    seed_for(training)
    c = 6
    x = torch.randn(8, c, 3, 3, device=device)
    bufs = [torch.rand(2 * c) + 0.5, torch.randn(2 * c), torch.randn(2 * c), torch.rand(2 * c) + 0.5]
    bufs = [t.to(device) for t in bufs]
    before = [t.clone() for t in bufs]
    w, b, rm, rv = (t[::2] for t in bufs)
    assert not rm.is_contiguous()
    trm, trv = rm.clone(), rv.clone()
    y = ops.batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5, 0.2)
    want = F.leaky_relu(F.batch_norm(x, trm, trv, w.clone(), b.clone(), training, 0.1, 1e-5), 0.2)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rm, trm)
    torch.testing.assert_close(rv, trv)
    for t, t0 in zip(bufs, before):
        assert torch.equal(t[1::2], t0[1::2])


@pytest.mark.parametrize("device", DEVICES)
def test_running_stat_updates_are_seen_by_autograd(device):
    """Training writes running_mean / running_var in place: their version counters move, so a
    graph that saved the old values refuses to backpropagate, as with torch's batch norm."""
    c = 4
    x = torch.randn(8, c, 3, 3, device=device, requires_grad=True)
    rm, rv = torch.zeros(c, device=device), torch.ones(c, device=device)
    v0 = (rm._version, rv._version)
    ops.batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5, 0.2)
    assert rm._version > v0[0] and rv._version > v0[1]
    a = torch.ones(c, device=device, requires_grad=True)
    z = (a * rm).sum()  # saves rm for a's gradient
    ops.batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


CL3 = torch.channels_last_3d


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("slope", [None, 0.2])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4, 6), (3, 40, 2, 3, 3)])
def test_channels_last_3d_is_kept_as_torch_keeps_it(path, device, dtype, training, slope, shape):
    """torch.nn.BatchNorm3d (and leaky_relu) give a channels_last_3d x a channels_last_3d y, and
    its gradient too, whatever the upstream gradient's layout: fastgan's op the same, values torch's."""
    torch.manual_seed(17)
    pdtype = torch.float32 if dtype == torch.bfloat16 else dtype
    x = make_x(shape, dtype, device).to(memory_format=CL3)
    w, b, rm, rv = make_params(shape[1], pdtype, device)
    act = (lambda t: t) if slope is None else (lambda t: F.leaky_relu(t, slope))
    for g in (
        torch.randn(shape, device=device).to(dtype).to(memory_format=CL3),
        torch.randn(shape, device=device).to(dtype),
    ):
        xs, ws, bs = (t.detach().clone().requires_grad_() for t in (x, w, b))
        rms, rvs = rm.clone(), rv.clone()
        y = ops.batch_norm(xs, ws, bs, rms, rvs, training, 0.1, 1e-5, slope)
        theirs = torch.nn.BatchNorm3d(shape[1], device=device, dtype=pdtype).train(training)
        with torch.no_grad():
            theirs.weight.copy_(w), theirs.bias.copy_(b), theirs.running_mean.copy_(rm), theirs.running_var.copy_(rv)
        xt = x.detach().clone().requires_grad_()
        yt = act(theirs(xt))
        assert yt.is_contiguous(memory_format=CL3) and not yt.is_contiguous()  # torch's, as checked
        assert y.is_contiguous(memory_format=CL3) and y.stride() == yt.stride()
        tol = FORWARD_TOL[dtype]
        assert_close(y, yt, tol, "y")
        mine = torch.autograd.grad(y, (xs, ws, bs), g)
        want = torch.autograd.grad(yt, (xt, theirs.weight, theirs.bias), g)
        assert want[0].is_contiguous(memory_format=CL3)
        assert mine[0].is_contiguous(memory_format=CL3) and mine[0].stride() == want[0].stride()
        assert_close(mine[0], want[0], GRAD_TOL[dtype], "grad x")
        n = math.sqrt(x.numel() // shape[1])
        assert_close(mine[1], want[1], scaled_atol(GRAD_TOL[dtype], n), "grad weight")
        assert_close(mine[2], want[2], scaled_atol(GRAD_TOL[dtype], n), "grad bias")
        if training:
            assert_close(rms, theirs.running_mean, FORWARD_TOL[pdtype], "running_mean")
            assert_close(rvs, theirs.running_var, FORWARD_TOL[pdtype], "running_var")


@pytest.mark.parametrize("training", [True, False])
def test_channels_last_3d_gradgradcheck(path, training):
    torch.manual_seed(18)
    x = make_x((3, 4, 2, 3, 2), torch.float64, "cpu").to(memory_format=CL3).requires_grad_()
    w, b, rm, rv = make_params(4, torch.float64, "cpu")
    stats = (None, None) if training else (rm, rv)
    f = lambda x, w, b: ops.batch_norm(x, w, b, *stats, training, 0.1, 1e-5, 0.2)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w.requires_grad_(), b.requires_grad_()))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


@requires_kernels
def test_opcheck_channels_last_3d():
    # the fake kernel's layout (torch.compile's) is the kernel's
    x = torch.randn(2, 6, 3, 2, 4).to(memory_format=CL3).requires_grad_()
    w, b = torch.rand(6, requires_grad=True), torch.randn(6, requires_grad=True)
    rm, rv = torch.zeros(6), torch.ones(6)
    op = torch.ops.fastgan.batch_norm.default
    torch.library.opcheck(op, (x, w, b, rm, rv, True, 0.1, 1e-5, 0.2))
    torch.library.opcheck(op, (x, w, b, rm, rv, False, 0.1, 1e-5, None))


@pytest.mark.parametrize("slope", [None, 0.2])
def test_double_backward_in_float64_is_torchs_to_rounding(slope):
    """The second-order gradients a gradient penalty takes (d/d(x, w) of |dL/dx|^2) equal
    autograd's through torch's batch norm (+ leaky_relu) in float64: the fused slope once
    entered the double backward as a float32 0.2 (1e-9 relative off)."""
    torch.manual_seed(0)
    x = torch.randn(8, 16, 7, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, dtype=torch.float64, requires_grad=True)
    b = torch.randn(16, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(8, 16, 7, 7, dtype=torch.float64)

    def second(f):
        (gx,) = torch.autograd.grad((f() * gy).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (x, w))

    def ref():
        y = torch.nn.functional.batch_norm(x, None, None, w, b, training=True)
        return y if slope is None else torch.nn.functional.leaky_relu(y, slope)

    mine = second(lambda: ops.batch_norm(x, w, b, None, None, training=True, negative_slope=slope))
    for a, r in zip(mine, second(ref)):
        torch.testing.assert_close(a, r, rtol=1e-11, atol=1e-11)
