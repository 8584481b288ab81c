"""The oracle: every fastgan op written in plain PyTorch.

Tests compare each kernel with these functions, and fastgan runs them where the compiled
extension is missing. Same signatures and semantics as the fused ops in fastgan.ops.
"""

import torch
import torch.nn.functional as F


def _channel_view(t, ndim):
    """A per-channel vector shaped to broadcast along dim 1 of an ndim-D tensor."""
    return t.view([1, -1] + [1] * (ndim - 2))


def bias_leaky_relu(x, bias=None, negative_slope=0.2, scale=1.0):
    """leaky_relu(x + bias, negative_slope) * scale, bias broadcast along dim 1."""
    dtype = x.dtype
    if bias is not None:
        x = x + _channel_view(bias, x.dim())  # float32 for a float32 bias of half x
    return (F.leaky_relu(x, negative_slope) * scale).to(dtype)


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
    """torch.nn.functional.batch_norm, followed by leaky_relu when negative_slope is not None;
    training adds 1 to num_batches_tracked when given (torch.nn's batch-norm counter)."""
    if training and num_batches_tracked is not None:
        num_batches_tracked.add_(1)
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return y if negative_slope is None else F.leaky_relu(y, negative_slope)


def bce_with_logits(logits, target, weight=None, pos_weight=None, reduction="mean"):
    """binary_cross_entropy_with_logits; a float target is a constant label."""
    if not torch.is_tensor(target):
        target = torch.full_like(logits, float(target))
    return F.binary_cross_entropy_with_logits(logits, target, weight, reduction=reduction, pos_weight=pos_weight)


def gan_d_loss(real_logits, fake_logits, real_label=1.0, fake_label=0.0, kind="bce"):
    """Discriminator loss of kind 'bce' (mean BCE(real, real_label) + mean BCE(fake, fake_label)),
    'hinge', 'lsgan' or 'wgan'; the labels are bce's."""
    if kind == "bce":
        return bce_with_logits(real_logits, real_label) + bce_with_logits(fake_logits, fake_label)
    if kind == "hinge":
        return torch.relu(1 - real_logits).mean() + torch.relu(1 + fake_logits).mean()
    if kind == "lsgan":
        return (real_logits - 1).pow(2).mean() / 2 + fake_logits.pow(2).mean() / 2
    if kind == "wgan":
        return fake_logits.mean() - real_logits.mean()
    raise ValueError(f"gan_d_loss: unknown kind {kind!r}")


def gan_g_loss(fake_logits, real_label=1.0, kind="bce"):
    """Generator loss: non-saturating mean BCE(D(G(z)), real_label) for 'bce', -mean D(G(z)) for
    'hinge' and 'wgan', mean (D(G(z)) - 1)^2 / 2 for 'lsgan'."""
    if kind == "bce":
        return bce_with_logits(fake_logits, real_label)
    if kind in ("hinge", "wgan"):
        return -fake_logits.mean()
    if kind == "lsgan":
        return (fake_logits - 1).pow(2).mean() / 2
    raise ValueError(f"gan_g_loss: unknown kind {kind!r}")


@torch.no_grad()
def adam_(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay):
    """One Adam step in place, the update torch's fused Adam makes; step counts this step."""
    s = float(step)
    step_size = lr / (1 - beta1**s)
    bc2_sqrt = (1 - beta2**s) ** 0.5
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        if weight_decay:
            g = g + weight_decay * p
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.sub_(step_size * m / (v.sqrt() / bc2_sqrt + eps))
