"""BCE with logits and the GAN losses, each one fused, numerically stable pass.

The GAN losses come in the kinds of LOSS_KINDS: 'bce' (non-saturating), 'hinge', 'lsgan' and
'wgan'; the kernels take the kind as its index in LOSS_KINDS.

Kernels: csrc/losses.h (math), csrc/cpu/losses.cpp, csrc/cuda/losses.cu,
csrc/autograd/losses.cpp (autograd, double backward).

A Python float target (a constant label, e.g. 0.9 for label smoothing) goes to the kernel as
a number and is never materialized as a tensor. Sums accumulate in float32 (float64 for
float64 inputs) in a fixed order: the same input gives the same bits every run.
"""

import math
import numbers

import torch

from fastgan import _extension
from fastgan.ops import _checks, reference

REDUCTIONS = ("none", "mean", "sum")
LOSS_KINDS = ("bce", "hinge", "lsgan", "wgan")


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _logits(op, name, x):
    _checks.float_tensor(op, name, x)
    if x.numel() == 0:
        raise ValueError(f"{op}: {name} must not be empty, got shape {tuple(x.shape)}")


def _label(op, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        what = "a Tensor or a number" if name == "target" else "a number"
        raise TypeError(f"{op}: {name} must be {what} in [0, 1], got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{op}: {name} must be in [0, 1], got {value}")
    return value


def _like(op, name, t, xname, x):
    _checks.float_tensor(op, name, t)
    if t.dtype != x.dtype:
        raise TypeError(f"{op}: {name} must have {xname}' dtype {x.dtype}, got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"{op}: {name} must be on {xname}' device {x.device}, got {t.device}")


def _broadcastable(op, name, t, x):
    ok = t.dim() <= x.dim() and all(s == 1 or s == xs for s, xs in zip(reversed(t.shape), reversed(x.shape)))
    if not ok:
        raise ValueError(f"{op}: {name} of shape {tuple(t.shape)} must broadcast to logits' shape {tuple(x.shape)}")


def check_bce_args(logits, target, target_value, weight, pos_weight, reduction, op="bce_with_logits"):
    """The checks of csrc/losses.h:prepare_bce_args (target None: the label target_value)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    _logits(op, "logits", logits)
    if target is not None:
        _like(op, "target", target, "logits", logits)
        if target.shape != logits.shape:
            raise ValueError(f"{op}: target must have logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}")
    else:
        _label(op, "target", target_value)
    for name, t in (("weight", weight), ("pos_weight", pos_weight)):
        if t is not None:
            _like(op, name, t, "logits", logits)
            _broadcastable(op, name, t, logits)


_KIND_INDEX = {k: i for i, k in enumerate(LOSS_KINDS)}


def _kind_index(op, kind):
    """kind's index in LOSS_KINDS, the kernels' kind argument (a dict hit: every D and G step)."""
    k = _KIND_INDEX.get(kind) if type(kind) is str else None
    if k is None:
        raise ValueError(f"{op}: kind must be one of {', '.join(map(repr, LOSS_KINDS))}, got {kind!r}")
    return k


def _kind_label(op, kind, name, value, default):
    # a label with another kind would be silently ignored: an error instead
    if kind != 0 and value != default:
        raise ValueError(f"{op}: {name} applies to kind='bce' only, got {name}={value} with kind={LOSS_KINDS[kind]!r}")


def _kind_number(op, kind):
    """The kernels' int kind, checked (the fake kernels see it as the schema's int)."""
    if isinstance(kind, bool) or not isinstance(kind, int) or not 0 <= kind < len(LOSS_KINDS):
        raise ValueError(f"{op}: kind must be 0 ('bce'), 1 ('hinge'), 2 ('lsgan') or 3 ('wgan'), got {kind}")
    return kind


def check_gan_d_args(real_logits, fake_logits, real_label, fake_label, kind=0):
    op = "gan_d_loss"
    _kind_number(op, kind)
    _logits(op, "real_logits", real_logits)
    _logits(op, "fake_logits", fake_logits)
    _like(op, "fake_logits", fake_logits, "real_logits", real_logits)
    _label(op, "real_label", real_label)
    _label(op, "fake_label", fake_label)
    _kind_label(op, kind, "real_label", real_label, 1.0)
    _kind_label(op, kind, "fake_label", fake_label, 0.0)


def check_gan_g_args(fake_logits, real_label, kind=0):
    _kind_number("gan_g_loss", kind)
    _logits("gan_g_loss", "fake_logits", fake_logits)
    _label("gan_g_loss", "real_label", real_label)
    _kind_label("gan_g_loss", kind, "real_label", real_label, 1.0)


_bce = _extension.op("bce_with_logits")
_gan_d = _extension.op("gan_d_loss")
_gan_g = _extension.op("gan_g_loss")

if _bce is not None:

    def _empty(shape, like, dtype=None):
        return torch.empty(shape, dtype=like.dtype if dtype is None else dtype, device=like.device)

    @torch.library.register_fake("fastgan::bce_with_logits")
    def _fake_bce(logits, target, target_value, weight, pos_weight, reduction):
        check_bce_args(logits, target, target_value, weight, pos_weight, reduction)
        return _empty(logits.shape if reduction == "none" else (), logits)

    @torch.library.register_fake("fastgan::bce_with_logits_backward")
    def _fake_bce_backward(grad, logits, target, target_value, weight, pos_weight, reduction):
        check_bce_args(logits, target, target_value, weight, pos_weight, reduction, op="bce_with_logits_backward")
        return _empty(logits.shape, logits)

    @torch.library.register_fake("fastgan::gan_d_loss")
    def _fake_gan_d(real_logits, fake_logits, real_label, fake_label, kind=0):
        check_gan_d_args(real_logits, fake_logits, real_label, fake_label, kind)
        return _empty((), real_logits, _acc_dtype(real_logits.dtype))

    @torch.library.register_fake("fastgan::gan_d_loss_backward")
    def _fake_gan_d_backward(grad, real_logits, fake_logits, real_label, fake_label, kind=0):
        check_gan_d_args(real_logits, fake_logits, real_label, fake_label, kind)
        return _empty(real_logits.shape, real_logits), _empty(fake_logits.shape, fake_logits)

    @torch.library.register_fake("fastgan::gan_g_loss")
    def _fake_gan_g(fake_logits, real_label, kind=0):
        check_gan_g_args(fake_logits, real_label, kind)
        return _empty((), fake_logits, _acc_dtype(fake_logits.dtype))

    @torch.library.register_fake("fastgan::gan_g_loss_backward")
    def _fake_gan_g_backward(grad, fake_logits, real_label, kind=0):
        check_gan_g_args(fake_logits, real_label, kind)
        return _empty(fake_logits.shape, fake_logits)

    # Under autocast the losses run in float32, as torch's binary_cross_entropy_with_logits
    # does: float16/bfloat16 inputs (logits, target, weights) are cast up, float64 is kept.
    for _name in ("bce_with_logits", "gan_d_loss", "gan_g_loss"):
        for _device in ("cpu", "cuda"):
            torch.library.register_autocast(f"fastgan::{_name}", _device, torch.float32)


def _split_target(op, target):
    """(target tensor or None, label number): a number target is a constant label."""
    if isinstance(target, torch.Tensor):
        return target, 0.0
    if type(target) is float:  # the kernel checks its range; under torch.compile it may be a SymFloat,
        return None, target  # which math.isfinite in _label cannot trace (as gan_d_loss/gan_g_loss)
    return None, _label(op, "target", target)


def bce_with_logits(logits, target, weight=None, pos_weight=None, reduction="mean"):
    """torch.nn.functional.binary_cross_entropy_with_logits in one fused, stable pass.

    logits: a non-empty float tensor. target: a float tensor of logits' shape and device, or
    a number in [0, 1] (a constant label, never materialized). weight, pos_weight: None or
    float tensors on logits' device that broadcast to logits' shape. Tensors of different
    float dtypes are promoted to their common one (torch.promote_types: a float64 target makes
    a float64 loss, as in torch). reduction: 'none', 'mean' or 'sum'; the result has that
    common dtype (sums accumulate in float32 or wider).
    Differentiable in logits (to any order) and in a tensor target; as in torch, not in
    weight or pos_weight.
    """
    t, tv = _split_target("bce_with_logits", target)
    logits, t, weight, pos_weight = _promote(logits, t, weight, pos_weight)
    target = target if t is None else t
    if _bce is None:
        logits, target, t, weight, pos_weight = _autocast_inputs(logits, target, t, weight, pos_weight)
        check_bce_args(logits, t, tv, weight, pos_weight, reduction)
        # half types computed in float32, as the kernels do, and returned in logits' dtype
        out = _float_reference(reference.bce_with_logits, logits, target, weight, pos_weight, reduction, n_tensors=4)
        return out.to(logits.dtype)
    return _bce(logits, t, tv, weight, pos_weight, reduction)


def _promote(logits, *others):
    """logits and the tensors among others in their common dtype (torch.promote_types), as
    torch's binary_cross_entropy_with_logits promotes a float64 target (from numpy, say);
    the kernels then see one dtype. Non-float tensors are left for the checks to name."""
    tensors = (logits,) + others
    if not all(t is None or (torch.is_tensor(t) and t.dtype in _checks.FLOAT_DTYPES) for t in tensors):
        return tensors
    dtype = logits.dtype
    for t in others:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t if t is None or t.dtype == dtype else t.to(dtype) for t in tensors)


def _half_to_float(t):
    """float16/bfloat16 tensors as float32; anything else (float32/64, numbers, None) as is."""
    return t.float() if torch.is_tensor(t) and t.dtype in _checks.HALF_DTYPES else t


def _autocast_inputs(*tensors):
    """The reference path's version of the kernels' autocast rule (float32 under autocast)."""
    devices = {t.device.type for t in tensors if torch.is_tensor(t)}
    if not any(torch.is_autocast_enabled(d) for d in devices):
        return tensors
    return tuple(_half_to_float(t) for t in tensors)


def _float_reference(fn, *tensors_then_args, n_tensors):
    """fn on half inputs upcast to float32: the reference path returns the kernels' dtype."""
    ts = [_half_to_float(t) for t in tensors_then_args[:n_tensors]]
    return fn(*ts, *tensors_then_args[n_tensors:])


def gan_d_loss(real_logits, fake_logits, real_label=1.0, fake_label=0.0, kind="bce"):
    """Discriminator loss of a GAN objective, kind one of LOSS_KINDS:

    'bce'    mean BCE(real_logits, real_label) + mean BCE(fake_logits, fake_label) (the default)
    'hinge'  mean relu(1 - real_logits) + mean relu(1 + fake_logits)
    'lsgan'  mean (real_logits - 1)^2 / 2 + mean fake_logits^2 / 2
    'wgan'   mean fake_logits - mean real_logits (the critic's loss)

    The labels are bce's: another kind with a label other than the default is a ValueError.
    One kernel launch forward and one backward; real and fake may differ in size. Returns a
    0-dim tensor in float32 (float64 for float64 logits), differentiable in both inputs (to
    any order: gradient penalties differentiate through the backward).
    """
    k = _kind_index("gan_d_loss", kind)
    # bce's float labels are left to the kernel: under torch.compile they may be SymFloats
    if k or type(real_label) is not float or type(fake_label) is not float:  # ints, numpy, bad types
        real_label = _label("gan_d_loss", "real_label", real_label)
        fake_label = _label("gan_d_loss", "fake_label", fake_label)
        _kind_label("gan_d_loss", k, "real_label", real_label, 1.0)
        _kind_label("gan_d_loss", k, "fake_label", fake_label, 0.0)
    if _gan_d is None:
        real_logits, fake_logits = _autocast_inputs(real_logits, fake_logits)
        check_gan_d_args(real_logits, fake_logits, real_label, fake_label, k)
        return _float_reference(
            reference.gan_d_loss, real_logits, fake_logits, real_label, fake_label, kind, n_tensors=2
        )
    return _gan_d(real_logits, fake_logits, real_label, fake_label, k)


def gan_g_loss(fake_logits, real_label=1.0, kind="bce"):
    """Generator loss of a GAN objective, kind one of LOSS_KINDS:

    'bce'    mean BCE(fake_logits, real_label), non-saturating (maximizes log D(G(z)))
    'hinge'  -mean fake_logits
    'lsgan'  mean (fake_logits - 1)^2 / 2
    'wgan'   -mean fake_logits

    real_label is bce's (another value with another kind: ValueError). Returns a 0-dim tensor
    in float32 (float64 for float64 logits).
    """
    k = _kind_index("gan_g_loss", kind)
    if k or type(real_label) is not float:
        real_label = _label("gan_g_loss", "real_label", real_label)
        _kind_label("gan_g_loss", k, "real_label", real_label, 1.0)
    if _gan_g is None:
        (fake_logits,) = _autocast_inputs(fake_logits)
        check_gan_g_args(fake_logits, real_label, k)
        return _float_reference(reference.gan_g_loss, fake_logits, real_label, kind, n_tensors=1)
    return _gan_g(fake_logits, real_label, k)
