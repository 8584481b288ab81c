"""bce_with_logits, gan_d_loss, gan_g_loss: parity with torch (values and gradients) for every
reduction, dtype, weight/pos_weight combination and shape, and for every GAN loss kind;
saturated logits; determinism; gradcheck/gradgradcheck and gradient penalties; opcheck;
torch.compile; bad input; fastgan.nn.BCEWithLogitsLoss."""

import inspect

import pytest
import torch
import torch.nn.functional as F

import fastgan
from fastgan import ops
from fastgan.ops import losses as losses_mod
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
    seed_for,
)

SHAPES = [(7, 1), (13,), (5, 10), (1, 1), (1,)]
REDUCTIONS = ["none", "mean", "sum"]
WEIGHTS = ["none", "weight", "pos_weight", "both"]


def rand(shape, dtype, device, scale=3.0):
    return (torch.randn(shape, device=device) * scale).to(dtype)


def weights_for(shape, which, dtype, device):
    """weight broadcast along the last dim for 2-D logits (full shape for 1-D); pos_weight (C,)."""
    w = pw = None
    if which in ("weight", "both"):
        wshape = shape[-1:] if len(shape) == 2 else shape
        w = (torch.rand(wshape, device=device) + 0.5).to(dtype)
    if which in ("pos_weight", "both"):
        pw = (torch.rand(shape[-1:], device=device) * 3).to(dtype)
    return w, pw


def torch_bce(x, target, w, pw, reduction, rd):
    """torch's binary_cross_entropy_with_logits computed in rd, target a tensor or a number."""
    x = x.detach().to(rd).requires_grad_()
    if torch.is_tensor(target):
        t = target.detach().to(rd).requires_grad_(target.requires_grad)
    else:
        t = torch.full_like(x, target)
    out = F.binary_cross_entropy_with_logits(
        x, t, None if w is None else w.to(rd), reduction=reduction, pos_weight=None if pw is None else pw.to(rd)
    )
    return out, x, t


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("which", WEIGHTS)
@pytest.mark.parametrize("target_kind", ["tensor", "label"])
def test_bce_matches_torch(device, dtype, shape, which, target_kind):
    seed_for(shape, dtype, which, target_kind)
    x = rand(shape, dtype, device)
    target = torch.rand(shape, device=device).to(dtype) if target_kind == "tensor" else 0.9
    w, pw = weights_for(shape, which, dtype, device)
    rd = ref_dtype(dtype)
    for reduction in REDUCTIONS:
        xg = x.detach().requires_grad_()
        tg = (
            target.detach().requires_grad_(dtype in (torch.float32, torch.float64))
            if torch.is_tensor(target)
            else target
        )
        out = ops.bce_with_logits(xg, tg, w, pw, reduction)
        ref, xr, tr = torch_bce(xg, tg, w, pw, reduction, rd)
        assert out.dtype == dtype and out.shape == ref.shape
        assert_close(out, ref, FORWARD_TOL[dtype], f"{reduction} loss")
        g = torch.randn(out.shape, device=device).to(dtype)
        inputs = [xg] + ([tg] if torch.is_tensor(tg) and tg.requires_grad else [])
        grads = torch.autograd.grad(out, inputs, g)
        grads_r = torch.autograd.grad(ref, [xr] + ([tr] if len(inputs) == 2 else []), g.to(rd))
        assert_close(grads[0], grads_r[0], GRAD_TOL[dtype], f"{reduction} grad logits")
        if len(inputs) == 2:
            assert_close(grads[1], grads_r[1], GRAD_TOL[dtype], f"{reduction} grad target")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [((64, 1), (64, 1)), ((1, 1), (1, 1)), ((7,), (13,)), ((100, 1), (3, 1))])
@pytest.mark.parametrize("labels", [(1.0, 0.0), (0.9, 0.0), (0.9, 0.1)])
def test_gan_losses_match_reference(device, dtype, sizes, labels):
    seed_for(sizes, dtype, labels)
    real = rand(sizes[0], dtype, device).requires_grad_()
    fake = rand(sizes[1], dtype, device).requires_grad_()
    rd = ref_dtype(dtype)
    real_r = real.detach().to(rd).requires_grad_()
    fake_r = fake.detach().to(rd).requires_grad_()

    d = ops.gan_d_loss(real, fake, *labels)
    d_r = reference.gan_d_loss(real_r, fake_r, *labels)
    assert d.shape == () and d.dtype == rd  # the loss value in float32 or wider
    assert_close(d, d_r, FORWARD_TOL[torch.float32 if dtype != torch.float64 else dtype], "d loss")
    gr, gf = torch.autograd.grad(d, (real, fake))
    gr_r, gf_r = torch.autograd.grad(d_r, (real_r, fake_r))
    assert_close(gr, gr_r, GRAD_TOL[dtype], "d grad real")
    assert_close(gf, gf_r, GRAD_TOL[dtype], "d grad fake")

    g = ops.gan_g_loss(fake, labels[0])
    g_r = reference.gan_g_loss(fake_r, labels[0])
    assert g.shape == () and g.dtype == rd
    assert_close(g, g_r, FORWARD_TOL[torch.float32 if dtype != torch.float64 else dtype], "g loss")
    assert_close(torch.autograd.grad(g, fake)[0], torch.autograd.grad(g_r, fake_r)[0], GRAD_TOL[dtype], "g grad")


