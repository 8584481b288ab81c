"""fastgan.convert: each fused pattern, each module left alone with its reason, state_dicts that
load strictly both ways, outputs, gradients and running statistics equal to the original's in
training and eval (float32 and float64), strip_sigmoid, and the tutorials' models as users write
them."""

import collections
import copy
import io
import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import fastgan
from fastgan import nn as fnn
from fastgan import ops
from fastgan.convert import FusedConv2d, FusedConvTranspose2d, FusedLinear, LeftAlone, Replaced, Report, convert

HAS_CUDA = torch.cuda.is_available() and fastgan.build_info()["cuda_kernels"]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.float64]


def test_the_kernels_are_what_runs():
    """Under FASTGAN_EXPECT_KERNELS=1 (CI) the converted models must run the compiled ops."""
    if os.environ.get("FASTGAN_EXPECT_KERNELS") != "1":
        pytest.skip("FASTGAN_EXPECT_KERNELS is not set")
    assert fastgan.build_info()["cpu_kernels"], fastgan.build_info()["extension_error"]


# ---------------------------------------------------------------------------------------------
# helpers


def close(actual, expected, dtype, what=""):
    tol = TOL[dtype]
    scale = max(1.0, float(expected.abs().max())) if expected.numel() and expected.is_floating_point() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale, msg=lambda m: f"{what}: {m}")


def same_state(a, b, dtype=torch.float32, exact=True):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype, k
        if exact or not sa[k].is_floating_point():
            assert torch.equal(sa[k], sb[k]), k
        else:
            close(sb[k], sa[k], dtype, k)


def run(model, x, seed, extra=()):
    torch.manual_seed(seed)  # the same dropout masks in both models
    return model(x, *extra)


def check_parity(orig, conv, make_x, dtype, steps=3, logits=False, extra=()):
    """conv (fastgan.convert of orig) gives orig's outputs, input and parameter gradients and
    running statistics: `steps` training steps (a small SGD update each), then eval."""
    names = [k for k, _ in orig.named_parameters()]
    assert names == [k for k, _ in conv.named_parameters()]
    g = torch.Generator().manual_seed(1)
    for mode, n in (("train", steps), ("eval", 1)):
        orig.train(mode == "train")
        conv.train(mode == "train")
        for step in range(n):
            x = make_x(g).to(dtype)
            outs, grads = [], []
            for m in (orig, conv):
                xi = x.clone().requires_grad_(x.is_floating_point())
                y = run(m, xi, step, extra)
                if logits and m is conv:
                    y = torch.sigmoid(y)
                w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).view(y.shape)
                (y * w).sum().backward()
                outs.append(y.detach())
                grads.append([xi.grad] + [p.grad for p in m.parameters()])
            close(outs[1], outs[0], dtype, f"{mode} step {step}: output")
            for k, ga, gb in zip(["input"] + names, grads[0], grads[1]):
                if ga is None:
                    assert gb is None, k
                else:
                    close(gb, ga, dtype, f"{mode} step {step}: grad of {k}")
            same_state(orig, conv, dtype, exact=False)  # running stats, num_batches_tracked
            # a small SGD step on the original, and the converted model given its exact state, so
            # that each step is compared from the same weights and statistics (rounding differences
            # are not compounded over the steps)
            with torch.no_grad():
                for p in orig.parameters():
                    p -= 0.01 * p.grad
            orig.zero_grad(set_to_none=True)
            conv.zero_grad(set_to_none=True)
            conv.load_state_dict(orig.state_dict(), strict=True)


def convert_checked(model, **kw):
    """convert(model, report=True, **kw), checking what must hold for every model: the original
    untouched, the state_dict keys, shapes and values equal and loading strictly both ways."""
    before = copy.deepcopy(model.state_dict())
    classes = [type(m) for m in model.modules()]
    conv, report = convert(model, report=True, **kw)
    assert isinstance(report, Report)
    assert [type(m) for m in model.modules()] == classes
    same_state(model, conv)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not {p.data_ptr() for p in model.parameters()} & {p.data_ptr() for p in conv.parameters()}
    conv.load_state_dict(model.state_dict(), strict=True)
    copy.deepcopy(model).load_state_dict(conv.state_dict(), strict=True)
    return conv, report


def reasons(report):
    return {k.path: k.reason for k in report.left_alone}


def patterns(report):
    return {r.path: r.pattern for r in report.replaced}


def x2(n=8, c=6):
    return lambda g: torch.randn(n, c, generator=g)


def x4(n=4, c=3, hw=6):
    return lambda g: torch.randn(n, c, hw, hw, generator=g)


# ---------------------------------------------------------------------------------------------
# the patterns

