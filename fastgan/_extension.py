"""Loads the compiled kernels (fastgan._C) once; without them fastgan runs its reference path.

Importing fastgan._C registers the `torch.ops.fastgan.*` operators with the dispatcher.
FASTGAN_NO_EXTENSION=1 skips it (to test or compare the reference path).
"""

import os
import warnings

import torch

_C = None
error = None

if os.environ.get("FASTGAN_NO_EXTENSION") == "1":
    error = "disabled by FASTGAN_NO_EXTENSION=1"
else:
    try:
        from fastgan import _C  # noqa: F401  (registers torch.ops.fastgan.*)
    except ImportError as exc:  # not built, or built against another torch
        error = f"{type(exc).__name__}: {exc}"

available = _C is not None
with_cuda = bool(getattr(_C, "with_cuda", False))
cuda_arch_list = getattr(_C, "cuda_arch_list", "") if with_cuda else ""
openmp = bool(getattr(_C, "openmp", False))

if not available:
    warnings.warn(
        f"fastgan: compiled kernels are not available ({error}); running the pure-PyTorch "
        "reference implementation, which is correct but slow. Reinstall with "
        "`pip install --no-build-isolation .` to build them.",
        RuntimeWarning,
        stacklevel=2,
    )


def op(name):
    """The OpOverload torch.ops.fastgan.<name>.default, or None where the kernels are missing."""
    if not available:
        return None
    return getattr(torch.ops.fastgan, name).default
