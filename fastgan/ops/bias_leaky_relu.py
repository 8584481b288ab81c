"""Fused bias + LeakyReLU: y = leaky_relu(x + bias, negative_slope) * scale.

Kernels: csrc/bias_leaky_relu.h (math), csrc/cpu/bias_leaky_relu.cpp,
csrc/cuda/bias_leaky_relu.cu, csrc/autograd/bias_leaky_relu.cpp (autograd, double backward).
"""

import torch

from fastgan import _extension
from fastgan.ops import _checks, reference

OP = "bias_leaky_relu"


def check_args(x, bias, negative_slope, scale):
    _checks.float_tensor(OP, "x", x)
    if x.dim() < 2:
        raise ValueError(f"{OP}: x must have at least 2 dims (N, C, ...), got shape {tuple(x.shape)}")
    if bias is not None:
        _checks.channel_vector(OP, "bias", bias, x, x.shape[1])
    _checks.number(OP, "negative_slope", negative_slope, minimum=0.0)
    _checks.number(OP, "scale", scale, minimum=0.0, exclusive=True)


_forward = _extension.op("bias_leaky_relu")

if _forward is not None:

    @torch.library.register_fake("fastgan::bias_leaky_relu")
    def _fake_forward(x, bias, negative_slope, scale):
        check_args(x, bias, negative_slope, scale)
        return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_checks.out_layout(x))

    @torch.library.register_fake("fastgan::bias_leaky_relu_backward")
    def _fake_backward(grad, y, negative_slope, scale, bias_dtype):
        gx = torch.empty(y.shape, dtype=y.dtype, device=y.device, memory_format=_checks.out_layout(y))
        gb = y.new_empty((y.shape[1] if bias_dtype is not None else 0,), dtype=bias_dtype or y.dtype)
        return gx, gb


def bias_leaky_relu(x, bias=None, negative_slope=0.2, scale=1.0):
    """leaky_relu(x + bias, negative_slope) * scale in one pass.

    x: (N, C) or (N, C, *) float tensor, any memory format (channels_last and channels_last_3d are kept).
    bias: None or a (C,) tensor on x's device, broadcast along dim 1, of x's dtype or, for a
    float16/bfloat16 x, float32 (a model's float32 parameter under autocast: read as it is,
    no cast kernel, and its gradient comes back in float32). y has x's dtype.
    negative_slope >= 0, scale > 0. Differentiable to any order in x and bias.
    """
    # exact floats go straight to the kernel; anything else (None, a bool, a string) gets the
    # Python checks' TypeError naming it instead of the dispatcher's RuntimeError
    if _forward is None or type(negative_slope) is not float or type(scale) is not float:
        check_args(x, bias, negative_slope, scale)
    if _forward is None:
        return reference.bias_leaky_relu(x, bias, negative_slope, scale)
    return _forward(x, bias, negative_slope, scale)
