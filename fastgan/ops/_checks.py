"""Argument checks shared by the ops' fake kernels and reference fallbacks.

The compiled kernels check the same things in C++ (csrc/common.h and each op's header) with the same messages;
every message names the op and the argument.
"""

import math
import numbers

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def number(op, name, value, minimum=None, exclusive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{op}: {name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        rel = ">" if exclusive else ">="
        raise ValueError(f"{op}: {name} must be {rel} {minimum}, got {value}")
    return value


def float_tensor(op, name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32, float64, float16 or bfloat16, got {t.dtype}")


HALF_DTYPES = (torch.float16, torch.bfloat16)


def channel_vector(op, name, t, x, channels):
    """t: a 1-D per-channel tensor (a bias, batch-norm parameters and statistics) with `channels`
    elements on x's device, in x's dtype or, for float16/bfloat16 x, float32 (a model's
    parameters under autocast, which the kernels read as they are)."""
    float_tensor(op, name, t)
    if t.dim() != 1 or t.numel() != channels:
        raise ValueError(f"{op}: {name} must have shape ({channels},) (x.shape[1]), got {tuple(t.shape)}")
    half = x.dtype in HALF_DTYPES
    if t.dtype != x.dtype and not (half and t.dtype == torch.float32):
        extra = " (or torch.float32)" if half else ""
        raise TypeError(f"{op}: {name} must have x's dtype {x.dtype}{extra}, got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"{op}: {name} must be on x's device {x.device}, got {t.device}")


def dense(t):
    """True when t's elements fill one block of memory without gaps or overlaps (contiguous in
    some order of its dimensions, as channels_last is); size-1 dimensions never move an element."""
    expected = 1
    for size, stride in sorted(((n, s) for n, s in zip(t.shape, t.stride()) if n > 1), key=lambda ns: ns[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def same_dense_layout(t, p):
    """t is dense and its elements lie in memory as p's do (a kernel may walk both as flat arrays)."""
    return dense(t) and all(a == b for a, b, n in zip(t.stride(), p.stride(), p.shape) if n > 1)


def out_layout(x):
    """The memory format fastgan's kernels give outputs shaped like x: channels_last (4-D) and
    channels_last_3d (5-D) are kept, as torch's modules keep them."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format