KINDS = list(ops.LOSS_KINDS)
OTHER_KINDS = [k for k in KINDS if k != "bce"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [((64, 1), (64, 1)), ((1, 1), (1, 1)), ((7,), (13,)), ((100, 1), (3, 1))])
@pytest.mark.parametrize("kind", KINDS)
def test_gan_loss_kinds_match_reference(device, dtype, sizes, kind):
    seed_for(sizes, dtype, kind)
    real = rand(sizes[0], dtype, device).requires_grad_()  # scale 3: both sides of hinge's kink
    fake = rand(sizes[1], dtype, device).requires_grad_()
    rd = ref_dtype(dtype)
    real_r = real.detach().to(rd).requires_grad_()
    fake_r = fake.detach().to(rd).requires_grad_()
    tol = FORWARD_TOL[rd]

    d = ops.gan_d_loss(real, fake, kind=kind)
    d_r = reference.gan_d_loss(real_r, fake_r, kind=kind)
    assert d.shape == () and d.dtype == rd
    assert_close(d, d_r, tol, f"{kind} d loss")
    gr, gf = torch.autograd.grad(d, (real, fake))
    gr_r, gf_r = torch.autograd.grad(d_r, (real_r, fake_r))
    assert gr.dtype == gf.dtype == dtype
    assert_close(gr, gr_r, GRAD_TOL[dtype], f"{kind} d grad real")
    assert_close(gf, gf_r, GRAD_TOL[dtype], f"{kind} d grad fake")

    g = ops.gan_g_loss(fake, kind=kind)
    g_r = reference.gan_g_loss(fake_r, kind=kind)
    assert g.shape == () and g.dtype == rd
    assert_close(g, g_r, tol, f"{kind} g loss")
    assert_close(
        torch.autograd.grad(g, fake)[0], torch.autograd.grad(g_r, fake_r)[0], GRAD_TOL[dtype], f"{kind} g grad"
    )


def test_gan_loss_kinds_are_the_formulas():
    """The kinds' definitions on a few exact values (the reference is checked, not trusted)."""
    real = torch.tensor([2.0, 0.5, -1.0], dtype=torch.float64)
    fake = torch.tensor([-3.0, 0.25], dtype=torch.float64)
    want_d = {
        "hinge": (0 + 0.5 + 2) / 3 + (0 + 1.25) / 2,
        "lsgan": (1 + 0.25 + 4) / 3 / 2 + (9 + 0.0625) / 2 / 2,
        "wgan": (-3 + 0.25) / 2 - (2 + 0.5 - 1) / 3,
    }
    want_g = {"hinge": 2.75 / 2, "lsgan": (16 + 0.5625) / 2 / 2, "wgan": 2.75 / 2}
    for kind in OTHER_KINDS:
        for fn in (ops, reference):
            assert fn.gan_d_loss(real, fake, kind=kind).item() == pytest.approx(want_d[kind], rel=1e-12)
            assert fn.gan_g_loss(fake, kind=kind).item() == pytest.approx(want_g[kind], rel=1e-12)
    # hinge's gradient is 0 where relu is flat, and at its kink (as torch.relu's)
    x = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([-2.0, -1.0, 0.0], dtype=torch.float64, requires_grad=True)
    gr, gf = torch.autograd.grad(ops.gan_d_loss(x, y, kind="hinge"), (x, y))
    assert gr.tolist() == [0.0, 0.0, -1 / 3] and gf.tolist() == [0.0, 0.0, 1 / 3]


