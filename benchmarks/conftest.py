"""Benchmarks: `pytest benchmarks/` (pytest-benchmark). CUDA cases skip without a GPU."""

import pytest
import torch

import fastgan
from fastgan.bench.timing import strict_float32

HAS_CUDA = torch.cuda.is_available() and fastgan.build_info()["cuda_kernels"]


@pytest.fixture(autouse=True, scope="session")
def _strict_float32():
    """TF32 off for matrix products and cuDNN, as `fastgan bench` measures (cuDNN allows TF32 by
    default, which made the DCGAN rows here TF32 where the bench's are not); restored after."""
    with strict_float32():
        yield


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU"))]


def bench_step(benchmark, step, device):
    """Time step() with pytest-benchmark, synchronizing CUDA so each round covers the GPU work."""
    if device == "cuda":

        def run():
            step()
            torch.cuda.synchronize()
    else:
        run = step
    for _ in range(3):  # warm-up: compilation, allocator, autotuning
        run()
    benchmark.pedantic(run, rounds=30, iterations=5, warmup_rounds=2)
