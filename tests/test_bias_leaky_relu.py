"""bias_leaky_relu: parity with fastgan.ops.reference, gradients, opcheck, torch.compile,
layouts and bad input."""

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
    assert_close,
    ref_dtype,
    requires_kernels,
    scaled_atol,
    seed_for,
)

SHAPES = [(1, 1), (3, 5), (64, 1024), (7, 13), (5, 3, 7), (7, 13, 5, 3), (2, 8, 4, 4), (2, 16, 1, 1), (4, 33, 3, 5)]
PARAMS = [(0.2, 1.0), (0.0, math.sqrt(2)), (0.01, 0.5)]


def make(shape, dtype, device, layout="contiguous"):
    x = torch.randn(shape, device=device, dtype=torch.float32).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided":  # a non-contiguous view: every other column of a wider tensor
        wide = torch.randn((shape[0], shape[1] * 2) + tuple(shape[2:]), device=device).to(dtype)
        x = wide[:, ::2]
    return x


def run_both(x, bias, slope, scale, dtype):
    """(fastgan y, grads) and (reference y, grads) for the same upstream gradient."""
    x = x.detach().requires_grad_()
    b = None if bias is None else bias.detach().requires_grad_()
    y = ops.bias_leaky_relu(x, b, slope, scale)
    g = torch.randn_like(y, dtype=torch.float32).to(dtype)
    grads = torch.autograd.grad(y, [t for t in (x, b) if t is not None], g)

    rd = ref_dtype(dtype)
    xr = x.detach().to(rd).requires_grad_()
    br = None if b is None else b.detach().to(rd).requires_grad_()
    yr = reference.bias_leaky_relu(xr, br, slope, scale)
    grads_r = torch.autograd.grad(yr, [t for t in (xr, br) if t is not None], g.to(rd))
    return (y, grads), (yr, grads_r)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_reference(device, dtype, shape, with_bias):
    seed_for(shape, dtype, with_bias)
    x = make(shape, dtype, device)
    bias = torch.randn(shape[1], device=device).to(dtype) if with_bias else None
    for slope, scale in PARAMS:
        (y, grads), (yr, grads_r) = run_both(x, bias, slope, scale, dtype)
        assert y.dtype == dtype and y.shape == x.shape
        assert_close(y, yr, FORWARD_TOL[dtype], "y")
        assert_close(grads[0], grads_r[0], GRAD_TOL[dtype], "grad x")
        if with_bias:
            n = x.numel() // shape[1]
            assert_close(grads[1], grads_r[1], scaled_atol(GRAD_TOL[dtype], math.sqrt(n)), "grad bias")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("shape", [(4, 8, 5, 3), (3, 7, 6, 6), (2, 16, 4, 4)])