LAYERS = {
    "linear": (lambda: nn.Linear(6, 5), FusedLinear, x2()),
    "conv": (lambda: nn.Conv2d(3, 5, 3, padding=1), FusedConv2d, x4()),
    "conv_transpose": (lambda: nn.ConvTranspose2d(3, 5, 4, 2, 1), FusedConvTranspose2d, x4()),
}
ACTS = {
    "leaky": (lambda: nn.LeakyReLU(0.2), 0.2),
    "leaky_inplace": (lambda: nn.LeakyReLU(0.1, inplace=True), 0.1),
    "relu": (lambda: nn.ReLU(), 0.0),
    "relu_inplace": (lambda: nn.ReLU(inplace=True), 0.0),
    "leaky_default": (lambda: nn.LeakyReLU(), 0.01),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("layer", list(LAYERS))
def test_layer_with_bias_and_activation_is_fused(layer, act, dtype):
    torch.manual_seed(0)
    make, fused_cls, make_x = LAYERS[layer]
    make_act, slope = ACTS[act]
    model = nn.Sequential(make(), make_act()).to(dtype)
    conv, report = convert_checked(model)
    assert type(conv[0]) is fused_cls and conv[0].negative_slope == slope
    assert isinstance(conv[0], type(model[0]))  # still an nn.Linear / nn.Conv2d ...
    assert type(conv[1]) is nn.Identity
    assert conv[0].bias is not None and "bias" in dict(conv[0].named_parameters())
    assert [r.slots for r in report.replaced] == [("0", "1")]
    assert report.replaced[0].pattern.startswith(type(model[0]).__name__ + " + ")
    check_parity(model, conv, make_x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", [None, 0.0, 0.2])
@pytest.mark.parametrize(
    "options",
    [{}, {"affine": False}, {"track_running_stats": False}, {"momentum": None}, {"momentum": 0.3, "eps": 1e-3}],
)
@pytest.mark.parametrize("dims", [1, 2])
def test_batch_norm_and_activation(dims, options, slope, dtype):
    torch.manual_seed(0)
    bn = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(6, **options)
    with torch.no_grad():
        for p in bn.parameters():
            p.uniform_(0.5, 1.5)
    layers = [bn] + ([] if slope is None else [nn.ReLU() if slope == 0 else nn.LeakyReLU(slope)])
    model = nn.Sequential(*layers, nn.Flatten()).to(dtype)
    conv, report = convert_checked(model)
    assert type(conv[0]) is (fnn.BatchNorm1d if dims == 1 else fnn.BatchNorm2d)
    assert conv[0].negative_slope == slope
    assert (conv[0].affine, conv[0].track_running_stats, conv[0].momentum, conv[0].eps) == (
        bn.affine,
        bn.track_running_stats,
        bn.momentum,
        bn.eps,
    )
    if slope is not None:
        assert type(conv[1]) is nn.Identity and report.replaced[0].slots == ("0", "1")
    check_parity(model, conv, x2(8, 6) if dims == 1 else x4(4, 6, 3), dtype, steps=4)
    if bn.track_running_stats:
        assert int(conv[0].num_batches_tracked) == 4
        assert not torch.equal(conv[0].running_mean, torch.zeros(6, dtype=dtype))


def test_batch_norm1d_on_3d_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(4), nn.LeakyReLU(0.2))
    conv, _ = convert_checked(model)
    check_parity(model, conv, lambda g: torch.randn(3, 4, 5, generator=g), torch.float32)


def test_keras_order_linear_leaky_relu_batch_norm():
    """Dense -> LeakyReLU(0.2) -> BatchNormalization(momentum=0.8): torch's momentum 0.2."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.2), nn.BatchNorm1d(8, momentum=0.2), nn.Linear(8, 3))
    conv, report = convert_checked(model)
    assert [type(m) for m in conv] == [FusedLinear, nn.Identity, fnn.BatchNorm1d, nn.Linear]
    assert conv[2].negative_slope is None and conv[2].momentum == 0.2
    assert patterns(report) == {"0": "Linear + LeakyReLU(0.2)", "2": "BatchNorm1d"}
    assert reasons(report)["3"] == (
        "last in its Sequential, with no LeakyReLU/ReLU after it: nothing to fuse its bias with"
    )
    for dtype in DTYPES:
        check_parity(model.to(dtype), convert(model.to(dtype)), x2(8, 6), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_between_layer_and_activation(dtype):
    """leaky_relu(dropout(x)) = dropout(leaky_relu(x)) with the same mask: the fused op first, the
    Dropout kept in its slot after it (and Identity skipped over)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 16),
        nn.Dropout(0.5),
        nn.Identity(),
        nn.LeakyReLU(0.2),
        nn.BatchNorm1d(16),
        nn.Dropout(0.3, inplace=True),
        nn.ReLU(inplace=True),
        nn.Linear(16, 3),
    ).to(dtype)
    conv, report = convert_checked(model)
    assert [type(m) for m in conv] == [
        FusedLinear,
        nn.Dropout,
        nn.Identity,
        nn.Identity,
        fnn.BatchNorm1d,
        nn.Dropout,
        nn.Identity,
        nn.Linear,
    ]
    assert [r.slots for r in report.replaced] == [("0", "1", "2", "3"), ("4", "5", "6")]
    assert report.replaced[0].pattern == "Linear + Dropout(p=0.5) + LeakyReLU(0.2)"
    check_parity(model, conv, x2(8, 6), dtype)


