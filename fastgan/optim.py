"""fastgan.optim.Adam: torch.optim.Adam's update (no amsgrad) on fastgan's adam_ kernel.

It takes every torch.optim.Adam keyword and keeps it in its param groups (as torch does, so that
state_dicts load both ways), and refuses, with a ValueError naming it, only a setting whose update
or autograd it does not make: amsgrad, maximize, decoupled_weight_decay or differentiable True.
foreach and fused choose among torch's implementations (this one is a single fused launch
whatever they say) and the step count always stays on the device (capturable either way), so
any value of foreach, fused and capturable is taken.

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
    if t.stride() == p.stride() or _checks.same_dense_layout(t, p):  # the first test: every step
        return t
    return torch.empty_like(p, memory_format=torch.preserve_format).copy_(t)


DTYPES = (torch.float32, torch.float64)
# torch.optim.Adam options this Adam does not implement: refused when true, at construction, in
# add_param_group and in a loaded state_dict (which would otherwise silently run plain Adam)
UNSUPPORTED = ("amsgrad", "maximize", "decoupled_weight_decay", "differentiable")

# torch.optim.Adam's other keywords and their defaults, which every param group holds
FLAG_DEFAULTS = dict(
    amsgrad=False,
    foreach=None,
    maximize=False,
    capturable=False,
    differentiable=False,
    fused=None,
    decoupled_weight_decay=False,
)


def _refuse_unsupported(group, where):
    for key in UNSUPPORTED:
        if group.get(key):
            value = group[key]
            raise ValueError(f"fastgan.optim.Adam: {key}={value!r} {where}is not implemented; use torch.optim.Adam")


class Adam(torch.optim.Optimizer):
    """torch.optim.Adam(params, lr, betas, eps, weight_decay, ...) for dense float32/float64
    parameters (torch's signature; see the module's docstring for the keywords refused). Step
    counts are mirrored on the host (see __init__): change them through load_state_dict, not by
    editing state[p]["step"] in place."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        amsgrad=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
        fused=None,
        decoupled_weight_decay=False,
    ):
        if not 0.0 <= lr:
            raise ValueError(f"Adam: lr must be >= 0, got {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Adam: eps must be >= 0, got {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Adam: weight_decay must be >= 0, got {weight_decay}")
        flags = dict(
            amsgrad=amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        _refuse_unsupported(flags, "")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **flags))
        # Each parameter's step count, on the host: adam_ takes one step count per launch, and
        # a parameter that had no gradient at some step (or was loaded with another count) is
        # behind the others, as in torch.optim.Adam. Kept here so that grouping the launches by
        # count never reads the device counters (no sync, capturable); normally one group.
        self._counts = {}
        self.register_load_state_dict_pre_hook(Adam._check_loaded_groups)
        self.register_load_state_dict_post_hook(Adam._count_loaded_steps)

    def add_param_group(self, param_group):
        """torch's, plus a check that adam_ can update every parameter (at construction, not at
        the first step), and that the group turns on no option it does not implement."""
        group = len(self.param_groups)
        _refuse_unsupported(param_group, f"in param group {group} ")
        params = param_group["params"]
        if isinstance(params, torch.Tensor):
            params = [params]
        elif not isinstance(params, set):  # torch refuses a set (no order) itself
            params = list(params)
        for i, p in enumerate(params):
            where = f"fastgan.optim.Adam: parameter {i} of group {group}"
            if isinstance(p, torch.Tensor) and p.dtype not in DTYPES:
                raise TypeError(
                    f"{where} is {p.dtype}; it updates float32 and float64 parameters "
                    f"(keep float32 master weights, e.g. under autocast, or use torch.optim.Adam)"
                )
            if isinstance(p, torch.Tensor) and not _checks.dense(p):
                raise ValueError(
                    f"{where} is not dense (a strided view, shape {tuple(p.shape)}, stride "
                    f"{p.stride()}); adam_ walks parameters as flat arrays"
                )
        super().add_param_group(dict(param_group, params=params))

    def __setstate__(self, state):
        # torch.optim.Adam's: a group saved without these keys (an older fastgan Adam's) gets them
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in FLAG_DEFAULTS.items():
                group.setdefault(key, value)

    @staticmethod
    def _check_loaded_groups(optimizer, state_dict):
        """Refuses, before anything is loaded, a torch.optim.Adam state_dict whose update this
        Adam does not make (it would silently run plain Adam instead)."""
        for i, group in enumerate(state_dict["param_groups"]):
            on = [k for k in UNSUPPORTED if group.get(k)]
            if on:
                raise ValueError(
                    f"fastgan.optim.Adam cannot continue this state_dict: param group {i} has "
                    f"{', '.join(f'{k}=True' for k in on)} (fastgan's Adam has none of "
                    f"{', '.join(UNSUPPORTED)}); use torch.optim.Adam for it"
                )

    @staticmethod
    def _count_loaded_steps(optimizer):
        for p, s in optimizer.state.items():  # a number step (torch < 1.12 checkpoints) as a tensor, as torch does
            if "step" in s and not torch.is_tensor(s["step"]):
                s["step"] = torch.tensor(float(s["step"]), dtype=torch.float32, device=p.device)
        optimizer._counts = {p: int(s["step"]) for p, s in optimizer.state.items() if "step" in s}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            launches, steps = {}, []  # (step count before this step, dtype, device) -> adam_'s lists
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
                if p not in self._counts:  # state set by hand: read its count once
                    self._counts[p] = int(state["step"])
                key = (self._counts[p], p.dtype, p.device)  # what one adam_ launch must share
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
                ops.adam_(
                    params,
                    grads,
                    exp_avgs,
                    exp_avg_sqs,
                    counts[0],
                    group["lr"],
                    beta1,
                    beta2,
                    group["eps"],
                    group["weight_decay"],
                )
        return loss


__all__ = ["Adam"]
