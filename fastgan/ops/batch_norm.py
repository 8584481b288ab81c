"""Batch norm, optionally fused with LeakyReLU: y = act((x - mean) * invstd * weight + bias).

Kernels: csrc/batch_norm.h (math), csrc/cpu/batch_norm.cpp, csrc/cuda/batch_norm.cu,
csrc/autograd/batch_norm.cpp (autograd, double backward).

The op torch.ops.fastgan.batch_norm returns (y, save_mean, save_invstd) and updates the
running stats in place in training mode; this module's batch_norm returns y only.
"""

import torch

from fastgan import _extension
from fastgan.ops import _checks, reference

OP = "batch_norm"


def _acc_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_args(
    x,
    weight,
    bias,
    running_mean,
    running_var,
    training,
    momentum,
    eps,
    negative_slope,
    num_batches_tracked=None,
    empty_ok=False,
):
    """The checks csrc/batch_norm.h:check_batch_norm_args makes, with the same messages.
    empty_ok: but an empty x in training, which the op refuses and batch_norm below takes."""
    _checks.float_tensor(OP, "x", x)
    if x.dim() < 2:
        raise ValueError(f"{OP}: x must have at least 2 dims (N, C, ...), got shape {tuple(x.shape)}")
    if training and x.numel() == 0 and not empty_ok:
        raise ValueError(
            f"{OP}: x must not be empty when training (an empty batch has no statistics), got shape {tuple(x.shape)}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _checks.channel_vector(OP, name, t, x, x.shape[1])
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{OP}: running_mean and running_var must either both be None or neither be None")
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None:
            _checks.channel_vector(OP, name, t, x, x.shape[1])
    if num_batches_tracked is not None:
        n = num_batches_tracked
        if not isinstance(n, torch.Tensor) or n.dtype != torch.int64:
            raise TypeError(
                f"{OP}: num_batches_tracked must be int64, got "
                f"{n.dtype if isinstance(n, torch.Tensor) else type(n).__name__}"
            )
        if n.numel() != 1:
            raise ValueError(f"{OP}: num_batches_tracked must hold one number, got shape {tuple(n.shape)}")
        if n.device != x.device:
            raise ValueError(f"{OP}: num_batches_tracked must be on x's device {x.device}, got {n.device}")
    if not training and running_mean is None:
        raise ValueError(f"{OP}: running_mean and running_var must be given when training is False")
    if training and x.numel() != 0 and x.numel() // x.shape[1] <= 1:
        raise ValueError(f"{OP}: Expected more than 1 value per channel when training, got input size {list(x.shape)}")
    _checks.number(OP, "momentum", momentum)
    _checks.number(OP, "eps", eps, minimum=0.0)
    if training and eps <= 0:
        raise ValueError(f"{OP}: eps must be > 0 when training (a constant channel's variance is 0), got {eps}")
    if negative_slope is not None:
        _checks.number(OP, "negative_slope", negative_slope)


_forward = _extension.op("batch_norm")

if _forward is not None:

    @torch.library.register_fake("fastgan::batch_norm")
    def _fake_forward(
        x, weight, bias, running_mean, running_var, training, momentum, eps, negative_slope, num_batches_tracked=None
    ):
        check_args(
            x, weight, bias, running_mean, running_var, training, momentum, eps, negative_slope, num_batches_tracked
        )
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_checks.out_layout(x))
        acc = _acc_dtype(x)
        return y, x.new_empty((x.shape[1],), dtype=acc), x.new_empty((x.shape[1],), dtype=acc)

    @torch.library.register_fake("fastgan::batch_norm_backward")
    def _fake_backward(grad, x, weight, bias, save_mean, save_invstd, training, negative_slope, output_mask):
        if output_mask[0]:
            dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_checks.out_layout(x))
        else:
            dx = x.new_empty((0,))
        acc = _acc_dtype(x)
        channels = x.shape[1]
        dw = x.new_empty((channels if output_mask[1] else 0,), dtype=acc if weight is None else weight.dtype)
        db = x.new_empty((channels if output_mask[2] else 0,), dtype=acc if bias is None else bias.dtype)
        return dx, dw, db


def _empty_training_batch(x, weight, bias, num_batches_tracked):
    """What torch's batch norm gives an empty batch in training (aten's _batch_norm_impl_index):
    an empty y still in the graph of x, weight and bias (whose gradients are zeros), running
    stats untouched; the batch is counted all the same, as torch.nn's modules count it."""
    y = x.clone()  # (in x's layout)
    if x.shape[1]:  # (torch indexes channel 0 even without channels: an IndexError)
        if weight is not None:
            y = y * weight[0]  # (a 0-d tensor: y keeps x's dtype)
        if bias is not None:
            y = y + bias[0]
    if num_batches_tracked is not None:
        num_batches_tracked.add_(1)
    return y


def batch_norm(
    x,
    weight,
    bias,
    running_mean,
    running_var,
    training,
    momentum=0.1,
    eps=1e-5,
    negative_slope=None,
    num_batches_tracked=None,
):
    """torch.nn.functional.batch_norm semantics; negative_slope not None fuses a LeakyReLU.

    x: (N, C) or (N, C, *) float tensor, any memory format (channels_last and channels_last_3d are kept).
    weight, bias, running_mean, running_var: None or (C,) tensors on x's device, with x's dtype
    (or float32 for float16/bfloat16 x). training: normalize with the batch's statistics and,
    when running stats are given, update them in place (momentum convention and unbiased
    variance as torch); otherwise normalize with the running stats. Differentiable in x,
    weight and bias, to any order. num_batches_tracked: None or torch.nn's int64 counter, which
    training adds 1 to inside the kernel (no launch of its own). An empty x in training gives
    what torch gives: an empty y, running stats untouched (the batch still counted), zero
    parameter gradients; no kernel runs.
    """
    if training and isinstance(x, torch.Tensor) and x.numel() == 0:
        check_args(
            x,
            weight,
            bias,
            running_mean,
            running_var,
            training,
            momentum,
            eps,
            negative_slope,
            num_batches_tracked,
            True,
        )
        return _empty_training_batch(x, weight, bias, num_batches_tracked)
    # exact floats go straight to the kernel; anything else (None, a bool, a string) gets the
    # Python checks' TypeError naming it instead of the dispatcher's RuntimeError
    numbers_ok = (
        type(momentum) is float and type(eps) is float and (negative_slope is None or type(negative_slope) is float)
    )
    if _forward is None or not numbers_ok:
        check_args(
            x, weight, bias, running_mean, running_var, training, momentum, eps, negative_slope, num_batches_tracked
        )
    if _forward is None:
        return reference.batch_norm(
            x, weight, bias, running_mean, running_var, training, momentum, eps, negative_slope, num_batches_tracked
        )
    return _forward(
        x, weight, bias, running_mean, running_var, bool(training), momentum, eps, negative_slope, num_batches_tracked
    )[0]