def test_layouts(device, dtype, layout, shape):
    torch.manual_seed(0)
    x = make(shape, dtype, device, layout)
    bias = torch.randn(shape[1], device=device).to(dtype)
    (y, grads), (yr, grads_r) = run_both(x, bias, 0.2, 1.0, dtype)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert grads[0].is_contiguous(memory_format=torch.channels_last)
    else:
        assert y.is_contiguous()
    assert_close(y, yr, FORWARD_TOL[dtype], "y")
    assert_close(grads[0], grads_r[0], GRAD_TOL[dtype], "grad x")
    n = x.numel() // shape[1]
    assert_close(grads[1], grads_r[1], scaled_atol(GRAD_TOL[dtype], math.sqrt(n)), "grad bias")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape,layout",
    [
        ((2048, 1024), "contiguous"),
        ((4096, 8), "contiguous"),
        ((64, 128, 14, 14), "channels_last"),
        ((64, 128, 14, 14), "contiguous"),
        ((33, 3, 17, 19), "contiguous"),
    ],
)
def test_large_shapes_split_reduction(device, shape, layout):
    """Shapes large enough that the bias gradient is reduced in several chunks."""
    torch.manual_seed(1)
    x = make(shape, torch.float32, device, layout)
    bias = torch.randn(shape[1], device=device)
    (y, grads), (yr, grads_r) = run_both(x, bias, 0.2, 1.0, torch.float32)
    assert_close(y, yr, FORWARD_TOL[torch.float32], "y")
    assert_close(grads[0], grads_r[0], GRAD_TOL[torch.float32], "grad x")
    n = x.numel() // shape[1]
    assert_close(grads[1], grads_r[1], scaled_atol(GRAD_TOL[torch.float32], math.sqrt(n)), "grad bias")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dtype,bias_dtype,scale",
    [
        (torch.float16, torch.float32, 1.0),
        (torch.bfloat16, torch.float32, 1.0),
        (torch.float16, None, 0.5),
        (torch.float32, None, 0.5),
    ],
)
@pytest.mark.parametrize("shape", [(3, 37), (3, 37, 5), (2, 37, 3, 3)])  # rows, and (N, C, *) planes
def test_a_positive_input_that_rounds_to_zero_keeps_gradient_one(device, dtype, bias_dtype, scale, shape):
    # The backward reads the mask from y. A positive x + bias whose output rounds to 0 (half y,
    # or a subnormal times scale < 1) is stored as the floor (float16's first subnormal, the
    # smallest normal otherwise) so that y > 0 still marks it: torch's gradient there is scale,
    # not slope * scale. Wide vectors and scalar tails both.
    tiny = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps  # the dtype's smallest subnormal
    floor = tiny if dtype == torch.float16 else torch.finfo(dtype).smallest_normal
    n = shape[1]
    if bias_dtype is None:  # x itself is the subnormal; bias 0
        x = torch.full(shape, tiny, dtype=dtype)
        b = torch.zeros(n, dtype=dtype)
    else:  # x + b = 1e-8 in float32, which rounds to 0 in x's dtype
        x = torch.full(shape, 0.1, dtype=dtype)
        b = torch.full((n,), -0.1, dtype=dtype).float() + 1e-8
    b_view = b.view(n, *[1] * (len(shape) - 2))
    x, b = x.to(device).requires_grad_(), b.to(device).requires_grad_()
    y = ops.bias_leaky_relu(x, b, 0.2, scale)
    if fastgan.build_info()["cpu_kernels"]:  # the kernels' floor (the reference path is torch's)
        assert (y > 0).all()
    torch.testing.assert_close(y.float(), (x.float() + b_view) * scale, rtol=torch.finfo(dtype).eps, atol=floor)
    gx, gb = torch.autograd.grad(y, (x, b), torch.ones_like(y))
    assert torch.equal(gx, torch.full_like(gx, scale))
    torch.testing.assert_close(gb, torch.full_like(gb, x.numel() // n * scale))
    # exact zero and negative inputs still take the slope, as torch's leaky_relu does
    z = torch.tensor([[0.0, -tiny, -1.0]], dtype=dtype, device=device, requires_grad=True)
    (gz,) = torch.autograd.grad(ops.bias_leaky_relu(z, None, 0.2, scale).sum(), z)
    assert torch.equal(gz, torch.full_like(gz, 0.2 * scale))


@pytest.mark.parametrize("device", DEVICES)
def test_bias_grad_deterministic(device):
    x = torch.randn(3000, 257, device=device, requires_grad=True)
    b = torch.randn(257, device=device, requires_grad=True)
    g = torch.randn(3000, 257, device=device)
    first = torch.autograd.grad(ops.bias_leaky_relu(x, b), b, g)[0]
    second = torch.autograd.grad(ops.bias_leaky_relu(x, b), b, g)[0]
    assert torch.equal(first, second)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck_and_gradgradcheck(device, layout):
    torch.manual_seed(2)
    x = make((3, 4, 3, 2), torch.float64, device, layout).requires_grad_()
    b = torch.randn(4, device=device, dtype=torch.float64, requires_grad=True)
    f = lambda x, b: ops.bias_leaky_relu(x, b, 0.2, 1.7)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, b))
    assert torch.autograd.gradgradcheck(f, (x, b))
    x2 = torch.randn(5, 6, device=device, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: ops.bias_leaky_relu(x, None, 0.1), (x2,))


