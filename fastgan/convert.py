"""fastgan.convert: a copy of a torch.nn model running fastgan's fused ops, with the same state_dict.

    D = fastgan.convert(D, strip_sigmoid=True)           # a deep copy; the original is untouched
    D, report = fastgan.convert(D, report=True)          # and what was replaced, what left alone
    print(report)

What is replaced, inside every nn.Sequential (nested ones and OrderedDict-named ones too):

- nn.Linear / nn.Conv2d / nn.ConvTranspose2d with a bias, followed by nn.LeakyReLU(s) or nn.ReLU
  (slope 0): the same module object becomes a FusedLinear / FusedConv2d / FusedConvTranspose2d,
  a subclass holding the same `weight` and `bias` parameters (so the same state_dict keys), which
  runs the product without its bias and then ops.bias_leaky_relu; the activation's slot becomes
  nn.Identity, so no index or name of the Sequential moves.
- nn.BatchNorm1d/2d followed by nn.LeakyReLU(s) / nn.ReLU: fastgan.nn.BatchNorm1d/2d with
  negative_slope=s (one kernel), the activation's slot nn.Identity.
- nn.BatchNorm1d/2d alone, anywhere (in a Sequential, or an attribute of a module with its own
  forward): fastgan.nn.BatchNorm1d/2d, which is torch's _BatchNorm (same parameters, buffers,
  momentum/None, affine, track_running_stats and num_batches_tracked bookkeeping) on fastgan's
  kernel. Only a batch norm alone is swapped outside Sequentials: whether an activation attribute
  runs right after a layer attribute is decided by forward(), which this function does not read.
- nn.Dropout and nn.Identity between the two parts are allowed: leaky_relu(c * x) = c *
  leaky_relu(x) for the dropout's c >= 0 (the same mask: the fused op draws no random numbers), so
  the fused op runs first and the Dropout stays in its slot, after it.
- Keras' order, Linear -> LeakyReLU -> BatchNorm1d, stays in that order: Linear+LeakyReLU fused,
  then the batch norm as fastgan's.
- strip_sigmoid=True: the final nn.Sigmoid of a discriminator becomes nn.Identity, so that it
  returns the logits the fused losses take (fastgan.ops.gan_d_loss, fnn.BCEWithLogitsLoss). The
  Sigmoid must be what the model's output comes from, up to shape changes (view, reshape, squeeze,
  flatten, indexing, nn.Flatten): found as the last layer of a Sequential, or, for a module with
  its own forward, by tracing that forward with torch.fx. A forward torch.fx cannot trace is
  refused with the reason; pass the Sigmoid's path instead (strip_sigmoid="main.12") to say so
  yourself. Where no such Sigmoid is found, convert raises ValueError rather than return a model
  whose "logits" are probabilities.

Left as they are (report=True says why, for each): the same layers with bias=False (nothing to
add in the fused op); activations with a negative slope; layers used in more than one place, or
with forward/backward hooks that would see the fused output (forward pre-hooks, as the old
torch.nn.utils.spectral_norm's, are kept and run); subclasses with their own forward; a
Linear/Conv followed (after the pattern) by an in-place module,
or with nn.Dropout(inplace=True) between it and its activation, because the fused op's backward
reads its output and an in-place op would overwrite it (fused batch norm does not, so there both
are fine); batch norm with eps <= 0 (fastgan needs eps > 0 in training); other activations
(Tanh, ELU, GELU, ...), AlphaDropout, other norms, Embedding and anything else. Modules with a
custom forward are kept, and the Sequentials and batch norms inside them converted.
Lazy modules not yet initialised are an error (ValueError: torch cannot copy them; run one forward
first). Parametrized layers (torch.nn.utils.parametrize, e.g. parametrizations.spectral_norm or
weight_norm) are converted keeping their parametrizations.

Known differences from torch that conversion brings (fastgan's modules, not the conversion):
torch.func transforms, forward-mode AD and torch.jit.script do not work on fastgan's ops
(README). A model whose own forward does an in-place op on the output of a Sequential that now
ends in a fused Linear/Conv gets autograd's "modified by an inplace operation" error at backward
(never wrong gradients); inside a Sequential that case is detected and left unfused. (An empty
batch in training is taken as torch takes it: an empty output, the batch counted.)
"""

