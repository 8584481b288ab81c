"""adam_: one Adam step for a list of parameters in one pass (fastgan.optim.Adam uses it).

Kernels: csrc/adam.h (math), csrc/cpu/adam.cpp, csrc/cuda/adam.cu.
"""

import torch

from fastgan import _extension
from fastgan.ops import _checks, reference

OP = "adam_"


def check_args(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay):
    n = len(params)
    if not (len(grads) == len(exp_avgs) == len(exp_avg_sqs) == n):
        raise ValueError(
            f"{OP}: params, grads, exp_avgs and exp_avg_sqs must have the same length, got "
            f"{n}, {len(grads)}, {len(exp_avgs)}, {len(exp_avg_sqs)}"
        )
    for i, p in enumerate(params):
        if p.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{OP}: params[{i}] must be float32 or float64, got {p.dtype}")
        if not _checks.dense(p):
            raise ValueError(
                f"{OP}: params[{i}] must be dense (contiguous in some memory format), got strides {list(p.stride())}"
            )
        for name, t in (("grads", grads[i]), ("exp_avgs", exp_avgs[i]), ("exp_avg_sqs", exp_avg_sqs[i])):
            if t.shape != p.shape:
                raise ValueError(
                    f"{OP}: {name}[{i}] must have params[{i}]'s shape {tuple(p.shape)}, got {tuple(t.shape)}"
                )
            if t.dtype != p.dtype:
                raise TypeError(f"{OP}: {name}[{i}] must have params[{i}]'s dtype {p.dtype}, got {t.dtype}")
            if not _checks.same_dense_layout(t, p):
                raise ValueError(
                    f"{OP}: {name}[{i}] must have params[{i}]'s memory layout (strides "
                    f"{list(p.stride())}), got strides {list(t.stride())}"
                )
    _checks.number(OP, "lr", lr, minimum=0.0)
    for name, b in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= _checks.number(OP, name, b) < 1.0:
            raise ValueError(f"{OP}: {name} must be in [0, 1), got {b}")
    _checks.number(OP, "eps", eps, minimum=0.0)
    _checks.number(OP, "weight_decay", weight_decay, minimum=0.0)


_kernel = _extension.op("adam_")

if _kernel is not None:

    @torch.library.register_fake("fastgan::adam_")
    def _fake(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay):
        check_args(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay)
        return None


def adam_(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps=1e-8, weight_decay=0.0):
    """params -= Adam update, in place, with exp_avgs/exp_avg_sqs updated; `step` (a 1-element
    float32 tensor, on the parameters' device for CUDA) is the step count including this one."""
    if _kernel is None:
        check_args(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay)
        return reference.adam_(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay)
    _kernel(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay)