@requires_kernels
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = torch.randn(4, 6, 3, 3, device=device, requires_grad=True)
    b = torch.randn(6, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.fastgan.bias_leaky_relu.default, (x, b, 0.2, 1.0))
    torch.library.opcheck(
        torch.ops.fastgan.bias_leaky_relu.default, (x.detach().to(memory_format=torch.channels_last), None, 0.0, 2.0)
    )
    y = torch.randn(8, 5, device=device)
    torch.library.opcheck(
        torch.ops.fastgan.bias_leaky_relu_backward.default, (torch.randn(8, 5, device=device), y, 0.2, 1.0, y.dtype)
    )
    yh = y.bfloat16()
    torch.library.opcheck(
        torch.ops.fastgan.bias_leaky_relu_backward.default,
        (torch.randn(8, 5, device=device, dtype=torch.bfloat16), yh, 0.2, 1.0, torch.float32),
    )


@requires_kernels
@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    w = torch.randn(16, 8, device=device, requires_grad=True)
    b = torch.randn(16, device=device, requires_grad=True)

    def layer(x):
        return ops.bias_leaky_relu(x @ w.t(), b, 0.2, 1.0).sum()

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    x = torch.randn(5, 8, device=device)
    loss = compiled(x)
    gw, gb = torch.autograd.grad(loss, (w, b))
    loss_e = layer(x)
    gw_e, gb_e = torch.autograd.grad(loss_e, (w, b))
    torch.testing.assert_close(loss, loss_e)
    torch.testing.assert_close(gw, gw_e)
    torch.testing.assert_close(gb, gb_e)