def test_ordered_dict_and_nested_sequentials():
    torch.manual_seed(0)
    inner = nn.Sequential(
        collections.OrderedDict([("fc", nn.Linear(8, 8)), ("act", nn.LeakyReLU(0.2)), ("bn", nn.BatchNorm1d(8))])
    )
    model = nn.Sequential(
        collections.OrderedDict(
            [
                ("fc1", nn.Linear(6, 8)),
                ("relu1", nn.ReLU()),
                ("block", inner),
                ("deeper", nn.Sequential(nn.Sequential(nn.Linear(8, 4), nn.ReLU()))),
                ("out", nn.Linear(4, 2)),
            ]
        )
    )
    conv, report = convert_checked(model)
    assert type(conv.fc1) is FusedLinear and type(conv.relu1) is nn.Identity
    assert type(conv.block.fc) is FusedLinear and type(conv.block.act) is nn.Identity
    assert type(conv.block.bn) is fnn.BatchNorm1d
    assert type(conv.deeper[0][0]) is FusedLinear and type(conv.deeper[0][1]) is nn.Identity
    assert set(patterns(report)) == {"fc1", "block.fc", "block.bn", "deeper.0.0"}
    assert list(conv.state_dict()) == list(model.state_dict())
    assert "block.fc.bias" in conv.state_dict()
    check_parity(model, conv, x2(8, 6), torch.float32)


