"""Loss benchmarks: BCE-with-logits, the GAN discriminator loss and the other GAN loss
kinds' D and G losses, forward + backward.

    pytest benchmarks/test_losses.py                      # CPU and, where present, CUDA
    pytest benchmarks/test_losses.py -k cpu --benchmark-columns=median,iqr,ops
    pytest benchmarks/test_losses.py -k kinds             # hinge, lsgan, wgan only

Implementations compared at (64, 1), (1024, 1) and (4194304, 1) logits:
  eager_sigmoid_bce  the tutorials: sigmoid + BCELoss against freshly allocated ones/zeros
  eager_bce_logits   F.binary_cross_entropy_with_logits against ones/zeros tensors
  compiled           torch.compile (inductor) of eager_bce_logits
  fastgan            fastgan.ops.bce_with_logits(x, 1.0) / fastgan.ops.gan_d_loss(real, fake)
and for the kinds hinge, lsgan and wgan (test_gan_loss_kinds_forward_backward):
  eager              the formulas in torch ops (fastgan.ops.reference.gan_d_loss / gan_g_loss)
  compiled           torch.compile (inductor) of eager
  fastgan            fastgan.ops.gan_d_loss(real, fake, kind=kind) / gan_g_loss(fake, kind=kind)
Each timed call runs the forward, the backward (torch.autograd.grad) and, on CUDA, a
synchronize. Results: benchmarks/RESULTS.md (measured on the GPU machine). On a small CPU
machine set TORCHINDUCTOR_COMPILE_THREADS=1, or inductor's compile workers keep running
beside the timed loops.
"""

import pytest
import torch
import torch.nn.functional as F

import fastgan
from fastgan import ops
from fastgan.ops import reference

HAS_CUDA = torch.cuda.is_available() and fastgan.build_info()["cuda_kernels"]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and the CUDA kernels")]
    ),
]
SHAPES = [(64, 1), (1024, 1), (4194304, 1)]
IMPLS = ["eager_sigmoid_bce", "eager_bce_logits", "compiled", "fastgan"]


def bce_sigmoid(x):
    return F.binary_cross_entropy(torch.sigmoid(x), torch.ones(x.shape, device=x.device))


def bce_logits(x):
    return F.binary_cross_entropy_with_logits(x, torch.ones(x.shape, device=x.device))


def d_sigmoid(real, fake):
    return F.binary_cross_entropy(
        torch.sigmoid(real), torch.ones(real.shape, device=real.device)
    ) + F.binary_cross_entropy(torch.sigmoid(fake), torch.zeros(fake.shape, device=fake.device))


def d_logits(real, fake):
    return F.binary_cross_entropy_with_logits(
        real, torch.ones(real.shape, device=real.device)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros(fake.shape, device=fake.device))


FUNCS = {
    "bce_with_logits": {
        "eager_sigmoid_bce": bce_sigmoid,
        "eager_bce_logits": bce_logits,
        "compiled": bce_logits,
        "fastgan": lambda x: ops.bce_with_logits(x, 1.0),
    },
    "gan_d_loss": {
        "eager_sigmoid_bce": d_sigmoid,
        "eager_bce_logits": d_logits,
        "compiled": d_logits,
        "fastgan": lambda r, f: ops.gan_d_loss(r, f, 1.0, 0.0),
    },
}


def step_fn(op, impl, device, shape):
    return timed_step(FUNCS[op][impl], impl == "compiled", 1 if op == "bce_with_logits" else 2, device, shape)


def timed_step(fn, compiled, n_inputs, device, shape):
    if compiled:  # one code object per op: 3 shapes x 2 devices stay under dynamo's cache limit
        fn = torch.compile(fn, dynamic=False)
    torch.manual_seed(0)
    inputs = [torch.randn(shape, device=device, requires_grad=True) for _ in range(n_inputs)]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        loss = fn(*inputs)
        grads = torch.autograd.grad(loss, inputs)
        sync()
        return grads

    for _ in range(3):  # compile and warm up outside the timing
        step()
    return step


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", ["bce_with_logits", "gan_d_loss"])
def test_loss_forward_backward(benchmark, op, impl, shape, device):
    if impl == "fastgan" and not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("fastgan._C is not built")
    benchmark.group = f"{op} fwd+bwd {device} {shape[0]}x{shape[1]}"
    benchmark.extra_info.update(op=op, impl=impl, device=device, shape=list(shape))
    benchmark(step_fn(op, impl, device, shape))


# The other kinds: one function object per (op, kind, impl), so that each compiled one has its
# own dynamo cache entry, as above.
KINDS = [k for k in ops.LOSS_KINDS if k != "bce"]
KIND_IMPLS = ["eager", "compiled", "fastgan"]


def _kind_fn(op, kind, impl):
    if op == "gan_d_loss":
        fn = ops.gan_d_loss if impl == "fastgan" else reference.gan_d_loss
        return lambda r, f: fn(r, f, kind=kind)
    fn = ops.gan_g_loss if impl == "fastgan" else reference.gan_g_loss
    return lambda f: fn(f, kind=kind)


KIND_FUNCS = {
    (op, kind, impl): _kind_fn(op, kind, impl)
    for op in ("gan_d_loss", "gan_g_loss")
    for kind in KINDS
    for impl in KIND_IMPLS
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("impl", KIND_IMPLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", ["gan_d_loss", "gan_g_loss"])
def test_gan_loss_kinds_forward_backward(benchmark, op, kind, impl, shape, device):
    if impl == "fastgan" and not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("fastgan._C is not built")
    benchmark.group = f"{op} {kind} fwd+bwd {device} {shape[0]}x{shape[1]}"
    benchmark.extra_info.update(op=op, kind=kind, impl=impl, device=device, shape=list(shape))
    fn = KIND_FUNCS[op, kind, impl]
    benchmark(timed_step(fn, impl == "compiled", 2 if op == "gan_d_loss" else 1, device, shape))
