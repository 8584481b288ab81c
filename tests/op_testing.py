"""Shared by the op tests: the devices to run on, per-dtype tolerances, and comparisons
against fastgan.ops.reference computed in float32 (float64 for float64 inputs)."""

import zlib

import pytest
import torch

import fastgan

HAS_CUDA = torch.cuda.is_available() and fastgan.build_info()["cuda_kernels"]
requires_kernels = pytest.mark.skipif(not fastgan.build_info()["cpu_kernels"], reason="fastgan._C is not built")


def seed_for(*case):
    """Seeds torch's generator from a test case's parameters, the same in every run (Python's
    hash() of strings changes from process to process, so a failure could not be replayed)."""
    torch.manual_seed(zlib.crc32(repr(case).encode()))


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and the CUDA kernels")]
    ),
]

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# (rtol, atol) for forward values and for gradients, against the float32 reference.
FORWARD_TOL = {
    torch.float32: (1e-5, 1e-6),
    torch.float64: (1e-10, 1e-12),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
GRAD_TOL = {
    torch.float32: (1e-4, 1e-5),
    torch.float64: (1e-9, 1e-11),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (3e-2, 3e-2),
}


def ref_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def assert_close(actual, expected, tol, what=""):
    rtol, atol = tol
    torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def scaled_atol(tol, magnitude):
    """Tolerance for a sum over many elements: absolute error grows with its magnitude."""
    rtol, atol = tol
    return rtol, max(atol, rtol * float(magnitude))