class Custom(nn.Module):
    """A custom forward around a Sequential, with layer and batch-norm attributes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.act = nn.LeakyReLU(0.2)
        self.bn = nn.BatchNorm1d(8, momentum=None)
        self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.ELU())
        self.blocks = nn.ModuleList([nn.Linear(8, 8), nn.ReLU(), nn.BatchNorm1d(8)])

    def forward(self, x):
        h = self.bn(self.act(self.fc(x)))
        for m in self.blocks:
            h = m(h)
        return self.body(h) + h


def test_attributes_of_a_custom_module():
    """Outside Sequentials only batch norms are swapped; the custom forward and the layers it
    calls are kept."""
    torch.manual_seed(0)
    model = Custom()
    conv, report = convert_checked(model)
    assert type(conv.fc) is nn.Linear and type(conv.act) is nn.LeakyReLU
    assert type(conv.bn) is fnn.BatchNorm1d and conv.bn.negative_slope is None
    assert type(conv.blocks[0]) is nn.Linear and type(conv.blocks[2]) is fnn.BatchNorm1d
    assert type(conv.body[0]) is FusedLinear and type(conv.body[2]) is fnn.BatchNorm1d
    why = reasons(report)
    assert "not in an nn.Sequential" in why["fc"] and "Custom's forward()" in why["fc"]
    assert "not in an nn.Sequential" in why["act"]
    assert "not in an nn.Sequential" in why["blocks.0"] and "the code iterating blocks" in why["blocks.0"]
    assert "custom forward" in why[""] and "container" in why["blocks"]
    assert why["body.3"] == "no fused op for ELU"
    assert "decided by Custom's forward()" in next(r.replacement for r in report.replaced if r.path == "bn")
    for dtype in DTYPES:
        check_parity(model.to(dtype), convert(model.to(dtype)), x2(8, 6), dtype)


def test_a_batch_norm_as_the_model_itself():
    torch.manual_seed(0)
    model = nn.BatchNorm2d(3)
    conv, report = convert_checked(model)
    assert type(conv) is fnn.BatchNorm2d and patterns(report) == {"": "BatchNorm2d"}
    check_parity(model, conv, x4(), torch.float32)


# ---------------------------------------------------------------------------------------------
# left alone, each with its reason; the model still works and computes the same


class LinearTwice(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 2


def _shared():
    lin = nn.Linear(6, 6)
    return nn.Sequential(lin, nn.ReLU(), lin)


def _hooked(where):
    model = nn.Sequential(nn.Linear(6, 6), nn.LeakyReLU(0.2))
    target = model[0] if where in ("forward", "backward") else model[1]
    if where == "forward":
        target.register_forward_hook(lambda m, i, o: None)
    elif where == "backward":
        target.register_full_backward_hook(lambda m, gi, go: None)
    else:
        target.register_forward_pre_hook(lambda m, i: None)
    return model


LEFT_ALONE = {
    # name: (model, {path: part of the reason}, x)
    "bias_false": (
        lambda: nn.Sequential(nn.Linear(6, 6, bias=False), nn.LeakyReLU(0.2)),
        {"0": "bias=False", "1": "bias=False"},
        x2(),
    ),
    "conv_bias_false_end": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.Tanh()),
        {"0": "nothing to fuse (bias=False)", "1": "no fused op for Tanh"},
        x4(),
    ),
    "negative_slope": (
        lambda: nn.Sequential(nn.Linear(6, 6), nn.LeakyReLU(-0.1)),
        {"0": "slope >= 0", "1": "negative_slope=-0.1"},
        x2(),
    ),
    "bn_negative_slope": (
        lambda: nn.Sequential(nn.BatchNorm1d(6), nn.LeakyReLU(-0.5)),
        {"1": "not fused with 0 (BatchNorm1d): negative_slope=-0.5"},
        x2(),
    ),
    "shared_layer": (_shared, {"0": "used in 2 places", "1": "used in 2 places"}, x2()),
    "forward_hook": (lambda: _hooked("forward"), {"0": "forward/backward hooks"}, x2()),
    "backward_hook": (lambda: _hooked("backward"), {"0": "forward/backward hooks"}, x2()),
    "activation_hook": (lambda: _hooked("act"), {"1": "the activation has hooks"}, x2()),
    "subclass": (
        lambda: nn.Sequential(LinearTwice(6, 6), nn.ReLU()),
        {"0": "custom module (LinearTwice)", "1": "nothing to fuse it with"},
        x2(),
    ),
    "inplace_after": (
        lambda: nn.Sequential(nn.Linear(6, 6), nn.LeakyReLU(0.2), nn.Dropout(0.2, inplace=True)),
        {"0": "in-place Dropout"},
        x2(),
    ),
    "inplace_dropout_between": (
        lambda: nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.2, inplace=True), nn.ReLU()),
        {"0": "Dropout(inplace=True) between", "1": "no fused op for Dropout", "2": "not fused with 0 (Linear)"},
        x2(),
    ),
    "alpha_dropout_between": (
        lambda: nn.Sequential(nn.Linear(6, 6), nn.AlphaDropout(0.2), nn.ReLU()),
        {"0": "followed by AlphaDropout", "1": "no fused op for AlphaDropout", "2": "nothing to fuse it with"},
        x2(),
    ),
    "bn_eps_zero": (
        lambda: nn.Sequential(nn.BatchNorm1d(6, eps=0.0), nn.ReLU()),
        {"0": "eps=0.0", "1": "eps=0.0"},
        x2(),
    ),
    "other_activations": (
        lambda: nn.Sequential(nn.Linear(6, 6), nn.GELU(), nn.Linear(6, 6), nn.Sigmoid(), nn.PReLU(), nn.SiLU()),
        {
            "0": "followed by GELU",
            "1": "no fused op for GELU",
            "3": "no fused op for Sigmoid",
            "4": "no fused op for PReLU",
        },
        x2(),
    ),
    "other_norms": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 1), nn.InstanceNorm2d(4), nn.ReLU(), nn.GroupNorm(2, 4), nn.Unflatten(1, (4, 1))
        ),
        {"1": "no fused op for InstanceNorm2d", "3": "no fused op for GroupNorm"},
        x4(),
    ),
    "batch_norm3d": (
        lambda: nn.Sequential(nn.BatchNorm3d(3), nn.ReLU()),
        {"0": "no fused op for BatchNorm3d"},
        lambda g: torch.randn(2, 3, 2, 2, 2, generator=g),
    ),
    "activation_alone": (
        lambda: nn.Sequential(nn.ReLU(), nn.Linear(6, 6)),
        {"0": "nothing to fuse it with", "1": "last in its Sequential"},
        x2(),
    ),
}


@pytest.mark.parametrize("case", list(LEFT_ALONE))
def test_left_alone_with_its_reason(case):
    torch.manual_seed(0)
    make, expected, make_x = LEFT_ALONE[case]
    model = make()
    conv, report = convert_checked(model)
    why = reasons(report)
    for path, part in expected.items():
        assert path in why, (path, str(report))
        assert part in why[path], (path, why[path])
        assert type(conv.get_submodule(path)) is type(model.get_submodule(path)), path
    # torch (2.13) refuses eps=0 in training as fastgan does: compared in eval there
    check_parity(model, conv, make_x, torch.float32, steps=0 if case == "bn_eps_zero" else 2)


def test_lazy_modules_are_converted_once_initialised():
    model = nn.Sequential(nn.LazyLinear(6), nn.ReLU(), nn.LazyBatchNorm1d())
    with pytest.raises(ValueError, match=r"0, 2: lazy modules not initialised yet .* run one forward pass first"):
        convert(model)
    model(torch.randn(4, 5))
    conv, report = convert_checked(model)
    assert [type(m) for m in conv] == [FusedLinear, nn.Identity, fnn.BatchNorm1d]


def test_batch_norm_with_hooks_or_shared_is_swapped_but_not_fused():
    """A hook on a batch norm sees the same output once it is fastgan's, and a batch norm used
    twice runs the same in both places: swapped; fused with its activation neither."""
    torch.manual_seed(0)
    seen = []
    hooked = nn.Sequential(nn.BatchNorm1d(6), nn.ReLU())
    hooked[0].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    bn = nn.BatchNorm1d(6)
    shared = nn.Sequential(bn, nn.LeakyReLU(0.2), nn.Linear(6, 6), bn, nn.ReLU())
    for model, reason in ((hooked, "forward/backward hooks"), (shared, "used in 2 places")):
        conv, report = convert_checked(model)
        assert type(conv[0]) is fnn.BatchNorm1d and conv[0].negative_slope is None
        assert reason in reasons(report)["1"]
        assert type(conv[1]) is type(model[1])
        check_parity(model, conv, x2(8, 6), torch.float32, steps=2)
    assert conv[3] is conv[0]
    # the hook saw the same batch-norm outputs in both models (train steps, then eval)
    for a, b in zip(seen[0::2], seen[1::2]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_pre_hooks_and_old_spectral_norm_are_kept():
    """A forward pre-hook sees the same input, so the fused layer keeps it and it runs;
    torch.nn.utils.spectral_norm (a pre-hook computing weight) keeps working."""
    torch.manual_seed(0)
    calls = []
    model = nn.Sequential(nn.utils.spectral_norm(nn.Linear(6, 8)), nn.LeakyReLU(0.1), nn.Linear(8, 4), nn.ReLU())
    model[2].register_forward_pre_hook(lambda m, i: calls.append(i[0].shape))
    conv, report = convert_checked(model)
    assert type(conv[0]) is FusedLinear and type(conv[2]) is FusedLinear
    assert "0.weight_orig" in conv.state_dict() and "0.weight_u" in conv.state_dict()
    check_parity(model, conv, x2(8, 6), torch.float32)
    assert len(calls) == 2 * 4  # both models, 3 train steps and eval


def test_parametrized_layers_keep_their_parametrizations():
    torch.manual_seed(0)
    sn = nn.utils.parametrizations.spectral_norm
    wn = nn.utils.parametrizations.weight_norm
    model = nn.Sequential(sn(nn.Conv2d(3, 4, 3)), nn.LeakyReLU(0.2), wn(nn.Conv2d(4, 4, 1)), nn.ReLU())
    conv, report = convert_checked(model)
    for m in (conv[0], conv[2]):
        assert isinstance(m, FusedConv2d) and nn.utils.parametrize.is_parametrized(m)
    assert "0.parametrizations.weight.original" in conv.state_dict()
    check_parity(model, conv, x4(), torch.float32)
    nn.utils.parametrize.remove_parametrizations(conv[2], "weight")
    assert type(conv[2]) is FusedConv2d
    conv(torch.randn(2, 3, 5, 5))


def test_the_original_is_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.BatchNorm1d(6), nn.LeakyReLU(0.2), nn.Sigmoid())
    model[0].register_forward_pre_hook(lambda m, i: None)
    snapshot = copy.deepcopy(model)
    conv = convert(model, strip_sigmoid=True)
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.LeakyReLU, nn.Sigmoid]
    assert len(model[0]._forward_pre_hooks) == 1
    x = torch.randn(4, 6)
    model.train()
    conv.train()
    model(x)
    conv(x)
    conv(x)
    assert int(model[2].num_batches_tracked) == 1 and int(conv[2].num_batches_tracked) == 2
    assert torch.equal(model[0].weight, snapshot[0].weight)


def test_state_dict_round_trip_through_a_file():
    """A checkpoint of the user's model loads strictly into the converted one, and the converted
    one's back into a freshly built original."""
    torch.manual_seed(0)
    build = lambda: nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(16, 5),
        nn.ReLU(),
        nn.BatchNorm1d(5, affine=False),
    )
    model = build()
    model(torch.randn(4, 3, 4, 4))  # running stats that are not the defaults
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    fresh = build()
    conv = convert(fresh)
    buf.seek(0)
    conv.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    same_state(model, conv)
    buf = io.BytesIO()
    torch.save(conv.state_dict(), buf)
    buf.seek(0)
    back = build()
    back.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    same_state(model, back)
    # and the whole converted module pickles (module-level classes)
    buf = io.BytesIO()
    torch.save(conv, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    assert type(again[0]) is nn.Conv2d and type(again[4]) is FusedLinear
    conv.eval()
    again.eval()
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(again(x), conv(x), rtol=0, atol=0)


def test_converting_twice_changes_nothing_more():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.BatchNorm1d(6), nn.Linear(6, 2))
    once = convert(model)
    twice, report = convert(once, report=True)
    assert [type(m) for m in twice] == [type(m) for m in once]
    assert report.replaced == []
    assert "already fastgan's" in reasons(report)["0"]
    # and a fastgan batch norm already there, followed by an activation, gets it fused
    model = nn.Sequential(fnn.BatchNorm1d(6), nn.ReLU())
    conv = convert(model)
    assert conv[0].negative_slope == 0.0 and type(conv[1]) is nn.Identity


