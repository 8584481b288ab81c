"""Batch norm, optionally fused with LeakyReLU (issue 4 adds the C++/CUDA kernels).

Until the kernels land this runs fastgan.ops.reference.batch_norm.
"""
from fastgan.ops import reference


def batch_norm(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5,
               negative_slope=None):
    """torch.nn.functional.batch_norm semantics; negative_slope not None fuses a LeakyReLU."""
    return reference.batch_norm(x, weight, bias, running_mean, running_var, training, momentum,
                                eps, negative_slope)
