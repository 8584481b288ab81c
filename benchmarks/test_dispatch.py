"""Per-call cost of the autograd front end: C++ autograd kernel vs Python register_autograd
around the same kernels (fastgan.bench.dispatch), at the MLP GAN's (64, 1024)."""

import pytest

from fastgan.bench.dispatch import make_step

from conftest import DEVICES, bench_step


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("front_end", ["cpp", "python"])
def test_autograd_front_end(benchmark, device, front_end):
    benchmark.group = f"autograd front end {device}"
    bench_step(benchmark, make_step(front_end, (64, 1024), device), device)