def test_layers_on_other_input_ranks():
    """A Linear on (N, L, F) and (F,) inputs (features last, not dim 1), an unbatched conv input,
    ConvTranspose2d's output_size and a channels_last conv."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.LeakyReLU(0.2))
    conv = convert(model)
    for shape in ((4, 3, 6), (6,), (2, 2, 3, 6), (0, 6)):
        x = torch.randn(shape)
        torch.testing.assert_close(conv(x), model(x), rtol=1e-5, atol=1e-6)
    for layer in (nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(3, 4, 3, 2)):
        model = nn.Sequential(layer, nn.ReLU())
        conv = convert(model)
        x = torch.randn(3, 5, 5)
        torch.testing.assert_close(conv(x), model(x), rtol=1e-5, atol=1e-6)
        x = torch.randn(2, 3, 5, 5).to(memory_format=torch.channels_last)
        torch.testing.assert_close(conv(x), model(x), rtol=1e-5, atol=1e-6)
    convt = nn.ConvTranspose2d(3, 4, 3, 2)
    fused = convert(nn.Sequential(convt, nn.ReLU()))[0]
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(
        fused(x, output_size=[12, 12]), F.relu(convt(x, output_size=[12, 12])), rtol=1e-5, atol=1e-6
    )


def test_one_value_per_channel_is_refused_as_torch_does():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU())
    conv = convert(model)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(torch.randn(1, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        conv(torch.randn(1, 3))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_an_empty_batch_in_training(momentum):
    model = nn.Sequential(nn.BatchNorm2d(3, momentum=momentum), nn.ReLU())
    conv = convert(model)
    x = torch.randn(0, 3, 4, 4)
    assert model(x).shape == (0, 3, 4, 4) and int(model[0].num_batches_tracked) == 1
    y = conv(x)
    assert y.shape == (0, 3, 4, 4) and int(conv[0].num_batches_tracked) == 1
    same_state(model, conv)


def test_an_empty_batch_in_eval_works():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.ReLU()).eval()
    assert convert(model)(torch.randn(0, 3)).shape == (0, 4)


# ---------------------------------------------------------------------------------------------
# strip_sigmoid


class ExamplesD(nn.Module):
    """pytorch/examples' DCGAN discriminator: the ngpu branch and .view(-1, 1).squeeze(1)."""

    def __init__(self, ngpu=1, nc=3, ndf=8):
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, input):
        if input.is_cuda and self.ngpu > 1:
            output = nn.parallel.data_parallel(self.main, input, range(self.ngpu))
        else:
            output = self.main(input)
        return output.view(-1, 1).squeeze(1)


