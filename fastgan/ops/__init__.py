"""fastgan's fused ops: autograd-aware, with CPU and CUDA kernels.

Each op runs the compiled kernel where fastgan._C is built, else its reference in
fastgan.ops.reference (the oracle the tests compare the kernels with).
"""

from fastgan.ops import reference  # noqa: F401
from fastgan.ops.adam import adam_
from fastgan.ops.batch_norm import batch_norm
from fastgan.ops.bias_leaky_relu import bias_leaky_relu
from fastgan.ops.losses import LOSS_KINDS, bce_with_logits, gan_d_loss, gan_g_loss

__all__ = [
    "LOSS_KINDS",
    "adam_",
    "bias_leaky_relu",
    "batch_norm",
    "bce_with_logits",
    "gan_d_loss",
    "gan_g_loss",
    "reference",
]
