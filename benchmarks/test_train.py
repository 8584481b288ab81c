"""Whole training steps (fastgan.bench.train): the tutorial's PyTorch, torch.compile of it,
the best plain PyTorch (CUDA graph), and fastgan without and with its CUDA graph."""

import pytest
import torch

from fastgan.bench.train import IMPLS, make

from conftest import DEVICES, bench_step


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model", ["mlp", "mlp-bn", "dcgan"])
@pytest.mark.parametrize("impl", IMPLS)
def test_train_step(benchmark, device, model, impl):
    if device == "cpu" and impl in ("expert", "graph"):
        pytest.skip("CUDA graphs need a GPU")
    if device == "cpu" and model == "dcgan" and impl == "compile":
        pytest.skip("minutes of CPU compilation")
    torch._dynamo.reset()
    benchmark.group = f"train step {model} batch 64 {device}"
    step = make(impl, model, 64, device)
    for _ in range(5):
        step()
    bench_step(benchmark, step, device)