class ExamplesG(nn.Module):
    """pytorch/examples' DCGAN generator (64x64, 3 channels), small widths."""

    def __init__(self, ngpu=1, nz=16, ngf=8, nc=3):
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, input):
        return self.main(input)


class TutorialD(nn.Module):
    """The PyTorch DCGAN tutorial's discriminator: forward returns self.main(input)."""

    def __init__(self):
        super().__init__()
        self.main = ExamplesD().main

    def forward(self, input):
        return self.main(input)


def test_strip_sigmoid_in_a_sequential():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 8), nn.LeakyReLU(0.2), nn.Sequential(nn.Linear(8, 1), nn.Sigmoid()), nn.Flatten(0)
    )
    conv, report = convert_checked(model, strip_sigmoid=True)
    assert type(conv[2][1]) is nn.Identity
    assert report.replaced[-1] == Replaced("2.1", "Sigmoid (final)", "Identity: the model returns logits", ("2.1",))
    assert "followed by the removed Sigmoid" in reasons(report)["2.0"]
    check_parity(model, conv, x2(8, 6), torch.float32, logits=True)
    # without strip_sigmoid the Sigmoid stays, and says why
    conv, report = convert(model, report=True)
    assert type(conv[2][1]) is nn.Sigmoid and "strip" not in reasons(report)["2.1"]


def test_strip_sigmoid_traced_through_a_custom_forward():
    torch.manual_seed(0)
    conv, report = convert_checked(TutorialD(), strip_sigmoid=True)
    assert type(conv.main[12]) is nn.Identity and patterns(report)["main.12"] == "Sigmoid (final)"


def test_strip_sigmoid_where_forward_cannot_be_traced_names_the_path():
    """pytorch/examples' D branches on input.is_cuda: torch.fx cannot trace it, so True is refused
    saying so, and the path names the Sigmoid instead."""
    torch.manual_seed(0)
    model = ExamplesD()
    with pytest.raises(ValueError, match=r"cannot be traced by torch\.fx.*strip_sigmoid='<path"):
        convert(model, strip_sigmoid=True)
    conv, report = convert_checked(model, strip_sigmoid="main.12")
    assert type(conv.main[12]) is nn.Identity
    assert patterns(report)["main.12"] == "Sigmoid (named by strip_sigmoid)"
    check_parity(model, conv, lambda g: torch.randn(2, 3, 64, 64, generator=g), torch.float32, steps=2, logits=True)


class FunctionalSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))


class ScaledOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())

    def forward(self, x):
        return self.net(x) * 2


@pytest.mark.parametrize(
    "model, message",
    [
        (lambda: nn.Sequential(nn.Linear(4, 1)), "comes from 0 (Linear), not from an nn.Sigmoid"),
        (lambda: nn.Sequential(nn.Linear(4, 4), nn.Tanh()), "comes from 1 (Tanh)"),
        (lambda: nn.Sequential(), "holds no layer"),
        (lambda: FunctionalSigmoid(), "calls sigmoid itself"),
        (lambda: ScaledOutput(), "returns the result of call_function mul"),
        (lambda: nn.Linear(4, 1), "not from an nn.Sigmoid"),
    ],
)
def test_strip_sigmoid_without_a_final_sigmoid_is_an_error(model, message):
    with pytest.raises(ValueError, match="no final nn.Sigmoid was found") as e:
        convert(model(), strip_sigmoid=True)
    assert message in str(e.value)


def test_strip_sigmoid_arguments():
    model = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())
    with pytest.raises(ValueError, match="is a Linear, not an nn.Sigmoid"):
        convert(model, strip_sigmoid="0")
    with pytest.raises(ValueError, match="no such module"):
        convert(model, strip_sigmoid="7")
    with pytest.raises(TypeError, match="strip_sigmoid must be"):
        convert(model, strip_sigmoid=1)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        convert(lambda x: x)
    assert type(convert(nn.Sigmoid(), strip_sigmoid=True)) is nn.Identity


# ---------------------------------------------------------------------------------------------
# the report