import collections
import copy
import math
import operator
from dataclasses import asdict, dataclass, field
from typing import List, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from fastgan import nn as fnn
from fastgan import ops

# ----------------------------------------------------------------------------------------------
# the fused layers: torch's classes (same parameters, buffers, state_dict, isinstance) with the
# bias added, with the activation, in one kernel


def _bias_act_dim1(y, bias, negative_slope):
    return ops.bias_leaky_relu(y, fnn.like(bias, y, float32_ok=True), negative_slope)


def _bias_act_last(y, bias, negative_slope):
    """bias_leaky_relu along the last dim (a Linear's features), for inputs of any rank."""
    if y.dim() == 2:
        return _bias_act_dim1(y, bias, negative_slope)
    return _bias_act_dim1(y.reshape(-1, y.shape[-1]), bias, negative_slope).reshape(y.shape)


def _bias_act_conv(y, bias, negative_slope, unbatched):
    """bias_leaky_relu along the channels: dim 1, or dim 0 of an unbatched (C, H, W) output."""
    if unbatched:
        return _bias_act_dim1(y.unsqueeze(0), bias, negative_slope).squeeze(0)
    return _bias_act_dim1(y, bias, negative_slope)


class _Fused:
    """What the three fused layers share: negative_slope (0: ReLU) and its repr."""

    negative_slope = 0.2

    def extra_repr(self):
        return f"{super().extra_repr()}, negative_slope={self.negative_slope}"


class FusedLinear(_Fused, nn.Linear):
    """nn.Linear followed by LeakyReLU(negative_slope) (0: ReLU): F.linear without the bias, then
    the bias and activation in ops.bias_leaky_relu. Same parameters as nn.Linear."""

    def __init__(self, *args, negative_slope=0.2, **kwargs):
        super().__init__(*args, **kwargs)
        self.negative_slope = float(negative_slope)

    def forward(self, input):
        return _bias_act_last(F.linear(input, self.weight), self.bias, self.negative_slope)


class FusedConv2d(_Fused, nn.Conv2d):
    """nn.Conv2d followed by LeakyReLU(negative_slope) (0: ReLU), the bias added in the fused op."""

    def __init__(self, *args, negative_slope=0.2, **kwargs):
        super().__init__(*args, **kwargs)
        self.negative_slope = float(negative_slope)

    def forward(self, input):
        y = self._conv_forward(input, self.weight, None)
        return _bias_act_conv(y, self.bias, self.negative_slope, input.dim() == 3)


class FusedConvTranspose2d(_Fused, nn.ConvTranspose2d):
    """nn.ConvTranspose2d followed by LeakyReLU(negative_slope) (0: ReLU), the bias added in the
    fused op. forward(input, output_size=None) as torch's."""

    def __init__(self, *args, negative_slope=0.2, **kwargs):
        super().__init__(*args, **kwargs)
        self.negative_slope = float(negative_slope)

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        y = F.conv_transpose2d(
            input, self.weight, None, self.stride, self.padding, output_padding, self.groups, self.dilation
        )
        return _bias_act_conv(y, self.bias, self.negative_slope, input.dim() == 3)


_PRODUCERS = {nn.Linear: FusedLinear, nn.Conv2d: FusedConv2d, nn.ConvTranspose2d: FusedConvTranspose2d}
_BATCH_NORMS = {nn.BatchNorm1d: fnn.BatchNorm1d, nn.BatchNorm2d: fnn.BatchNorm2d}
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)
_FASTGAN = (
    FusedLinear,
    FusedConv2d,
    FusedConvTranspose2d,
    fnn.BatchNorm1d,
    fnn.BatchNorm2d,
    fnn.FusedLeakyReLU,
    fnn.BCEWithLogitsLoss,
)

# ----------------------------------------------------------------------------------------------
# the report


