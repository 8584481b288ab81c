"""BCE-with-logits and the GAN losses (issue 5 adds the C++/CUDA kernels).

Until the kernels land these run fastgan.ops.reference.
"""
from fastgan.ops import reference


def bce_with_logits(logits, target, weight=None, pos_weight=None, reduction="mean"):
    """binary_cross_entropy_with_logits; target may be a Python float (a constant label)."""
    return reference.bce_with_logits(logits, target, weight, pos_weight, reduction)


def gan_d_loss(real_logits, fake_logits, real_label=1.0, fake_label=0.0):
    """mean BCE(real, real_label) + mean BCE(fake, fake_label)."""
    return reference.gan_d_loss(real_logits, fake_logits, real_label, fake_label)


def gan_g_loss(fake_logits, real_label=1.0):
    """Non-saturating generator loss: mean BCE(fake, real_label)."""
    return reference.gan_g_loss(fake_logits, real_label)
