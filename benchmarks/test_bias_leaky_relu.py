"""bias_leaky_relu forward+backward: fastgan vs PyTorch eager vs torch.compile.
The cases are fastgan.bench.ops's, the same code `fastgan bench ops` times."""

import pytest
import torch

from fastgan.bench.ops import DTYPES, SHAPES, bias_leaky_relu_case

from conftest import DEVICES, bench_step


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape,layout", SHAPES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v)
@pytest.mark.parametrize("impl", ["eager", "compile", "fastgan"])
def test_bias_leaky_relu(benchmark, device, dtype, shape, layout, impl):
    if device == "cpu" and torch.Size(shape).numel() > 1 << 22:
        pytest.skip("the largest shape is for the GPU")
    torch._dynamo.reset()
    benchmark.group = f"bias_leaky_relu {device} {dtype} {'x'.join(map(str, shape))} {layout}"
    step, _ = bias_leaky_relu_case(shape, layout, DTYPES[dtype], device, impl)
    bench_step(benchmark, step, device)
