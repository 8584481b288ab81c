"""fastgan: fast small GANs in PyTorch on fused C++/CUDA kernels.

import fastgan
fastgan.build_info()          # what was compiled
from fastgan import ops       # fused functional ops (autograd-aware)
import fastgan.nn as fnn      # modules on those ops
"""

import torch

from fastgan import _extension

__version__ = "0.1.0"


def build_info():
    """What this installation runs on: the compiled kernels, CUDA archs, OpenMP and threads."""
    return {
        "version": __version__,
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "cpu_kernels": _extension.available,
        "cuda_kernels": _extension.with_cuda,
        "cuda_arch_list": _extension.cuda_arch_list,
        "cuda_available": torch.cuda.is_available(),
        "openmp": _extension.openmp,
        "num_threads": torch.get_num_threads(),
        "extension_error": _extension.error,
    }


from fastgan import nn, ops, optim  # noqa: E402  (after build_info: they import _extension)
from fastgan.convert import convert  # noqa: E402,F401  (fastgan.convert(model): the function; its module is fastgan.convert)
from fastgan.fit import fit  # noqa: E402,F401  (fastgan.fit(G, D, data): the function; it loads the trainer when called)

__all__ = ["__version__", "build_info", "ops", "nn", "optim", "convert", "fit"]

# The heavier subpackages load on first use: `import fastgan` then fastgan.metrics.evaluate(...)
# works as in the README, without importing the trainer, models and data for the ops alone.
_LAZY = ("bench", "data", "metrics", "models", "train")


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"fastgan.{name}")
    raise AttributeError(f"module 'fastgan' has no attribute {name!r}")
