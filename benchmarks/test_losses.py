"""Loss benchmarks: BCE-with-logits and the GAN discriminator loss, forward + backward.

    pytest benchmarks/test_losses.py                      # CPU and, where present, CUDA
    pytest benchmarks/test_losses.py -k cpu --benchmark-columns=median,iqr,ops

Implementations compared at (64, 1), (1024, 1) and (4194304, 1) logits:
  eager_sigmoid_bce  the tutorials: sigmoid + BCELoss against freshly allocated ones/zeros
  eager_bce_logits   F.binary_cross_entropy_with_logits against ones/zeros tensors
  compiled           torch.compile (inductor) of eager_bce_logits
  fastgan            fastgan.ops.bce_with_logits(x, 1.0) / fastgan.ops.gan_d_loss(real, fake)
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
    fn = FUNCS[op][impl]
    if impl == "compiled":  # one code object per op: 3 shapes x 2 devices stay under dynamo's cache limit
        fn = torch.compile(fn, dynamic=False)
    torch.manual_seed(0)
    inputs = [torch.randn(shape, device=device, requires_grad=True) for _ in range(1 if op == "bce_with_logits" else 2)]
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