@dataclass(frozen=True)
class Replaced:
    """A pattern replaced: path of its first module, e.g. "main.0" ("" for the model itself)."""

    path: str
    pattern: str  # "Linear + LeakyReLU(0.2)", "BatchNorm1d", "Sigmoid (final)", ...
    replacement: str  # what runs there now
    slots: Tuple[str, ...] = ()  # the paths of every module of the pattern


@dataclass(frozen=True)
class LeftAlone:
    """A module kept as it is, and why."""

    path: str
    module: str  # its class name
    reason: str


@dataclass
class Report:
    """What fastgan.convert did: `replaced` and `left_alone`, in the model's order."""

    replaced: List[Replaced] = field(default_factory=list)
    left_alone: List[LeftAlone] = field(default_factory=list)

    def as_dict(self):
        return {"replaced": [asdict(r) for r in self.replaced], "left_alone": [asdict(k) for k in self.left_alone]}

    def __str__(self):
        lines = [f"fastgan.convert: {len(self.replaced)} replaced, {len(self.left_alone)} left alone"]
        if self.replaced:
            lines.append("replaced:")
            lines += [
                f"  {_show(', '.join(r.slots) or r.path):<22} {r.pattern} -> {r.replacement}" for r in self.replaced
            ]
        if self.left_alone:
            lines.append("left alone:")
            lines += [f"  {_show(k.path):<22} {k.module}: {k.reason}" for k in self.left_alone]
        return "\n".join(lines)


def _show(path):
    return path or "(model)"


# ----------------------------------------------------------------------------------------------
# what a module is


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _base(m):
    """m's class, or the class torch.nn.utils.parametrize injected its parametrizations over."""
    return type(m).__bases__[0] if parametrize.is_parametrized(m) else type(m)


def _plain(m, classes):
    """m is one of torch's classes exactly (possibly parametrized), its forward not replaced."""
    return _base(m) in classes and "forward" not in vars(m)


def _is_sequential(m):
    return (
        isinstance(m, nn.Sequential)
        and type(m).forward is nn.Sequential.forward
        and type(m).__iter__ is nn.Sequential.__iter__
        and "forward" not in vars(m)
    )


def _output_hooks(m):
    """Hooks that would see m's output or its gradient (which fusing changes)."""
    return bool(m._forward_hooks or m._backward_hooks or getattr(m, "_backward_pre_hooks", None))


def _any_hooks(m):
    return _output_hooks(m) or bool(m._forward_pre_hooks)


def _slope_of(act):
    return 0.0 if _base(act) is nn.ReLU else act.negative_slope


def _act_name(act):
    return "ReLU" if _base(act) is nn.ReLU else f"LeakyReLU({act.negative_slope:g})"


def _dropout_name(m):
    return f"Dropout(p={m.p:g}{', inplace=True' if m.inplace else ''})"


def _swap_class(m, cls):
    """m becomes a cls in place (its parameters, buffers, hooks and attributes kept); a
    parametrized module keeps its parametrizations over the new class."""
    if parametrize.is_parametrized(m):
        injected = {k: v for k, v in vars(type(m)).items() if k not in ("__dict__", "__weakref__")}
        cls = type(f"Parametrized{cls.__name__}", (cls,), injected)
    m.__class__ = cls


def _is_lazy(m):
    return isinstance(m, nn.modules.lazy.LazyModuleMixin)


# ----------------------------------------------------------------------------------------------
# the conversion


