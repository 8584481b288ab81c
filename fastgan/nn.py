"""Drop-in modules on fastgan's fused ops."""

import inspect

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fastgan import ops
from fastgan.ops import _checks


def like(t, x, float32_ok=False):
    """t (a parameter or buffer, or None) in x's dtype: under autocast x is bfloat16 while the
    parameters stay float32, and the cast's backward hands them a float32 gradient.
    float32_ok: the op reads a float32 t of a half x as it is (bias_leaky_relu, batch_norm), so
    that one is passed without a cast kernel either way."""
    if t is None or t.dtype == x.dtype or (float32_ok and t.dtype == torch.float32 and x.dtype in _checks.HALF_DTYPES):
        return t
    return t.to(x.dtype)


class FusedLeakyReLU(nn.Module):
    """leaky_relu(x + bias) * scale with a learnable per-channel bias (dim 1), one kernel.

    Put it after a bias-free Linear/Conv: `nn.Linear(i, o, bias=False), FusedLeakyReLU(o)`
    computes what `nn.Linear(i, o), nn.LeakyReLU(0.2)` does, in one pass instead of two.
    """

    def __init__(self, num_features, negative_slope=0.2, scale=1.0, device=None, dtype=None):
        super().__init__()
        self.num_features = int(num_features)
        # checked here, not at the first forward
        self.negative_slope = _checks.number("FusedLeakyReLU", "negative_slope", negative_slope, minimum=0.0)
        self.scale = _checks.number("FusedLeakyReLU", "scale", scale, minimum=0.0, exclusive=True)
        self.bias = nn.Parameter(torch.empty(self.num_features, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.zeros_(self.bias)

    def forward(self, x):
        return ops.bias_leaky_relu(x, like(self.bias, x, float32_ok=True), self.negative_slope, self.scale)

    def extra_repr(self):
        return f"{self.num_features}, negative_slope={self.negative_slope}, scale={self.scale}"


_TORCH_BN_HAS_BIAS = "bias" in inspect.signature(_BatchNorm.__init__).parameters


class _FusedBatchNorm(_BatchNorm):
    """torch's _BatchNorm (same parameters, buffers and state_dict) running fastgan's op."""

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        negative_slope=None,
        device=None,
        dtype=None,
        *,
        bias=True,
    ):
        # bias=False: a weight but no bias (torch's keyword since it added it; before, the same
        # module and state_dict made here)
        kw = {} if bias or not _TORCH_BN_HAS_BIAS else dict(bias=False)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, **kw)
        if not bias and self.bias is not None:
            self.register_parameter("bias", None)
        self.negative_slope = None if negative_slope is None else float(negative_slope)

    def _momentum(self):
        """(factor, counter): the running statistics' update factor, and num_batches_tracked when
        the kernel is to count the batch itself. The bookkeeping is torch.nn.modules.batchnorm.
        _BatchNorm.forward's, except that the kernel counts num_batches_tracked (one launch fewer
        per call) unless momentum is None, whose factor 1 / count is needed on the host first."""
        factor = 0.0 if self.momentum is None else self.momentum
        counter = None
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            if self.momentum is None:
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked)
            else:
                counter = self.num_batches_tracked
        return factor, counter

    def forward(self, x):
        self._check_input_dim(x)
        factor, counter = self._momentum()
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return ops.batch_norm(
            x,
            self.weight,
            self.bias,
            self.running_mean if track else None,
            self.running_var if track else None,
            use_batch_stats,
            factor,
            self.eps,
            self.negative_slope,
            counter,
        )

    def extra_repr(self):
        s = super().extra_repr()
        return s if self.negative_slope is None else f"{s}, negative_slope={self.negative_slope}"


class BatchNorm1d(_FusedBatchNorm):
    """torch.nn.BatchNorm1d on fastgan's kernel; negative_slope fuses a LeakyReLU after it."""

    def _check_input_dim(self, x):
        if x.dim() not in (2, 3):
            raise ValueError(f"BatchNorm1d: x must be 2-D or 3-D, got {x.dim()}-D")


class BatchNorm2d(_FusedBatchNorm):
    """torch.nn.BatchNorm2d on fastgan's kernel; negative_slope fuses a LeakyReLU after it."""

    def _check_input_dim(self, x):
        if x.dim() != 4:
            raise ValueError(f"BatchNorm2d: x must be 4-D, got {x.dim()}-D")


class SyncBatchNorm(_FusedBatchNorm):
    """torch.nn.SyncBatchNorm on fastgan's kernel: in training, under an initialized process
    group of more than one rank, the statistics are those of the global batch over the ranks
    (fastgan.ops.sync_batch_norm: one all-reduce forward, one backward), then the fused
    normalize (+ LeakyReLU with negative_slope); otherwise it is fastgan's BatchNorm. Any
    input of 2 or more dims. process_group: the ranks to reduce over (default: all)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, **kw):
        self.process_group = kw.pop("process_group", None)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, **kw)

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"SyncBatchNorm: x must have at least 2 dims (N, C, ...), got {x.dim()}-D")

    def forward(self, x):
        if not (self.training and _several_ranks(self.process_group)):
            return super().forward(x)
        from fastgan.ops.sync_batch_norm import sync_batch_norm

        self._check_input_dim(x)
        factor, counter = self._momentum()
        track = self.track_running_stats
        return sync_batch_norm(
            x,
            self.weight,
            self.bias,
            self.running_mean if track else None,
            self.running_var if track else None,
            factor,
            self.eps,
            self.negative_slope,
            counter,
            self.process_group,
        )


def _several_ranks(group):
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def convert_sync_batchnorm(module, process_group=None):
    """module with each batch norm (fastgan's BatchNorm1d/2d, torch.nn's BatchNorm*d) replaced by
    a SyncBatchNorm sharing its parameters and buffers, as torch.nn.SyncBatchNorm.
    convert_sync_batchnorm does, except that fastgan's fused LeakyReLU slope is kept. Returns
    the module (a new one when module itself is a batch norm)."""
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            negative_slope=getattr(module, "negative_slope", None),
            process_group=process_group,
            bias=not module.affine or module.bias is not None,
        )
        if module.affine:
            out.weight = module.weight
            out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, process_group))
    return out


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """torch.nn.BCEWithLogitsLoss (same signature, buffers and state_dict) on fastgan's fused op.

    The target may also be a number in [0, 1], a constant label that is never materialized:
    `loss(d_real, 1.0)`, or `loss(d_real, 0.9)` for one-sided label smoothing.
    """

    def forward(self, input, target):
        # float32 buffers with half logits follow the logits (a half loss, as torch's), except under
        # autocast, where the loss runs in float32 and they must not be rounded first
        if torch.is_autocast_enabled(input.device.type):
            return ops.bce_with_logits(input, target, self.weight, self.pos_weight, self.reduction)
        return ops.bce_with_logits(
            input, target, like(self.weight, input), like(self.pos_weight, input), self.reduction
        )


__all__ = [
    "FusedLeakyReLU",
    "BatchNorm1d",
    "BatchNorm2d",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "BCEWithLogitsLoss",
]