def test_report_format():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1), nn.Sigmoid())
    conv, report = convert(model, strip_sigmoid=True, report=True)
    assert report.replaced == [
        Replaced(
            "0",
            "Linear + LeakyReLU(0.2)",
            "FusedLinear(negative_slope=0.2) (its bias added in the fused op), 1 -> Identity",
            ("0", "1"),
        ),
        Replaced("3", "Sigmoid (final)", "Identity: the model returns logits", ("3",)),
    ]
    assert report.left_alone == [
        LeftAlone(
            "2", "Linear", "followed by the removed Sigmoid, not by LeakyReLU/ReLU: nothing to fuse its bias with"
        )
    ]
    text = str(report)
    assert text.splitlines()[0] == "fastgan.convert: 2 replaced, 1 left alone"
    assert "  0, 1 " in text and "Linear + LeakyReLU(0.2) -> FusedLinear" in text
    assert "left alone:" in text and "  2 " in text
    d = report.as_dict()
    assert d["replaced"][0]["slots"] == ("0", "1") and d["left_alone"][0]["module"] == "Linear"
    assert isinstance(convert(model), nn.Sequential)  # report=False: the module alone
    assert "(model)" in str(convert(Custom(), report=True)[1])


def test_the_package_exports_convert():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    assert type(fastgan.convert(model)[0]) is FusedLinear


# ---------------------------------------------------------------------------------------------
# the tutorials' models as users write them


def tutorial_mlp_gan(act):
    """The PyTorch tutorial's MLP GAN (MNIST 28x28)."""
    G = nn.Sequential(
        nn.Linear(100, 256),
        act(),
        nn.Linear(256, 512),
        act(),
        nn.Linear(512, 1024),
        act(),
        nn.Linear(1024, 784),
        nn.Tanh(),
    )
    D = nn.Sequential(
        nn.Linear(784, 1024),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(1024, 512),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(512, 256),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(256, 1),
        nn.Sigmoid(),
    )
    return G, D


@pytest.mark.parametrize("act", [nn.ReLU, lambda: nn.LeakyReLU(0.2)])
def test_tutorial_mlp_gan(act):
    torch.manual_seed(0)
    G, D = tutorial_mlp_gan(act)
    Gc, reportG = convert_checked(G)
    Dc, reportD = convert_checked(D, strip_sigmoid=True)
    assert [type(m) for m in Gc][:6] == [FusedLinear, nn.Identity] * 3
    assert type(Gc[6]) is nn.Linear and "followed by Tanh" in reasons(reportG)["6"]
    assert [type(m) for m in Dc] == [FusedLinear, nn.Identity, nn.Dropout] * 3 + [nn.Linear, nn.Identity]
    assert len(reportD.replaced) == 4
    check_parity(G, Gc, lambda g: torch.randn(8, 100, generator=g), torch.float32, steps=2)
    check_parity(D, Dc, lambda g: torch.rand(8, 784, generator=g) * 2 - 1, torch.float32, steps=2, logits=True)
    # the logits go to fastgan's fused loss: the tutorial's BCELoss on the sigmoid, to rounding
    G.eval(), D.eval(), Gc.eval(), Dc.eval()
    z, real = torch.randn(8, 100), torch.rand(8, 784) * 2 - 1
    bce = nn.BCELoss()
    expected = bce(D(real), torch.ones(8, 1)) + bce(D(G(z)), torch.zeros(8, 1))
    torch.testing.assert_close(ops.gan_d_loss(Dc(real), Dc(Gc(z))), expected, rtol=1e-5, atol=1e-6)


def test_keras_mlp_gan_with_batch_norm():
    """The Keras GAN's generator: Dense -> LeakyReLU(0.2) -> BatchNormalization(momentum=0.8),
    i.e. torch's momentum 0.2."""
    torch.manual_seed(0)

    def block(i, o):
        return [nn.Linear(i, o), nn.LeakyReLU(0.2), nn.BatchNorm1d(o, momentum=0.2)]

    G = nn.Sequential(*block(100, 256), *block(256, 512), *block(512, 1024), nn.Linear(1024, 784), nn.Tanh())
    Gc, report = convert_checked(G)
    assert [type(m) for m in Gc][:9] == [FusedLinear, nn.Identity, fnn.BatchNorm1d] * 3
    assert all(m.negative_slope is None and m.momentum == 0.2 for m in Gc if isinstance(m, fnn.BatchNorm1d))
    check_parity(G, Gc, lambda g: torch.randn(16, 100, generator=g), torch.float32, steps=3)
    G64 = copy.deepcopy(G).double()
    check_parity(G64, convert(G64), lambda g: torch.randn(16, 100, generator=g), torch.float64, steps=2)


