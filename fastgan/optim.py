"""fastgan.optim.Adam: torch.optim.Adam's update (no amsgrad) on fastgan's adam_ kernel.

On CUDA every parameter of a param group is updated in one launch that spreads over the
whole GPU (torch's fused Adam gives each 65536-element chunk one block), and the step count
stays on the device, so the step can be captured in a CUDA graph. (One launch per distinct
step count, dtype and device, to be exact: a parameter that missed a step keeps its own
count, as in torch.) The state (step,
exp_avg, exp_avg_sq per parameter) has torch.optim.Adam's names and shapes: state_dicts
load both ways.
"""
import torch

from fastgan import ops
from fastgan.ops import _checks


def laid_out_like(t, p):
    """t itself if its elements lie in memory as p's do (adam_ walks both as flat arrays), else a
    copy in p's layout: a parameter may be in any dense format (channels_last conv weights)."""
    if t.stride() == p.stride() or _checks.same_dense_layout(t, p):   # the first test: every step
        return t
    return torch.empty_like(p, memory_format=torch.preserve_format).copy_(t)


class Adam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if not 0.0 <= lr:
            raise ValueError(f"Adam: lr must be >= 0, got {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Adam: eps must be >= 0, got {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Adam: weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        # Each parameter's step count, on the host: adam_ takes one step count per launch, and
        # a parameter that had no gradient at some step (or was loaded with another count) is
        # behind the others, as in torch.optim.Adam. Kept here so that grouping the launches by
        # count never reads the device counters (no sync, capturable); normally one group.
        self._counts = {}
        self.register_load_state_dict_post_hook(Adam._count_loaded_steps)

    @staticmethod
    def _count_loaded_steps(optimizer):
        optimizer._counts = {p: int(s["step"]) for p, s in optimizer.state.items() if "step" in s}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            launches, steps = {}, []   # (step count before this step, dtype, device) -> adam_'s lists
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("fastgan.optim.Adam does not take sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    self._counts[p] = 0
                elif state["step"].device != p.device:  # loaded from a CPU-stepped torch Adam
                    state["step"] = state["step"].to(p.device, torch.float32)
                for name in ("exp_avg", "exp_avg_sq"):  # loaded for a parameter laid out otherwise
                    state[name] = laid_out_like(state[name], p)
                if p not in self._counts:   # state set by hand: read its count once
                    self._counts[p] = int(state["step"])
                key = (self._counts[p], p.dtype, p.device)   # what one adam_ launch must share
                params, grads, exp_avgs, exp_avg_sqs, counts = launches.setdefault(key, ([], [], [], [], []))
                params.append(p)
                grads.append(laid_out_like(p.grad, p))
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                counts.append(state["step"])
                self._counts[p] += 1
                steps.append(state["step"])
            if not steps:
                continue
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            for params, grads, exp_avgs, exp_avg_sqs, counts in launches.values():
                # the parameters of one launch share their step count: any of theirs serves
                ops.adam_(params, grads, exp_avgs, exp_avg_sqs, counts[0], group["lr"], beta1, beta2,
                          group["eps"], group["weight_decay"])
        return loss


__all__ = ["Adam"]