class _Converter:
    def __init__(self, root):
        self.root = root
        self.uses = collections.Counter(id(m) for _, m in root.named_modules(remove_duplicate=False))
        self.report = Report()
        self.made = set()  # ids of the nn.Identity modules put in by the conversion
        self.seen = set()  # ids of the modules visited (a shared one once)

    # -- reporting
    def keep(self, m, path, reason):
        self.report.left_alone.append(LeftAlone(path, type(m).__name__, reason))

    def replaced(self, path, pattern, replacement, slots):
        self.report.replaced.append(Replaced(path, pattern, replacement, tuple(slots)))

    # -- batch norm
    @staticmethod
    def batch_norm_problem(m):
        """Why batch norm m cannot run as fastgan's (None: it can)."""
        if not m.eps > 0:
            return f"eps={m.eps}: fastgan's batch norm needs eps > 0 in training (torch's is kept)"
        return None

    @staticmethod
    def is_batch_norm(m):
        """A torch BatchNorm1d/2d, or a fastgan one not yet fused with an activation."""
        if _is_lazy(m):
            return False
        return _plain(m, tuple(_BATCH_NORMS)) or (
            type(m) in (fnn.BatchNorm1d, fnn.BatchNorm2d) and m.negative_slope is None and "forward" not in vars(m)
        )

    @staticmethod
    def swap_batch_norm(m, slope=None):
        """m becomes fastgan's batch norm (negative_slope: the fused activation); its description."""
        cls = _BATCH_NORMS.get(_base(m), _base(m))
        _swap_class(m, cls)
        m.negative_slope = slope
        return f"fastgan.nn.{cls.__name__}" + ("" if slope is None else f"(negative_slope={slope:g})")

    def batch_norm_alone(self, m, path, note=""):
        problem = self.batch_norm_problem(m)
        if problem:
            self.keep(m, path, problem)
        elif type(m) in (fnn.BatchNorm1d, fnn.BatchNorm2d):
            self.keep(m, path, "already fastgan's batch norm" + note)
        else:
            name = _base(m).__name__
            self.replaced(path, name, self.swap_batch_norm(m) + note, [path])

    # -- walking
    def visit(self, m, path, parent):
        """m at path, whose parent is a Sequential (parent "sequential"), another module (parent:
        what decides the order its children run in, e.g. "Custom's forward()") or nothing (the
        model itself: parent None)."""
        if m is None or id(m) in self.seen or id(m) in self.made:
            return
        self.seen.add(id(m))
        in_sequential = parent == "sequential"
        if _is_sequential(m):
            self.sequential(m, path)
        elif self.is_batch_norm(m):
            note = (
                ""
                if in_sequential
                else (f" (alone: not in an nn.Sequential, what runs after it is decided by {parent})" if parent else "")
            )
            self.batch_norm_alone(m, path, note)
        elif isinstance(m, _FASTGAN):
            self.keep(m, path, "already fastgan's")
        elif _is_lazy(m):
            self.keep(m, path, "lazy module not initialised yet: convert after its first forward")
        elif _plain(m, tuple(_PRODUCERS)) or _plain(m, _ACTIVATIONS):
            if in_sequential:  # an activation not after a fusable layer (layers are handled in pattern())
                self.keep(
                    m,
                    path,
                    "not right after a Linear/Conv2d/ConvTranspose2d with bias or a BatchNorm1d/2d "
                    "in its Sequential: nothing to fuse it with",
                )
            else:
                self.keep(
                    m,
                    path,
                    "not in an nn.Sequential: what runs after it is decided by "
                    f"{parent or 'the caller'}, so nothing is fused",
                )
        elif m._modules:
            container = isinstance(m, (nn.ModuleList, nn.ModuleDict))
            self.keep(
                m,
                path,
                ("container" if container else "custom forward")
                + ": kept; its nn.Sequentials are fused and its batch norms swapped",
            )
            order = f"the code iterating {_show(path)}" if container else f"{type(m).__name__}'s forward()"
            for name, child in m._modules.items():
                self.visit(child, _join(path, name), order)
        elif type(m).__module__.startswith("torch.nn"):
            self.keep(m, path, f"no fused op for {type(m).__name__}")
        else:
            self.keep(m, path, f"custom module ({type(m).__name__}): kept as it is")

    def sequential(self, seq, path):
        items = [(name, m) for name, m in seq._modules.items() if m is not None]
        i = 0
        while i < len(items):
            m = items[i][1]
            if id(m) in self.seen or id(m) in self.made:
                i += 1
            elif _plain(m, tuple(_PRODUCERS)) and not _is_lazy(m):
                i += self.pattern(seq, items, i, path, "layer")
            elif self.is_batch_norm(m):
                i += self.pattern(seq, items, i, path, "bn")
            else:
                self.visit(m, _join(path, items[i][0]), "sequential")
                i += 1

    def pattern(self, seq, items, i, prefix, kind):
        """items[i] of seq (a layer or a batch norm) and the LeakyReLU/ReLU after it, if any:
        fused, or each left alone with why. Returns how many items were handled."""
        name, m = items[i]
        path = _join(prefix, name)
        self.seen.add(id(m))
        j, between = i + 1, []
        while j < len(items) and _plain(items[j][1], (nn.Identity, nn.Dropout)) and id(items[j][1]) not in self.made:
            between.append(j)
            j += 1
        act = items[j][1] if j < len(items) and _plain(items[j][1], _ACTIVATIONS) else None
        if act is None:
            if kind == "bn":
                self.batch_norm_alone(m, path)
            else:
                where = (
                    "last in its Sequential, with no LeakyReLU/ReLU after it"
                    if j == len(items)
                    else "followed by the removed Sigmoid, not by LeakyReLU/ReLU"
                    if id(items[j][1]) in self.made
                    else f"followed by {type(items[j][1]).__name__}, not by LeakyReLU/ReLU"
                )
                what = "(bias=False)" if m.bias is None else "its bias with"
                self.keep(m, path, f"{where}: nothing to fuse {what}")
            return 1
        act_name, act_path = _act_name(act), _join(prefix, items[j][0])
        problem = self.fusion_problem(m, kind, act, [items[b][1] for b in between], items[j + 1 :])
        if problem:
            if kind == "bn":
                self.batch_norm_alone(m, path)
            else:
                self.keep(m, path, problem)
            for b in between:
                self.visit(items[b][1], _join(prefix, items[b][0]), "sequential")
            self.seen.add(id(act))
            self.keep(act, act_path, f"not fused with {path} ({_base(m).__name__}): {problem}")
            return j + 1 - i
        slope = float(_slope_of(act))
        dropouts = [b for b in between if _plain(items[b][1], (nn.Dropout,))]
        pattern = " + ".join(
            [_base(m).__name__]
            + [_dropout_name(items[b][1]) for b in dropouts]
            + [act_name + (" (inplace)" if act.inplace else "")]
        )
        if kind == "bn":
            what = self.swap_batch_norm(m, slope)
        else:
            cls = _PRODUCERS[_base(m)]
            _swap_class(m, cls)
            m.negative_slope = slope
            what = f"{cls.__name__}(negative_slope={slope:g}) (its bias added in the fused op)"
        if dropouts:
            what += (
                ", then "
                + ", ".join(_join(prefix, items[b][0]) for b in dropouts)
                + " (Dropout, now after the activation: the same result)"
            )
        identity = nn.Identity()
        self.made.add(id(identity))
        seq._modules[items[j][0]] = identity
        self.replaced(
            path,
            pattern,
            f"{what}, {act_path} -> Identity",
            [path] + [_join(prefix, items[b][0]) for b in between] + [act_path],
        )
        for b in between:
            self.seen.add(id(items[b][1]))
        return j + 1 - i

    def fusion_problem(self, m, kind, act, between, rest):
        """Why m cannot be fused with act, across the Identity/Dropout modules between (None: it
        can); rest: the (name, module) pairs after act in the Sequential."""
        slope = _slope_of(act)
        if kind == "layer" and m.bias is None:
            return "bias=False: no bias to add in the fused op (the activation stays torch's)"
        if kind == "bn":
            problem = self.batch_norm_problem(m)
            if problem:
                return problem
        if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not math.isfinite(slope) or slope < 0:
            return f"negative_slope={slope!r}: fastgan's fused ops take a finite slope >= 0"
        if self.uses[id(m)] > 1:
            return f"the {_base(m).__name__} is used in {self.uses[id(m)]} places: fusing would change the others"
        if _output_hooks(m):
            return f"the {_base(m).__name__} has forward/backward hooks, which would see the fused output"
        if _any_hooks(act):
            return "the activation has hooks, which would no longer run"
        if any(_any_hooks(b) for b in between):
            return "a module between them has hooks"
        if kind == "layer":
            if any(_plain(b, (nn.Dropout,)) and b.inplace for b in between):
                return (
                    "Dropout(inplace=True) between them would run after the fused op and overwrite its output, "
                    "which the op's backward reads"
                )
            nxt = next((x for _, x in rest if not _plain(x, (nn.Identity,))), None)
            if nxt is not None and getattr(nxt, "inplace", False) is True:
                return (
                    f"followed by an in-place {type(nxt).__name__}, which would overwrite the fused op's output "
                    "(its backward reads it)"
                )
        return None


