"""batch_norm and batch_norm + LeakyReLU, forward + backward (training mode, running stats
updated): PyTorch eager (F.batch_norm [+ F.leaky_relu]; cuDNN on CUDA), torch.compile of the
same function, and fastgan.ops.batch_norm.

    pytest benchmarks/test_batch_norm.py --benchmark-group-by=group --benchmark-columns=median,iqr,rounds
    pytest benchmarks/test_batch_norm.py -k cpu      # CPU only; CUDA cases skip without a GPU

Each timed call runs the forward and torch.autograd.grad for x, weight and bias; on CUDA it
synchronizes before returning, so the time is the GPU's.
"""
import pytest
import torch
import torch.nn.functional as F

import fastgan
from fastgan import ops

HAS_CUDA = torch.cuda.is_available() and fastgan.build_info()["cuda_kernels"]

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and the CUDA kernels")]),
]
SHAPES = [
    ((64, 1024), "contiguous"),        # MLP GAN hidden layer, batch 64
    ((1024, 1024), "contiguous"),
    ((8192, 4096), "contiguous"),      # CUDA only: large rows x channels
    ((256, 128, 14, 14), "channels_last"),  # DCGAN feature map
]
DTYPES = [torch.float32, torch.bfloat16]
SLOPE = 0.2


def eager(x, w, b, rm, rv, act):
    y = F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)
    return F.leaky_relu(y, SLOPE) if act else y


def fused(x, w, b, rm, rv, act):
    return ops.batch_norm(x, w, b, rm, rv, True, 0.1, 1e-5, SLOPE if act else None)


_compiled = {}


def compiled(act):
    if act not in _compiled:
        _compiled[act] = torch.compile(eager, dynamic=False)
    return _compiled[act]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,layout", SHAPES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("act", [False, True], ids=["bn", "bn+lrelu"])
@pytest.mark.parametrize("impl", ["eager", "compile", "fastgan"])
def test_batch_norm_forward_backward(benchmark, device, shape, layout, dtype, act, impl):
    if device == "cpu" and shape == (8192, 4096):
        pytest.skip("CUDA-only size")
    if impl == "fastgan" and not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("fastgan._C is not built")
    torch.manual_seed(0)
    x = torch.randn(shape, device=device).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    c = shape[1]
    # parameters and running stats in float32 for bfloat16 activations, as under autocast
    w = torch.ones(c, device=device, requires_grad=True)
    b = torch.zeros(c, device=device, requires_grad=True)
    rm, rv = torch.zeros(c, device=device), torch.ones(c, device=device)
    g = torch.randn(shape, device=device).to(dtype)
    if layout == "channels_last":
        g = g.to(memory_format=torch.channels_last)
    fn = {"eager": eager, "fastgan": fused}.get(impl) or compiled(act)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        y = fn(x, w, b, rm, rv, act)
        grads = torch.autograd.grad(y, (x, w, b), g)
        sync()
        return grads

    for _ in range(3):  # warm up: compile, cuDNN / allocator caches
        step()
    benchmark.group = f"{device} {'x'.join(map(str, shape))} {layout} {str(dtype).split('.')[-1]} " \
                      f"{'bn+lrelu' if act else 'bn'}"
    benchmark.extra_info.update(device=device, shape=list(shape), layout=layout, dtype=str(dtype), impl=impl)
    benchmark.pedantic(step, rounds=20 if device == "cpu" else 100, iterations=1, warmup_rounds=1)
