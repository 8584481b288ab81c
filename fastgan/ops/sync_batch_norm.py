"""Batch norm (optionally fused with LeakyReLU) over the global batch of data-parallel ranks,
as one process over all their rows would compute it: what torch.nn.SyncBatchNorm does, with
fastgan's fused normalize + activation kernel.

Forward: each rank's per-channel count, mean and M2 (sum of squared deviations) go into its
row of a (world, 1 + 2C) table, one all-reduce fills the table on every rank, and Chan's
formula merges the rows (stable, unlike summing x and x^2); the fused batch_norm op then
normalizes with the global mean and variance. Backward: the per-channel sums of the upstream
gradient and of it times x_hat are all-reduced (one call), so that each rank's dx carries the
statistics' share of every rank's loss; the weight and bias gradients stay this rank's own
(the trainer's gradient average over the ranks completes them, as for any parameter). The
running statistics are updated as one process over the global batch would (unbiased
variance with the global count).

First order only: a double backward (R1, WGAN-GP through a synchronized batch norm) is refused.
"""

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from fastgan.ops.batch_norm import batch_norm, check_args


def _acc_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _channel_view(t, x):
    return t.view(1, -1, *[1] * (x.dim() - 2))


def _reduce_dims(x):
    return [0, *range(2, x.dim())]


def global_statistics(x, group=None):
    """(mean, biased variance, count) per channel over the rows of x on every rank of `group`
    (in float32, float64 for float64 x): one all-reduce of each rank's (count, mean, M2)."""
    channels = x.shape[1]
    acc = _acc_dtype(x)
    count = x.numel() // channels if channels else 0
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    table = torch.zeros(world, 1 + 2 * channels, dtype=acc, device=x.device)
    if count:  # an empty part adds nothing (its mean would be NaN)
        var, mean = torch.var_mean(x.to(acc), dim=_reduce_dims(x), correction=0)
        table[rank, 0] = count
        table[rank, 1 : 1 + channels] = mean
        table[rank, 1 + channels :] = var * count
    dist.all_reduce(table, group=group)
    n, means, m2s = table[:, :1], table[:, 1 : 1 + channels], table[:, 1 + channels :]
    total = n.sum()
    mean = (n * means).sum(0) / total
    m2 = m2s.sum(0) + (n * (means - mean).square()).sum(0)  # Chan et al.'s parallel merge
    return mean, m2 / total, total


class _SyncBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, factor, eps, negative_slope, counter, group):
        mean, var, total = global_statistics(x, group)
        if running_mean is not None:
            running_mean.lerp_(mean.to(running_mean.dtype), factor)
            unbiased = var * (total / (total - 1).clamp(min=1))
            running_var.lerp_(unbiased.to(running_var.dtype), factor)
        if counter is not None:
            counter.add_(1)
        y = batch_norm(x, weight, bias, mean, var, False, 0.0, eps, negative_slope)
        invstd = (var + eps).rsqrt()
        ctx.save_for_backward(x, weight, bias, mean, invstd, total)
        ctx.negative_slope, ctx.group = negative_slope, group
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, bias, mean, invstd, total = ctx.saved_tensors
        acc = mean.dtype
        xhat = (x.to(acc) - _channel_view(mean, x)) * _channel_view(invstd, x)
        g = dy.to(acc)
        if ctx.negative_slope is not None:  # the fused LeakyReLU's derivative at z = w * xhat + b
            z = xhat
            if weight is not None:
                z = z * _channel_view(weight.to(acc), x)
            if bias is not None:
                z = z + _channel_view(bias.to(acc), x)
            g = torch.where(z > 0, g, g * ctx.negative_slope)
        dims = _reduce_dims(x)
        sum_g, sum_gx = g.sum(dims), (g * xhat).sum(dims)
        dx = None
        if ctx.needs_input_grad[0]:
            both = torch.cat([sum_g, sum_gx])
            dist.all_reduce(both, group=ctx.group)
            channels = x.shape[1]
            scale = invstd if weight is None else invstd * weight.to(acc)
            dx = (g - _channel_view(both[:channels] / total, x) - xhat * _channel_view(both[channels:] / total, x)) * (
                _channel_view(scale, x)
            )
            dx = dx.to(x.dtype)
        dw = sum_gx.to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        db = sum_g.to(bias.dtype) if bias is not None and ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None, None, None, None, None, None


def sync_batch_norm(
    x,
    weight,
    bias,
    running_mean,
    running_var,
    momentum=0.1,
    eps=1e-5,
    negative_slope=None,
    num_batches_tracked=None,
    group=None,
):
    """Training-mode batch_norm (fastgan.ops.batch_norm's arguments) with the statistics of the
    global batch over the ranks of `group` (default: the whole process group, which must be
    initialized). Differentiable once in x, weight and bias."""
    check_args(
        x, weight, bias, running_mean, running_var, True, momentum, eps, negative_slope, num_batches_tracked, True
    )
    momentum, eps = float(momentum), float(eps)
    return _SyncBatchNorm.apply(
        x, weight, bias, running_mean, running_var, momentum, eps, negative_slope, num_batches_tracked, group
    )