def test_bce_kind_is_the_default():
    torch.manual_seed(1)
    real, fake = torch.randn(33, 1), torch.randn(17, 1)
    assert torch.equal(ops.gan_d_loss(real, fake, 0.9, 0.1, kind="bce"), ops.gan_d_loss(real, fake, 0.9, 0.1))
    assert torch.equal(ops.gan_g_loss(fake, 0.9, kind="bce"), ops.gan_g_loss(fake, 0.9))
    if fastgan.build_info()["cpu_kernels"]:  # the op without kind (the schema default): bce
        lib = torch.ops.fastgan
        assert torch.equal(lib.gan_d_loss(real, fake, 0.9, 0.1), lib.gan_d_loss(real, fake, 0.9, 0.1, 0))
        assert torch.equal(lib.gan_g_loss(fake, 0.9), ops.gan_g_loss(fake, 0.9))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_saturated_logits_are_finite_and_exact(device, dtype):
    x = torch.tensor([1e4, -1e4, 88.8, -88.8, 30.0, -30.0, 0.0], device=device).to(dtype)
    for t in (0.0, 1.0, 0.9):
        xg = x.detach().requires_grad_()
        loss = ops.bce_with_logits(xg, t, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), xg)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        xd = x.double()
        exact_loss = (1 - t) * xd + torch.log1p(torch.exp(-xd.abs())) + (-xd).clamp_min(0)
        exact_grad = torch.sigmoid(xd) - t
        assert_close(loss, exact_loss.to(ref_dtype(dtype)), FORWARD_TOL[dtype], f"loss t={t}")
        assert_close(grad, exact_grad.to(ref_dtype(dtype)), GRAD_TOL[dtype], f"grad t={t}")
        if t in (0.0, 1.0):  # the limits exactly: 1 - t at +inf, -t at -inf
            assert grad[0].item() == 1 - t and grad[1].item() == -t
        for kind in ("mean", "sum"):
            r = ops.bce_with_logits(x, t, reduction=kind)
            assert torch.isfinite(r)
    d = ops.gan_d_loss(x.detach().requires_grad_(), x.detach().flip(0).requires_grad_())
    assert torch.isfinite(d)
    # pos_weight at saturation: the gradient at -inf is -pos_weight * t
    pw = torch.tensor([3.0], device=device).to(dtype)
    xg = x.detach().requires_grad_()
    (grad,) = torch.autograd.grad(ops.bce_with_logits(xg, 1.0, None, pw, "sum"), xg)
    assert grad[1].item() == -3.0 and grad[0].item() == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_gan_loss_kinds_at_huge_logits_are_finite_and_exact(device, dtype, kind):
    """|logit| 1e4: hinge and wgan are linear, lsgan quadratic (5e7, finite in float32); values
    and gradients against the float64 formulas, no inf or NaN."""
    x = torch.tensor([1e4, -1e4, 1e4, -1e4, 30.0, -30.0, 0.0], device=device).to(dtype)
    real, fake = x.detach().requires_grad_(), x.detach().flip(0)[:5].requires_grad_()
    d = ops.gan_d_loss(real, fake, kind=kind)
    g = ops.gan_g_loss(fake, kind=kind)
    grads = torch.autograd.grad(d + g, (real, fake))
    assert torch.isfinite(d) and torch.isfinite(g)
    assert all(torch.isfinite(t).all() for t in grads)
    real_r, fake_r = (t.detach().double().requires_grad_() for t in (real, fake))
    d_r, g_r = reference.gan_d_loss(real_r, fake_r, kind=kind), reference.gan_g_loss(fake_r, kind=kind)
    grads_r = torch.autograd.grad(d_r + g_r, (real_r, fake_r))
    tol = FORWARD_TOL[ref_dtype(dtype)]
    assert_close(d, d_r.to(d.dtype), tol, f"{kind} d loss")
    assert_close(g, g_r.to(g.dtype), tol, f"{kind} g loss")
    for a, b in zip(grads, grads_r):
        assert_close(a, b.to(a.dtype), GRAD_TOL[dtype], f"{kind} grad")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [4097, 100_003, 1_000_000])