# ----------------------------------------------------------------------------------------------
# the final sigmoid

# what may come after the Sigmoid and before the output: shape changes, which sigmoid commutes with
_SHAPE_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity)
_SHAPE_METHODS = {
    "view",
    "reshape",
    "squeeze",
    "unsqueeze",
    "flatten",
    "contiguous",
    "view_as",
    "reshape_as",
    "permute",
    "transpose",
    "t",
    "__getitem__",
}
_SHAPE_FUNCTIONS = {
    torch.flatten,
    torch.squeeze,
    torch.unsqueeze,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.t,
    operator.getitem,
}
_SIGMOID_FUNCTIONS = {torch.sigmoid, F.sigmoid, torch.special.expit}


class _NoSigmoid(ValueError):
    pass


def _final_sigmoid(root, m, path, uses):
    """The path of the nn.Sigmoid that m's output comes from, up to shape changes; raises
    _NoSigmoid saying why where there is none (or it cannot be known)."""
    name = f"{_show(path)} ({type(m).__name__})"
    if _plain(m, (nn.Sigmoid,)):  # a Sequential's slot (or the model): replacing it changes that slot only
        return path
    if _is_sequential(m):
        for child_name, child in reversed(list(m._modules.items())):
            if child is None or _plain(child, _SHAPE_MODULES):
                continue
            return _final_sigmoid(root, child, _join(path, child_name), uses)
        raise _NoSigmoid(f"{name} holds no layer that could be a final Sigmoid")
    if type(m).__module__.startswith("torch.nn") or not m._modules:
        raise _NoSigmoid(f"the output comes from {name}, not from an nn.Sigmoid")
    try:
        graph = torch.fx.symbolic_trace(m).graph
    except Exception as e:  # any failure to trace means: not known
        raise _NoSigmoid(
            f"{name}'s forward cannot be traced by torch.fx ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}), so which layer its output comes from is not "
            f"known; pass strip_sigmoid='<path of the Sigmoid>' to name it"
        ) from None
    node = next(n for n in graph.nodes if n.op == "output").args[0]
    while True:
        if not isinstance(node, torch.fx.Node):
            raise _NoSigmoid(f"{name}'s forward does not return one tensor")
        if node.op == "call_module":
            sub = m.get_submodule(node.target)
            if _plain(sub, _SHAPE_MODULES):
                node = node.args[0]
                continue
            if _plain(sub, (nn.Sigmoid,)):
                if uses[id(sub)] > 1:
                    raise _NoSigmoid(f"{_join(path, node.target)} (Sigmoid) is used in {uses[id(sub)]} places")
                return _join(path, node.target)
            raise _NoSigmoid(
                f"{name}'s forward returns the output of {_join(path, node.target)} "
                f"({type(sub).__name__}), not of an nn.Sigmoid"
            )
        if (node.op == "call_method" and node.target in _SHAPE_METHODS) or (
            node.op == "call_function" and node.target in _SHAPE_FUNCTIONS
        ):
            node = node.args[0]
            continue
        if (node.op == "call_function" and node.target in _SIGMOID_FUNCTIONS) or (
            node.op == "call_method" and node.target == "sigmoid"
        ):
            raise _NoSigmoid(
                f"{name}'s forward calls sigmoid itself, not through an nn.Sigmoid module: remove it there"
            )
        target = getattr(node.target, "__name__", node.target)
        raise _NoSigmoid(f"{name}'s forward returns the result of {node.op} {target}, not of an nn.Sigmoid")


