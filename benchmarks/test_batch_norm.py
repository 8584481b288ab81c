"""batch_norm and batch_norm + LeakyReLU, forward + backward (training mode, running stats
updated): PyTorch eager (F.batch_norm [+ F.leaky_relu]; cuDNN on CUDA), torch.compile of the
same function, and fastgan.ops.batch_norm. The cases are fastgan.bench.ops's, the same code
`fastgan bench ops` times.

    pytest benchmarks/test_batch_norm.py --benchmark-group-by=group --benchmark-columns=median,iqr,rounds
    pytest benchmarks/test_batch_norm.py -k cpu      # CPU only; CUDA cases skip without a GPU

Each timed call runs the forward and torch.autograd.grad for x, weight and bias; on CUDA it
synchronizes before returning, so the time is the GPU's.
"""

import pytest
import torch

import fastgan
from fastgan.bench.ops import DTYPES, SHAPES, batch_norm_case

from conftest import DEVICES, bench_step


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,layout", SHAPES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("act", [False, True], ids=["bn", "bn+lrelu"])
@pytest.mark.parametrize("impl", ["eager", "compile", "fastgan"])
def test_batch_norm_forward_backward(benchmark, device, shape, layout, dtype, act, impl):
    if device == "cpu" and shape == (8192, 4096):
        pytest.skip("CUDA-only size")
    if impl == "fastgan" and not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("fastgan._C is not built")
    torch._dynamo.reset()
    torch.manual_seed(0)
    benchmark.group = f"{device} {'x'.join(map(str, shape))} {layout} {dtype} {'bn+lrelu' if act else 'bn'}"
    benchmark.extra_info.update(device=device, shape=list(shape), layout=layout, dtype=dtype, impl=impl)
    step, _ = batch_norm_case(shape, layout, DTYPES[dtype], device, impl, act)
    bench_step(benchmark, step, device)
