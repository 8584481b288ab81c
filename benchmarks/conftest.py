"""Benchmarks: `pytest benchmarks/` (pytest-benchmark). CUDA cases skip without a GPU."""
import pytest
import torch

import fastgan

HAS_CUDA = torch.cuda.is_available() and fastgan.build_info()["cuda_kernels"]
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