def _strip_sigmoid(root, strip, uses, report):
    """root without its final Sigmoid (nn.Identity in its place); raises ValueError if none."""
    if isinstance(strip, str):
        path = strip
        try:
            m = root.get_submodule(path)
        except AttributeError as e:
            raise ValueError(f"convert: strip_sigmoid={path!r}: no such module ({e})") from None
        if not _plain(m, (nn.Sigmoid,)):
            raise ValueError(f"convert: strip_sigmoid={path!r} is a {type(m).__name__}, not an nn.Sigmoid")
        how = "named by strip_sigmoid"
    else:
        try:
            path = _final_sigmoid(root, root, "", uses)
        except _NoSigmoid as e:
            raise ValueError(f"convert: strip_sigmoid=True, but no final nn.Sigmoid was found: {e}") from None
        how = "final"
    identity = nn.Identity()
    report.replaced.append(Replaced(path, f"Sigmoid ({how})", "Identity: the model returns logits", (path,)))
    if not path:
        return identity, identity
    prefix, _, name = path.rpartition(".")
    parent = root.get_submodule(prefix) if prefix else root
    setattr(parent, name, identity)
    return root, identity


def final_sigmoid(module):
    """The module path of the nn.Sigmoid that `module`'s output comes from (up to shape changes;
    "" for a bare nn.Sigmoid), or None where there is none or it cannot be told (the rules of
    strip_sigmoid=True). The trainer asks this of a user's discriminator: with a path, it trains
    the logits (the Sigmoid stripped); without, it takes the output to be logits already."""
    try:
        return _final_sigmoid(module, module, "", _Converter(module).uses)
    except _NoSigmoid:
        return None