def test_pytorch_examples_dcgan_64x64():
    """bias=False convolutions: nothing to fuse for the bias, but BatchNorm + ReLU/LeakyReLU fuse."""
    torch.manual_seed(0)
    G, D = ExamplesG(), ExamplesD()
    Gc, reportG = convert_checked(G)
    Dc, reportD = convert_checked(D, strip_sigmoid="main.12")
    assert [type(m) for m in Gc.main] == [nn.ConvTranspose2d, fnn.BatchNorm2d, nn.Identity] * 4 + [
        nn.ConvTranspose2d,
        nn.Tanh,
    ]
    assert all(m.negative_slope == 0.0 for m in Gc.main if isinstance(m, fnn.BatchNorm2d))
    assert "nothing to fuse (bias=False)" in reasons(reportG)["main.0"]
    assert [type(m) for m in Dc.main] == [nn.Conv2d, nn.LeakyReLU] + [nn.Conv2d, fnn.BatchNorm2d, nn.Identity] * 3 + [
        nn.Conv2d,
        nn.Identity,
    ]
    assert "bias=False" in reasons(reportD)["main.0"] and "bias=False" in reasons(reportD)["main.1"]
    assert patterns(reportD)["main.3"] == "BatchNorm2d + LeakyReLU(0.2) (inplace)"
    check_parity(G, Gc, lambda g: torch.randn(2, 16, 1, 1, generator=g), torch.float32, steps=2)
    check_parity(D, Dc, lambda g: torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.float32, steps=2, logits=True)


class CondG(nn.Module):
    """PyTorch-GAN's cgan.py generator (its BatchNorm1d(out_feat, 0.8) sets eps=0.8), small."""

    def __init__(self, n_classes=10, latent=8, img=(1, 6, 6)):
        super().__init__()
        self.img_shape = img
        self.label_emb = nn.Embedding(n_classes, n_classes)

        def block(in_feat, out_feat, normalize=True):
            layers = [nn.Linear(in_feat, out_feat)]
            if normalize:
                layers.append(nn.BatchNorm1d(out_feat, 0.8))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        self.model = nn.Sequential(
            *block(latent + n_classes, 16, normalize=False), *block(16, 32), nn.Linear(32, 36), nn.Tanh()
        )

    def forward(self, noise, labels):
        gen_input = torch.cat((self.label_emb(labels), noise), -1)
        img = self.model(gen_input)
        return img.view(img.size(0), *self.img_shape)


class CondD(nn.Module):
    def __init__(self, n_classes=10, pixels=36):
        super().__init__()
        self.label_embedding = nn.Embedding(n_classes, n_classes)
        self.model = nn.Sequential(
            nn.Linear(n_classes + pixels, 32),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(32, 32),
            nn.Dropout(0.4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(32, 1),
            nn.Sigmoid(),
        )

    def forward(self, img, labels):
        d_in = torch.cat((img.view(img.size(0), -1), self.label_embedding(labels)), -1)
        validity = self.model(d_in)
        return validity.squeeze(1)


def test_conditional_gan_with_an_embedding():
    torch.manual_seed(0)
    G, D = CondG(), CondD()
    Gc, reportG = convert_checked(G)
    Dc, reportD = convert_checked(D, strip_sigmoid=True)  # traced: forward's result is model.6's
    assert [type(m) for m in Gc.model] == [
        FusedLinear,
        nn.Identity,
        nn.Linear,
        fnn.BatchNorm1d,
        nn.Identity,
        nn.Linear,
        nn.Tanh,
    ]
    assert Gc.model[3].eps == 0.8 and Gc.model[3].negative_slope == 0.2
    assert reasons(reportG)["label_emb"] == "no fused op for Embedding"
    assert "custom forward" in reasons(reportG)[""]
    assert [type(m) for m in Dc.model] == [
        FusedLinear,
        nn.Identity,
        FusedLinear,
        nn.Dropout,
        nn.Identity,
        nn.Linear,
        nn.Identity,
    ]
    labels = torch.arange(8) % 10
    check_parity(G, Gc, lambda g: torch.randn(8, 8, generator=g), torch.float32, extra=(labels,))
    check_parity(D, Dc, lambda g: torch.rand(8, 1, 6, 6, generator=g), torch.float32, logits=True, extra=(labels,))
    for dtype in DTYPES[1:]:
        G64, D64 = copy.deepcopy(G).to(dtype), copy.deepcopy(D).to(dtype)
        check_parity(G64, convert(G64), lambda g: torch.randn(8, 8, generator=g), dtype, extra=(labels,))
        check_parity(
            D64,
            convert(D64, strip_sigmoid=True),
            lambda g: torch.rand(8, 1, 6, 6, generator=g),
            dtype,
            logits=True,
            extra=(labels,),
        )


# ---------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and the CUDA kernels")
def test_converted_models_on_cuda():
    torch.manual_seed(0)
    pairs = [
        (ExamplesG().cuda(), lambda g: torch.randn(4, 16, 1, 1, generator=g).cuda(), False),
        (TutorialD().cuda(), lambda g: (torch.rand(4, 3, 64, 64, generator=g) * 2 - 1).cuda(), True),
    ]
    G, D = tutorial_mlp_gan(nn.ReLU)
    pairs += [
        (G.cuda(), lambda g: torch.randn(8, 100, generator=g).cuda(), False),
        (D.cuda(), lambda g: (torch.rand(8, 784, generator=g) * 2 - 1).cuda(), True),
    ]
    for model, make_x, logits in pairs:
        conv = convert(model, strip_sigmoid=logits)
        assert all(p.is_cuda for p in conv.parameters())
        # cuDNN/cuBLAS may sum in another order than the original's kernels: no deterministic
        # 1e-5 promise for float32 on a GPU, so float64 holds the contract there
        m64, c64 = copy.deepcopy(model).double(), copy.deepcopy(conv).double()
        check_parity(m64, c64, make_x, torch.float64, steps=2, logits=logits)