def test_empty_batch_gives_empty_output():
    x = torch.randn(0, 4, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    y = ops.bias_leaky_relu(x, b)
    assert y.shape == (0, 4)
    gb = torch.autograd.grad(y.sum(), b)[0]
    assert torch.equal(gb, torch.zeros(4))


@pytest.mark.parametrize(
    "kwargs,match,exc",
    [
        (dict(bias=torch.randn(5)), "bias must have shape", ValueError),
        (dict(bias=torch.randn(4, dtype=torch.float64)), "bias must have x's dtype", TypeError),
        (dict(bias=torch.randn(2, 2)), "bias must have shape", ValueError),
        (dict(negative_slope="0.2"), "negative_slope must be a number", TypeError),
        (dict(negative_slope=True), "negative_slope must be a number", TypeError),
        (dict(scale=None), "scale must be a number", TypeError),
        (dict(negative_slope=float("nan")), "negative_slope must be finite", ValueError),
        (dict(negative_slope=-0.1), "negative_slope must be >= 0", ValueError),
        (dict(scale=0.0), "scale must be > 0", ValueError),
    ],
)
def test_bad_arguments(kwargs, match, exc):
    x = torch.randn(3, 4)
    with pytest.raises(exc, match=match):
        ops.bias_leaky_relu(x, **kwargs)


def test_bad_mixed_dtypes():
    x = torch.randn(3, 4)
    with pytest.raises(
        TypeError, match=r"bias must have x's dtype (torch.float32|Float), got (torch.bfloat16|BFloat16)"
    ):
        ops.bias_leaky_relu(x, torch.zeros(4, dtype=torch.bfloat16))  # only float32 may mix, only with half x
    with pytest.raises(
        TypeError,
        match=r"bias must have x's dtype \S*(float16|Half) \(or \S*float32\), "
        r"got \S*(float64|Double)",
    ):
        ops.bias_leaky_relu(x.half(), torch.zeros(4, dtype=torch.float64))


@requires_kernels
def test_the_fake_kernel_refuses_the_dtypes_the_kernel_refuses():
    """torch.compile traces through the fake kernel: it must refuse what the kernel refuses
    (a float32 bias mixes only with a half x, not with float64)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, b = torch.randn(3, 4, dtype=torch.float64), torch.zeros(4)
    with pytest.raises(TypeError, match=r"bias must have x's dtype"):
        torch.ops.fastgan.bias_leaky_relu(x, b, 0.2, 1.0)
    with FakeTensorMode() as mode:
        fx, fb = mode.from_tensor(x), mode.from_tensor(b)
        with pytest.raises(TypeError, match=r"bias must have x's dtype"):
            torch.ops.fastgan.bias_leaky_relu(fx, fb, 0.2, 1.0)
        y = torch.ops.fastgan.bias_leaky_relu(fx.to(torch.bfloat16), fb, 0.2, 1.0)  # allowed: half x
        assert y.dtype == torch.bfloat16 and y.shape == (3, 4)


def test_default_slope_is_0_2_and_scale_1():
    x, b = torch.randn(5, 4), torch.randn(4)
    torch.testing.assert_close(ops.bias_leaky_relu(x, b), torch.nn.functional.leaky_relu(x + b, 0.2))
    torch.testing.assert_close(reference.bias_leaky_relu(x, b), torch.nn.functional.leaky_relu(x + b, 0.2))


@requires_kernels
def test_backward_op_rejects_a_bias_dtype_it_cannot_return():
    y = torch.randn(3, 4, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="bias_dtype must be y's dtype"):
        torch.ops.fastgan.bias_leaky_relu_backward(y, y, 0.2, 1.0, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape,layout",
    [
        ((64, 1024), "contiguous"),
        ((7, 13), "contiguous"),
        ((2, 16, 4, 4), "contiguous"),
        ((4, 8, 5, 3), "channels_last"),
        ((8192, 64), "contiguous"),
        ((64, 32, 14, 14), "channels_last"),
        ((64, 32, 14, 14), "contiguous"),
    ],
)
def test_float32_bias_with_half_x(device, dtype, shape, layout):
    """A float32 bias (a model's parameter under autocast) with half x is read as it is: y and
    grad x in x's dtype, within its rounding of the float32 reference; grad bias in float32,
    accumulated from the unrounded products (float32 tolerance). Large shapes reduce in chunks."""
    torch.manual_seed(3)
    x = make(shape, dtype, device, layout).requires_grad_()
    b = torch.randn(shape[1], device=device, requires_grad=True)
    y = ops.bias_leaky_relu(x, b, 0.2, 1.5)
    g = torch.randn_like(y, dtype=torch.float32).to(dtype)
    gx, gb = torch.autograd.grad(y, (x, b), g)
    assert y.dtype == gx.dtype == dtype and gb.dtype == torch.float32
    xr, br = x.detach().float().requires_grad_(), b.detach().clone().requires_grad_()
    yr = reference.bias_leaky_relu(xr, br, 0.2, 1.5)
    gxr, gbr = torch.autograd.grad(yr, (xr, br), g.float())
    assert_close(y, yr, FORWARD_TOL[dtype], "y")
    assert_close(gx, gxr, GRAD_TOL[dtype], "grad x")
    n = x.numel() // shape[1]
    assert_close(gb, gbr, scaled_atol(GRAD_TOL[torch.float32], math.sqrt(n)), "grad bias")
    assert reference.bias_leaky_relu(x.detach(), b.detach()).dtype == dtype  # the oracle agrees on dtypes


def test_float32_bias_with_half_x_double_backward():
    """Second order through a float32 bias of bfloat16 x (a gradient penalty under autocast):
    the bias gradient's incoming gradient (float32) folds into x's (bfloat16)."""
    torch.manual_seed(4)
    x = torch.randn(16, 6).bfloat16().requires_grad_()
    b = torch.randn(6, requires_grad=True)
    results = []
    for xi, bi, f in (
        (x, b, ops.bias_leaky_relu),
        (x.detach().float().requires_grad_(), b.detach().clone().requires_grad_(), reference.bias_leaky_relu),
    ):
        y = f(xi, bi, 0.2, 1.0)
        gx, gb = torch.autograd.grad(y.float().square().sum(), (xi, bi), create_graph=True)
        assert gb.dtype == torch.float32
        (gx.float().square().sum() + gb.square().sum()).backward()
        results.append((xi.grad.float(), bi.grad))
    (ax, ab), (rx, rb) = results
    torch.testing.assert_close(ax, rx, rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(ab, rb, rtol=5e-2, atol=5e-2)


def test_fused_layers_read_their_float32_bias_under_autocast():
    """Under bfloat16 autocast the fused layers pass their float32 bias straight to the kernel:
    no cast of the bias forward, none of its gradient backward, and the gradient is float32."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from fastgan.models import Conv2dLeakyReLU, LinearLeakyReLU

    class Casts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten._to_copy.default, torch.ops.aten.to.dtype, torch.ops.aten.copy_.default):
                self.shapes.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    for layer, x in (
        (LinearLeakyReLU(8, 16), torch.randn(4, 8)),
        (Conv2dLeakyReLU(3, 16, 3, 1, 1), torch.randn(2, 3, 5, 5)),
        (fastgan.nn.FusedLeakyReLU(16), torch.randn(4, 16)),
    ):
        with Casts() as casts:
            with torch.autocast("cpu", torch.bfloat16):
                y = layer(x.bfloat16() if isinstance(layer, fastgan.nn.FusedLeakyReLU) else x)
            y.float().sum().backward()
        assert y.dtype == torch.bfloat16 and layer.bias.grad.dtype == torch.float32
        assert (16,) not in casts.shapes, casts.shapes


def test_bad_x():
    with pytest.raises(TypeError, match="x must be float32"):
        ops.bias_leaky_relu(torch.ones(3, 4, dtype=torch.int64), torch.zeros(4))
    with pytest.raises(ValueError, match="x must have at least 2 dims"):
        ops.bias_leaky_relu(torch.randn(4), torch.zeros(4))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_bias_on_other_device():
    x = torch.randn(3, 4, device="cuda")
    with pytest.raises(ValueError, match="bias must be on x's device"):
        ops.bias_leaky_relu(x, torch.zeros(4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_leaky_relu_module_matches_linear_plus_leaky_relu(dtype):
    torch.manual_seed(3)
    lin = torch.nn.Linear(10, 6)
    fused = torch.nn.Sequential(torch.nn.Linear(10, 6, bias=False), fastgan.nn.FusedLeakyReLU(6, 0.2))
    with torch.no_grad():
        fused[0].weight.copy_(lin.weight)
        fused[1].bias.copy_(lin.bias)
    x = torch.randn(4, 10)
    expected = torch.nn.functional.leaky_relu(lin(x), 0.2)
    torch.testing.assert_close(fused(x), expected)
    # a low-precision activation with a float32 bias parameter runs in the activation's dtype
    h = torch.randn(4, 6).to(dtype)
    assert fused[1](h).dtype == dtype
    assert "negative_slope=0.2" in repr(fused[1])


def test_expected_kernels_are_loaded():
    """CI sets FASTGAN_EXPECT_KERNELS=1: a missing or unloadable _C must fail, not fall back."""
    import os

    if os.environ.get("FASTGAN_EXPECT_KERNELS") != "1":
        pytest.skip("FASTGAN_EXPECT_KERNELS is not set")
    info = fastgan.build_info()
    assert info["cpu_kernels"], info["extension_error"]


def test_fused_leaky_relu_module_checks_its_arguments_when_made():
    with pytest.raises(ValueError, match="FusedLeakyReLU: scale must be > 0"):
        fastgan.nn.FusedLeakyReLU(4, scale=0)
    with pytest.raises(ValueError, match="FusedLeakyReLU: negative_slope must be >= 0"):
        fastgan.nn.FusedLeakyReLU(4, negative_slope=-0.1)
    with pytest.raises(TypeError, match="FusedLeakyReLU: negative_slope must be a number"):
        fastgan.nn.FusedLeakyReLU(4, negative_slope=None)
    layer = fastgan.nn.FusedLeakyReLU(4)
    with torch.no_grad():
        layer.bias.fill_(3.0)
    layer.reset_parameters()  # as torch modules have
    assert torch.equal(layer.bias, torch.zeros(4))


def _with_threads(n, fn):
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("shape", [(4096, 64), (64, 16, 100), (4, 6, 3, 3)])
def test_bias_gradient_does_not_depend_on_the_thread_count(shape):
    """The bias gradient's partial sums are fixed chunks added in order: the same bits with one
    thread or two (its rows path split the rows by the thread count)."""
    if not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("needs the compiled kernels")
    gen = torch.Generator().manual_seed(11)
    x, g = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    b = torch.randn(shape[1], generator=gen)
    y = ops.bias_leaky_relu(x, b)
    op = torch.ops.fastgan.bias_leaky_relu_backward
    one, two = (_with_threads(n, lambda: op(g, y, 0.2, 1.0, torch.float32)) for n in (1, 2))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_bias_gradient_of_a_huge_channel_is_accurate():
    """17.5M elements in one channel, 7 to a plane (the scalar tail path): one running float32 sum
    stopped growing at 2^24 = 16,777,216."""
    if not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("needs the compiled kernels")
    shape = (2_500_000, 1, 7)
    y = torch.ones(shape)
    dx, db = torch.ops.fastgan.bias_leaky_relu_backward(torch.ones(shape), y, 0.2, 1.0, torch.float32)
    assert db.item() == pytest.approx(17_500_000, rel=1e-5)


def test_the_positive_floor_survives_flush_to_zero():
    """With torch.set_flush_denormal(True) a subnormal y reads as 0 in the backward: a positive
    input got the slope's gradient. The float32/bfloat16 floor is the smallest normal number."""
    if not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("needs the compiled kernels")
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.full((2, 9), 1e-30, dtype=dtype, requires_grad=True)
            y = ops.bias_leaky_relu(x, None, 0.2, 1e-10)
            (gx,) = torch.autograd.grad(y.sum(), x)
            torch.testing.assert_close(gx.float(), torch.full((2, 9), 1e-10))
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4, 6), (3, 40, 2, 3, 3)])
def test_channels_last_3d_is_kept_as_torch_keeps_it(device, dtype, with_bias, shape):
    """torch's leaky_relu (and x + bias) keep a channels_last_3d x's layout, and its gradient's,
    whatever the upstream gradient's layout: fastgan's op the same, values torch's."""
    torch.manual_seed(2)
    cl3 = torch.channels_last_3d
    x = torch.randn(shape, device=device).to(dtype).to(memory_format=cl3)
    bias = torch.randn(shape[1], device=device).to(dtype) if with_bias else None
    for g in (
        torch.randn(shape, device=device).to(dtype).to(memory_format=cl3),
        torch.randn(shape, device=device).to(dtype),
    ):
        xs, xt = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
        bs, bt = (None, None) if bias is None else (bias.clone().requires_grad_(), bias.clone().requires_grad_())
        y = ops.bias_leaky_relu(xs, bs, 0.2, 1.5)
        yt = F.leaky_relu(xt if bt is None else xt + bt.view(1, -1, 1, 1, 1), 0.2) * 1.5
        assert yt.is_contiguous(memory_format=cl3) and not yt.is_contiguous()  # torch's, as checked
        assert y.is_contiguous(memory_format=cl3) and y.stride() == yt.stride()
        assert_close(y, yt, FORWARD_TOL[dtype], "y")
        inputs = (xs,) if bs is None else (xs, bs)
        mine = torch.autograd.grad(y, inputs, g)
        want = torch.autograd.grad(yt, (xt,) if bt is None else (xt, bt), g)
        assert want[0].is_contiguous(memory_format=cl3)
        assert mine[0].is_contiguous(memory_format=cl3) and mine[0].stride() == want[0].stride()
        assert_close(mine[0], want[0], GRAD_TOL[dtype], "grad x")
        if bs is not None:
            n = math.sqrt(x.numel() // shape[1])
            assert_close(mine[1], want[1], scaled_atol(GRAD_TOL[dtype], n), "grad bias")


def test_channels_last_3d_gradgradcheck():
    x = torch.randn(3, 4, 2, 3, 2, dtype=torch.float64).to(memory_format=torch.channels_last_3d).requires_grad_()
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    f = lambda x, b: ops.bias_leaky_relu(x, b, 0.2, 2.0)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, b))
    assert torch.autograd.gradgradcheck(f, (x, b))
    if fastgan.build_info()["cpu_kernels"]:  # the fake kernel's layout (torch.compile's) is the kernel's
        torch.library.opcheck(torch.ops.fastgan.bias_leaky_relu.default, (x, b, 0.2, 2.0))