# ----------------------------------------------------------------------------------------------


def convert(module, *, strip_sigmoid=False, report=False):
    """A deep copy of `module` (left untouched) on fastgan's fused ops, with the same state_dict.

    Inside every nn.Sequential: Linear/Conv2d/ConvTranspose2d (with bias) + LeakyReLU/ReLU ->
    the layer with its bias added in ops.bias_leaky_relu; BatchNorm1d/2d + LeakyReLU/ReLU ->
    fastgan.nn.BatchNorm1d/2d(negative_slope=...); the activation's slot becomes nn.Identity.
    Everywhere: a BatchNorm1d/2d alone -> fastgan.nn's. The state_dict keys, shapes and values
    stay the original's, so checkpoints load strictly both ways; outputs and gradients are the
    original's (to rounding), running statistics and num_batches_tracked included.

    strip_sigmoid: True removes the model's final nn.Sigmoid (a discriminator then returns
    logits; ValueError where there is none or it cannot be told); a path ("main.12") removes that
    nn.Sigmoid. report: True returns (model, Report) with each replaced pattern and each module
    left alone and why (print it). See the module's docstring for every rule.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert: module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(strip_sigmoid, (bool, str)):
        raise TypeError(
            f"convert: strip_sigmoid must be True, False or a module path, got {type(strip_sigmoid).__name__}"
        )
    lazy = [name for name, m in module.named_modules() if _is_lazy(m) and m.has_uninitialized_params()]
    if lazy:
        raise ValueError(
            f"convert: {', '.join(_show(p) for p in lazy)}: lazy modules not initialised yet (they "
            "cannot be copied); run one forward pass first"
        )
    root = copy.deepcopy(module)
    converter = _Converter(root)
    if strip_sigmoid is not False:
        root, identity = _strip_sigmoid(root, strip_sigmoid, converter.uses, converter.report)
        converter.root = root
        converter.made.add(id(identity))
    stripped = list(converter.report.replaced)
    converter.report.replaced.clear()
    if _is_sequential(root):
        converter.seen.add(id(root))
        converter.sequential(root, "")
    else:
        converter.visit(root, "", None)
    converter.report.replaced += stripped  # the model's order: the final Sigmoid last
    return (root, converter.report) if report else root


__all__ = [
    "convert",
    "final_sigmoid",
    "Report",
    "Replaced",
    "LeftAlone",
    "FusedLinear",
    "FusedConv2d",
    "FusedConvTranspose2d",
]