def test_large_and_misaligned_inputs(device, n):
    """Many CPU chunks / CUDA blocks (the last-block reduction), and views whose data is not
    16-byte aligned (the one-element-at-a-time kernel path)."""
    torch.manual_seed(n)
    base = torch.randn(n + 1, device=device) * 4
    for x in (base[:n], base[1:]):
        t = torch.rand(n + 1, device=device)[1:]
        for reduction in ("mean", "sum"):
            xg = x.detach().requires_grad_()
            out = ops.bce_with_logits(xg, t, reduction=reduction)
            ref, xr, _ = torch_bce(xg, t, None, None, reduction, torch.float64)
            assert_close(out, ref.float(), (1e-5, 1e-6), reduction)
            (g,) = torch.autograd.grad(out, xg)
            (g_r,) = torch.autograd.grad(ref, xr)
            # sigmoid(x) - t cancels: float32's absolute error is about one ulp of 1
            assert_close(g, g_r.float(), (1e-4, 1e-6 / (n if reduction == "mean" else 1)), f"{reduction} grad")
        real, fake = x[: n // 3], x[n // 3 :]
        d = ops.gan_d_loss(real, fake, 0.9, 0.1)
        d_r = reference.gan_d_loss(real.double(), fake.double(), 0.9, 0.1)
        assert_close(d, d_r.float(), (1e-5, 1e-6), "gan_d_loss")
        for kind in OTHER_KINDS:
            rg, fg = real.detach().requires_grad_(), fake.detach().requires_grad_()
            d = ops.gan_d_loss(rg, fg, kind=kind)
            rr, fr = real.double().requires_grad_(), fake.double().requires_grad_()
            d_r = reference.gan_d_loss(rr, fr, kind=kind)
            assert_close(d, d_r.float(), (1e-5, 1e-6), f"gan_d_loss {kind}")
            for a, b in zip(torch.autograd.grad(d, (rg, fg)), torch.autograd.grad(d_r, (rr, fr))):
                assert_close(a, b.float(), (1e-5, 1e-6 / n), f"gan_d_loss {kind} grad")
            g = ops.gan_g_loss(fake, kind=kind)
            assert_close(g, reference.gan_g_loss(fake.double(), kind=kind).float(), (1e-5, 1e-6), f"gan_g_loss {kind}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_deterministic(device, dtype):
    torch.manual_seed(5)
    real = (torch.randn(1_500_000, 1, device=device) * 3).to(dtype).requires_grad_()
    fake = (torch.randn(700_001, 1, device=device) * 3).to(dtype).requires_grad_()

    def run():
        d = ops.gan_d_loss(real, fake, 0.9, 0.0)
        b = ops.bce_with_logits(real, 0.9, reduction="sum")
        out = [d, b, *torch.autograd.grad(d + b, (real, fake))]
        for kind in OTHER_KINDS:
            d, g = ops.gan_d_loss(real, fake, kind=kind), ops.gan_g_loss(fake, kind=kind)
            out += [d, g, *torch.autograd.grad(d + g, (real, fake))]
        return out

    first, second = run(), run()
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    if device == "cpu":  # fixed chunks: the bits do not depend on the thread count either
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            third = run()
        finally:
            torch.set_num_threads(threads)
        for a, b in zip(first, third):
            assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_and_gradgradcheck_bce(device, reduction):
    torch.manual_seed(7)
    opts = dict(device=device, dtype=torch.float64)
    x = (torch.randn(4, 3, **opts) * 2).requires_grad_()
    t = torch.rand(4, 3, **opts).requires_grad_()
    w = torch.rand(3, **opts) + 0.5
    pw = torch.rand(4, 1, **opts) * 3
    for weight, pos_weight in ((None, None), (w, None), (None, pw), (w, pw)):
        f = lambda x, t: ops.bce_with_logits(x, t, weight, pos_weight, reduction)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x, t))
        assert torch.autograd.gradgradcheck(f, (x, t))
        f = lambda x: ops.bce_with_logits(x, 0.8, weight, pos_weight, reduction)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x,))
        assert torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_and_gradgradcheck_gan(device):
    torch.manual_seed(8)
    opts = dict(device=device, dtype=torch.float64, requires_grad=True)
    real, fake = torch.randn(5, 1, **opts), torch.randn(3, **opts)
    f = lambda r, f: ops.gan_d_loss(r, f, 0.9, 0.1)  # noqa: E731
    assert torch.autograd.gradcheck(f, (real, fake))
    assert torch.autograd.gradgradcheck(f, (real, fake))
    assert torch.autograd.gradcheck(lambda f: ops.gan_g_loss(f, 0.95), (fake,))
    assert torch.autograd.gradgradcheck(lambda f: ops.gan_g_loss(f, 0.95), (fake,))
    # third order through the ATen double backward
    loss = ops.gan_d_loss(real, fake)
    (gr,) = torch.autograd.grad(loss, real, create_graph=True)
    (ggr,) = torch.autograd.grad(gr.pow(2).sum(), real, create_graph=True)
    assert torch.autograd.grad(ggr.sum(), real)[0].shape == real.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_and_gradgradcheck_gan_kinds(device, kind):
    # away from hinge's kinks (real 1, fake -1), where the finite differences would straddle them
    opts = dict(device=device, dtype=torch.float64, requires_grad=True)
    real = torch.tensor([[0.3], [-0.6], [1.8], [-2.4], [0.05], [3.1]], **opts)
    fake = torch.tensor([0.5, -1.7, 2.5, -0.3], **opts)
    f = lambda r, f: ops.gan_d_loss(r, f, kind=kind)  # noqa: E731
    assert torch.autograd.gradcheck(f, (real, fake))
    assert torch.autograd.gradgradcheck(f, (real, fake))
    g = lambda f: ops.gan_g_loss(f, kind=kind)  # noqa: E731
    assert torch.autograd.gradcheck(g, (fake,))
    assert torch.autograd.gradgradcheck(g, (fake,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_penalty_through_the_loss_backward(device, kind):
    """A penalty on the gradient of the D loss in its inputs (R1-style, as WGAN-GP and R1 need):
    its parameter gradients go through the loss's backward; the same as with the reference."""
    torch.manual_seed(11)
    lin = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(device).double()
    x_real = torch.randn(6, 4, device=device, dtype=torch.float64, requires_grad=True)
    x_fake = torch.randn(5, 4, device=device, dtype=torch.float64, requires_grad=True)

    def grads(loss_fn):
        loss = loss_fn(lin(x_real), lin(x_fake), kind=kind)
        gx_real, gx_fake = torch.autograd.grad(loss, (x_real, x_fake), create_graph=True)
        penalty = gx_real.pow(2).sum() + (gx_fake.norm(dim=1) - 1).pow(2).mean()
        return torch.autograd.grad(loss + 10 * penalty, list(lin.parameters()))

    for a, b in zip(grads(ops.gan_d_loss), grads(reference.gan_d_loss)):
        assert_close(a, b, GRAD_TOL[torch.float64], f"{kind} penalty grad")


@requires_kernels
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = torch.randn(6, 3, device=device, requires_grad=True)
    t = torch.rand(6, 3, device=device)
    w, pw = torch.rand(3, device=device), torch.rand(3, device=device) * 2
    lib = torch.ops.fastgan
    for reduction in REDUCTIONS:
        torch.library.opcheck(lib.bce_with_logits.default, (x, t, 0.0, w, pw, reduction))
        t_grad = t.clone().requires_grad_()  # the target's gradient too (a 1/numel for the mean)
        torch.library.opcheck(lib.bce_with_logits.default, (x, t_grad, 0.0, w, pw, reduction))
        torch.library.opcheck(lib.bce_with_logits.default, (x, None, 0.9, None, None, reduction))
        g = torch.randn(6, 3, device=device) if reduction == "none" else torch.tensor(1.5, device=device)
        torch.library.opcheck(lib.bce_with_logits_backward.default, (g, x.detach(), t, 0.0, w, pw, reduction))
    real = torch.randn(8, 1, device=device, requires_grad=True)
    fake = torch.randn(5, 1, device=device, requires_grad=True)
    torch.library.opcheck(lib.gan_d_loss.default, (real, fake, 0.9, 0.0))
    torch.library.opcheck(
        lib.gan_d_loss_backward.default, (torch.tensor(1.0, device=device), real.detach(), fake.detach(), 1.0, 0.0)
    )
    torch.library.opcheck(lib.gan_g_loss.default, (fake, 1.0))
    torch.library.opcheck(lib.gan_g_loss_backward.default, (torch.tensor(2.0, device=device), fake.detach(), 1.0))


@requires_kernels
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kind", KINDS)
def test_opcheck_gan_loss_kinds(device, dtype, kind):
    k = ops.LOSS_KINDS.index(kind)
    real = torch.randn(8, 1, device=device, dtype=dtype, requires_grad=True)
    fake = torch.randn(5, 1, device=device, dtype=dtype, requires_grad=True)
    lib = torch.ops.fastgan
    g = torch.tensor(1.5, device=device, dtype=ref_dtype(dtype))
    torch.library.opcheck(lib.gan_d_loss.default, (real, fake, 1.0, 0.0, k))
    torch.library.opcheck(lib.gan_d_loss_backward.default, (g, real.detach(), fake.detach(), 1.0, 0.0, k))
    torch.library.opcheck(lib.gan_g_loss.default, (fake, 1.0, k))
    torch.library.opcheck(lib.gan_g_loss_backward.default, (g, fake.detach(), 1.0, k))


@requires_kernels
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_opcheck_gan_losses_of_other_dtypes(device, dtype):
    """The GAN losses of half logits are float32 (of float64 ones, float64), in the kernel and in
    the fake kernel that torch.compile traces with."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = torch.randn(8, 1, device=device, dtype=dtype, requires_grad=True)
    fake = torch.randn(5, 1, device=device, dtype=dtype, requires_grad=True)
    lib = torch.ops.fastgan
    torch.library.opcheck(lib.gan_d_loss.default, (real, fake, 1.0, 0.0))
    torch.library.opcheck(lib.gan_g_loss.default, (fake, 1.0))
    want = torch.float64 if dtype == torch.float64 else torch.float32
    real_data, fake_data = real.detach(), fake.detach()
    with FakeTensorMode() as mode:
        r, f = mode.from_tensor(real_data), mode.from_tensor(fake_data)
        assert lib.gan_d_loss(r, f, 1.0, 0.0).dtype == want and lib.gan_g_loss(f, 1.0).dtype == want
    assert lib.gan_d_loss(real, fake, 1.0, 0.0).dtype == want and lib.gan_g_loss(fake, 1.0).dtype == want


@requires_kernels
@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    w = torch.randn(1, 8, device=device, requires_grad=True)

    def d_step(x_real, x_fake, t):
        real, fake = x_real @ w.t(), x_fake @ w.t()
        return (
            ops.gan_d_loss(real, fake, 0.9, 0.0)
            + ops.gan_g_loss(fake)
            + ops.bce_with_logits(real, t, reduction="sum")
            + ops.bce_with_logits(fake, 0.0)
        )

    compiled = torch.compile(d_step, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    args = (torch.randn(6, 8, device=device), torch.randn(4, 8, device=device), torch.rand(6, 1, device=device))
    loss = compiled(*args)
    (gw,) = torch.autograd.grad(loss, w)
    loss_e = d_step(*args)
    (gw_e,) = torch.autograd.grad(loss_e, w)
    torch.testing.assert_close(loss, loss_e)
    torch.testing.assert_close(gw, gw_e)


@requires_kernels
@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_torch_compile_fullgraph_kinds(kind):
    torch._dynamo.reset()
    w = torch.randn(1, 8, requires_grad=True)

    def step(x_real, x_fake):
        real, fake = x_real @ w.t(), x_fake @ w.t()
        return ops.gan_d_loss(real, fake, kind=kind) + ops.gan_g_loss(fake, kind=kind)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    args = (torch.randn(6, 8), torch.randn(4, 8))
    loss = compiled(*args)
    loss_e = step(*args)
    torch.testing.assert_close(loss, loss_e)
    torch.testing.assert_close(torch.autograd.grad(loss, w)[0], torch.autograd.grad(loss_e, w)[0])


@requires_kernels
def test_torch_compile_with_changing_number_labels():
    """A D step calls a loss with 1.0 and then 0.0: torch.compile recompiles with the label as a
    SymFloat, which the Python-side label check (math.isfinite) could not trace in fullgraph."""
    torch._dynamo.reset()
    x, y = torch.randn(8, 1), torch.randn(5, 1)
    losses = (
        lambda x, v: ops.bce_with_logits(x, v),
        lambda x, v: fastgan.nn.BCEWithLogitsLoss()(x, v),
        lambda x, v: ops.gan_g_loss(x, v),
        lambda x, v: ops.gan_d_loss(x, y, v, 1.0 - v),
    )
    for fn in losses:
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        for label in (1.0, 0.0, 0.9):
            torch.testing.assert_close(compiled(x, label), fn(x, label))


@requires_kernels
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_torch_compile_dynamic_shapes_with_a_target_gradient(reduction):
    # the mean's 1/numel in the target's gradient is symbolic under dynamic shapes (numel() raised)
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x, t: ops.bce_with_logits(x, t, reduction=reduction).sum(),
        fullgraph=True,
        dynamic=True,
        backend="aot_eager",
    )
    for n in (8, 16):
        x = torch.randn(n, 1, requires_grad=True)
        t = torch.rand(n, 1, requires_grad=True)
        gx, gt = torch.autograd.grad(compiled(x, t), (x, t))
        ex, et = torch.autograd.grad(F.binary_cross_entropy_with_logits(x, t, reduction=reduction).sum(), (x, t))
        torch.testing.assert_close(gx, ex)
        torch.testing.assert_close(gt, et)


# Bad input: the compiled kernels and the reference fallback say the same thing.
@pytest.fixture(params=["kernels", "reference"])
def path(request, monkeypatch):
    if request.param == "kernels":
        if not fastgan.build_info()["cpu_kernels"]:
            pytest.skip("fastgan._C is not built")
    else:
        for name in ("_bce", "_gan_d", "_gan_g"):
            monkeypatch.setattr(losses_mod, name, None)
    return request.param


X = torch.randn(4, 3)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: ops.bce_with_logits(X, torch.rand(4, 2)), ValueError, "target must have logits' shape"),
        (lambda: ops.bce_with_logits(X, torch.rand(3)), ValueError, "target must have logits' shape"),
        (lambda: ops.bce_with_logits(X.long(), 1.0), TypeError, "logits must be float32"),
        (lambda: ops.bce_with_logits(X, 1.0, reduction="avg"), ValueError, "reduction must be 'none', 'mean' or 'sum'"),
        (lambda: ops.bce_with_logits(X, 1.5), ValueError, r"target must be in \[0, 1\]"),
        (lambda: ops.bce_with_logits(X, float("nan")), ValueError, r"target must be in \[0, 1\]"),
        (lambda: ops.bce_with_logits(X, "1"), TypeError, "target must be a Tensor or a number"),
        (lambda: ops.bce_with_logits(X, X.long()), TypeError, "target must be float32"),
        (lambda: ops.bce_with_logits(torch.randn(0, 1), 1.0), ValueError, "logits must not be empty"),
        (lambda: ops.bce_with_logits(X, 1.0, torch.rand(4)), ValueError, "weight of shape .* must broadcast"),
        (lambda: ops.bce_with_logits(X, 1.0, None, torch.rand(2, 4, 3)), ValueError, "pos_weight of shape"),
        (
            lambda: ops.bce_with_logits(X, 1.0, None, torch.ones(3, dtype=torch.int32)),
            TypeError,
            "pos_weight must be float32",
        ),
        (lambda: ops.gan_d_loss(X, X, 1.0, -0.1), ValueError, r"fake_label must be in \[0, 1\]"),
        (lambda: ops.gan_d_loss(X, X, 2.0), ValueError, r"real_label must be in \[0, 1\]"),
        (lambda: ops.gan_d_loss(torch.randn(0, 1), X), ValueError, "real_logits must not be empty"),
        (lambda: ops.gan_d_loss(X, torch.randn(0)), ValueError, "fake_logits must not be empty"),
        (lambda: ops.gan_d_loss(X, X.half()), TypeError, "fake_logits must have real_logits' dtype"),
        (lambda: ops.gan_d_loss(X.int(), X), TypeError, "real_logits must be float32"),
        (lambda: ops.gan_g_loss(torch.randn(0)), ValueError, "fake_logits must not be empty"),
        (lambda: ops.gan_g_loss(X, 1.01), ValueError, r"real_label must be in \[0, 1\]"),
        (lambda: ops.gan_g_loss(X, "1"), TypeError, "real_label must be a number"),
        (lambda: ops.gan_d_loss(X, X, 1, None), TypeError, "fake_label must be a number"),
        (
            lambda: ops.gan_d_loss(X, X, kind="ralsgan"),
            ValueError,
            "kind must be one of 'bce', 'hinge', 'lsgan', 'wgan', got 'ralsgan'",
        ),
        (lambda: ops.gan_d_loss(X, X, kind=1), ValueError, "kind must be one of 'bce', 'hinge', 'lsgan', 'wgan'"),
        (lambda: ops.gan_g_loss(X, kind="Hinge"), ValueError, "kind must be one of 'bce', 'hinge', 'lsgan', 'wgan'"),
        (lambda: ops.gan_d_loss(X, X, 0.9, kind="hinge"), ValueError, "real_label applies to kind='bce' only"),
        (lambda: ops.gan_d_loss(X, X, 1.0, 0.1, kind="wgan"), ValueError, "fake_label applies to kind='bce' only"),
        (lambda: ops.gan_g_loss(X, 0.9, kind="lsgan"), ValueError, "real_label applies to kind='bce' only"),
        (lambda: ops.gan_d_loss(X, X, 2.0, kind="lsgan"), ValueError, r"real_label must be in \[0, 1\]"),
    ],
)
def test_bad_input(path, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@requires_kernels
@pytest.mark.parametrize("fake_mode", [False, True])
def test_bad_kind_number_to_the_ops(fake_mode):
    """The ops' int kind, checked by the kernels and by the fake kernels alike."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    lib = torch.ops.fastgan
    for kind in (-1, 4):
        for call in (lambda x: lib.gan_d_loss(x, x, 1.0, 0.0, kind), lambda x: lib.gan_g_loss(x, 1.0, kind)):
            with pytest.raises(ValueError, match=r"kind must be 0 \('bce'\), 1 \('hinge'\), 2 \('lsgan'\) or 3"):
                if fake_mode:
                    with FakeTensorMode() as mode:
                        call(mode.from_tensor(X))
                else:
                    call(X)
    with pytest.raises(ValueError, match="real_label applies to kind 'bce' only"):
        lib.gan_g_loss(X, 0.9, 1)


@pytest.mark.parametrize("other", ["target", "weight", "pos_weight"])
def test_bce_promotes_mixed_dtypes_as_torch(path, other):
    """A float64 target (from numpy, say), weight or pos_weight with float32 logits gives a float64
    loss, as torch's does; a float16 one is promoted to the logits' float32. The gradient reaches
    the logits in their own dtype."""
    torch.manual_seed(3)
    x = torch.randn(5, 3, requires_grad=True)
    args = dict(target=torch.rand(5, 3), weight=torch.rand(3) + 0.5, pos_weight=torch.rand(5, 3) * 2)
    for dtype, want in ((torch.float64, torch.float64), (torch.float16, torch.float32)):
        mixed = dict(args, **{other: args[other].to(dtype)})
        ours = ops.bce_with_logits(x, mixed["target"], mixed["weight"], mixed["pos_weight"])
        assert ours.dtype == want
        exact = {k: v.to(want) for k, v in mixed.items()}
        theirs = F.binary_cross_entropy_with_logits(x.to(want), exact.pop("target"), **exact)
        assert_close(ours, theirs, FORWARD_TOL[want], "loss")
        (g,) = torch.autograd.grad(ours, x)
        (g_ref,) = torch.autograd.grad(theirs, x)
        assert g.dtype == torch.float32
        assert_close(g, g_ref, FORWARD_TOL[torch.float32], "grad")


def test_weight_is_not_differentiable():
    if not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("fastgan._C is not built")
    w = torch.rand(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="weight must not require grad"):
        ops.bce_with_logits(X, 1.0, w)
    with torch.no_grad():
        ops.bce_with_logits(X, 1.0, w)  # fine without autograd


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and the CUDA kernels")
def test_target_on_other_device():
    with pytest.raises(ValueError, match="target must be on logits' device"):
        ops.bce_with_logits(X.cuda(), torch.rand(4, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_fallback_matches_kernels(monkeypatch, dtype):
    """The fallback path returns what the kernels return, dtypes included."""
    real, fake = torch.randn(9, 1).to(dtype), torch.randn(5, 1).to(dtype)

    def all_losses():
        out = [ops.gan_d_loss(real, fake, 0.9), ops.gan_g_loss(fake), ops.bce_with_logits(real, 0.9)]
        return out + [
            f for k in OTHER_KINDS for f in (ops.gan_d_loss(real, fake, kind=k), ops.gan_g_loss(fake, kind=k))
        ]

    kernels = all_losses()
    for name in ("_bce", "_gan_d", "_gan_g"):
        monkeypatch.setattr(losses_mod, name, None)
    fallback = all_losses()
    for a, b in zip(kernels, fallback):
        assert a.dtype == b.dtype
        assert_close(a, b, FORWARD_TOL[dtype] if a.dtype == dtype else FORWARD_TOL[torch.float32], "fallback")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", ["kernels", "fallback"])
def test_losses_run_in_float32_under_autocast(device, path, monkeypatch):
    """As torch's binary_cross_entropy_with_logits: under autocast, bfloat16/float16 inputs
    (mixed with float32 ones too) are computed in float32; gradients reach the half inputs in
    their own dtype; float64 stays float64; outside autocast mixed dtypes are still an error."""
    if path == "fallback":
        for name in ("_bce", "_gan_d", "_gan_g"):
            monkeypatch.setattr(losses_mod, name, None)
    elif not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("needs the compiled kernels")
    torch.manual_seed(5)
    real = (torch.randn(8, 1, device=device) * 3).bfloat16().requires_grad_()
    fake = (torch.randn(6, 1, device=device) * 3).requires_grad_()  # float32
    target = torch.rand(8, 1, device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        d = ops.gan_d_loss(real, fake)
        g = ops.gan_g_loss(real)
        b = ops.bce_with_logits(real, target)
        b64 = ops.bce_with_logits(real.detach().double(), target.double())
    assert d.dtype == g.dtype == b.dtype == torch.float32 and b64.dtype == torch.float64
    r32 = real.detach().float()
    assert_close(d, reference.gan_d_loss(r32, fake.detach()), FORWARD_TOL[torch.float32], "gan_d_loss")
    assert_close(g, reference.gan_g_loss(r32), FORWARD_TOL[torch.float32], "gan_g_loss")
    assert_close(b, F.binary_cross_entropy_with_logits(r32, target), FORWARD_TOL[torch.float32], "bce")
    (d + g + b).backward()
    assert real.grad.dtype == torch.bfloat16 and fake.grad.dtype == torch.float32
    with pytest.raises(TypeError, match="fake_logits must have real_logits' dtype"):
        ops.gan_d_loss(real, fake)


@pytest.mark.parametrize("device", DEVICES)
def test_bce_loss_module_keeps_float32_weights_under_autocast(device):
    """Under autocast torch computes the loss in float32 with the float32 weight and pos_weight
    buffers as they are; they were rounded to the logits' bfloat16 first."""
    if not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("needs the compiled kernels")
    torch.manual_seed(2)
    w, pw = torch.rand(3, device=device) + 0.5001, torch.rand(3, device=device) * 2 + 0.3333
    x, t = torch.randn(4, 3, device=device).bfloat16(), torch.rand(4, 3, device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        ours = fastgan.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw).to(device)(x, t)
        theirs = torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw).to(device)(x, t)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_bce_with_logits_loss_module():
    assert inspect.signature(fastgan.nn.BCEWithLogitsLoss) == inspect.signature(torch.nn.BCEWithLogitsLoss)
    torch.manual_seed(9)
    w, pw = torch.rand(3) + 0.5, torch.rand(3) * 2
    x, t = torch.randn(4, 3, requires_grad=True), torch.rand(4, 3)
    for kwargs in (dict(), dict(weight=w), dict(pos_weight=pw, reduction="sum"), dict(weight=w, reduction="none")):
        ours, theirs = fastgan.nn.BCEWithLogitsLoss(**kwargs), torch.nn.BCEWithLogitsLoss(**kwargs)
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        ours.load_state_dict(theirs.state_dict())
        a, b = ours(x, t), theirs(x, t)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(torch.autograd.grad(a.sum(), x)[0], torch.autograd.grad(b.sum(), x)[0])
    # a number target is a constant label
    torch.testing.assert_close(
        fastgan.nn.BCEWithLogitsLoss()(x, 0.9), torch.nn.BCEWithLogitsLoss()(x, torch.full_like(x, 0.9))
    )
    assert isinstance(fastgan.nn.BCEWithLogitsLoss(), torch.nn.BCEWithLogitsLoss)
    # float32 buffers follow bfloat16 logits, as FusedLeakyReLU's bias does
    xb = x.detach().bfloat16()
    out = fastgan.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw)(xb, 0.9)
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,xs", [(torch.float32, [20.0, 30.0, 40.0]), (torch.float64, [40.0, 50.0, 60.0])])
@pytest.mark.parametrize("n", [1, 13])  # a scalar tail alone, and vector bodies
def test_a_tiny_loss_keeps_its_relative_accuracy(device, dtype, xs, n):
    """BCE of a confidently right logit x is log1p(exp(-x)) = exp(-x) to the dtype's precision,
    not 0 (log(1 + e) rounds 1 + e to 1): relative error 1e-5, no absolute slack."""
    x = torch.tensor(xs * n, dtype=dtype, device=device)
    loss = ops.bce_with_logits(x, 1.0, reduction="none")
    torch.testing.assert_close(loss.double().cpu(), torch.exp(-x.double().cpu()), rtol=1e-5, atol=0)
