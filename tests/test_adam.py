"""fastgan.optim.Adam / ops.adam_: the update torch.optim.Adam makes, one launch per group."""

import copy
import inspect

import pytest
import torch

import fastgan
from fastgan import ops
from fastgan.ops import reference
from fastgan.optim import FLAG_DEFAULTS, Adam

from op_testing import DEVICES, HAS_CUDA, requires_kernels


def _params(device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (1,), (33, 4, 3), (1000,), (70, 600)]  # vector bodies and tails; CPU: 2+ threads
    return [torch.randn(s, generator=gen, dtype=dtype).to(device).requires_grad_() for s in shapes]


def _train(opt_cls, params, steps, **kw):
    opt = opt_cls(params, **kw)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
        opt.step()
    return opt


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("eps", [1e-8, 0.5])  # 0.5: comparable to sqrt(v), where it goes matters
def test_matches_torch_adam(device, dtype, weight_decay, eps):
    kw = dict(lr=1e-2, betas=(0.5, 0.999), eps=eps, weight_decay=weight_decay)
    ours, theirs = _params(device, dtype), _params(device, dtype)
    opt = _train(Adam, ours, 6, **kw)
    _train(torch.optim.Adam, theirs, 6, **kw)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **tol)
    assert all(float(opt.state[p]["step"]) == 6 for p in ours)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_reference_is_torch_adam(weight_decay):
    """fastgan.ops.reference.adam_, the kernels' ground truth, is torch.optim.Adam's update
    (float64, an eps comparable to sqrt(v) and a zero gradient row, where eps's place shows)."""
    kw = dict(lr=1e-2, betas=(0.5, 0.9), eps=0.5, weight_decay=weight_decay)
    theirs = _params("cpu", torch.float64)
    ours = [p.detach().clone() for p in theirs]
    m, v = [torch.zeros_like(p) for p in ours], [torch.zeros_like(p) for p in ours]
    opt = torch.optim.Adam(theirs, **kw)
    gen = torch.Generator().manual_seed(1)
    for step in range(1, 5):
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) * (step % 2) for p in theirs]
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        opt.step()
        reference.adam_(ours, grads, m, v, torch.tensor(float(step)), kw["lr"], *kw["betas"], kw["eps"], weight_decay)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(lr=-1e-3), "lr must be >= 0"),
        (dict(eps=-1e-8), "eps must be >= 0"),
        (dict(betas=(1.0, 0.999)), "betas"),
        (dict(betas=(0.5, 1.0)), "betas"),
        (dict(betas=(-0.1, 0.9)), "betas"),
        (dict(weight_decay=-0.1), "weight_decay must be >= 0"),
    ],
)
def test_bad_hyperparameters_are_refused_at_construction(kw, match):
    with pytest.raises(ValueError, match=match):
        Adam([torch.zeros(3, requires_grad=True)], **kw)


def test_state_dict_loads_both_ways():
    kw = dict(lr=1e-2, betas=(0.5, 0.999))
    a, b = _params("cpu", torch.float32), _params("cpu", torch.float32)
    opt_a = _train(Adam, a, 3, **kw)
    opt_b = _train(torch.optim.Adam, b, 3, **kw)
    # swap optimizer states, then continue: each keeps matching the other
    a2, b2 = [p.detach().clone().requires_grad_() for p in a], [p.detach().clone().requires_grad_() for p in b]
    torch_from_ours = torch.optim.Adam(b2, **kw)
    torch_from_ours.load_state_dict(opt_a.state_dict())
    ours_from_torch = Adam(a2, **kw)
    ours_from_torch.load_state_dict(opt_b.state_dict())
    gen = torch.Generator().manual_seed(5)
    for _ in range(2):
        for p, q in zip(a2, b2):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        ours_from_torch.step()
        torch_from_ours.step()
    for p, q in zip(a2, b2):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_kernel_matches_reference_and_skips_params_without_grad():
    params = _params("cpu", torch.float32)
    params[1].grad = None
    opt = _train(Adam, params[:1], 1, lr=0.1)
    assert params[1].grad is None and params[1] not in opt.state
    p = [torch.randn(10), torch.randn(3, 3)]
    g = [torch.randn(10), torch.randn(3, 3)]
    m = [torch.randn(10), torch.randn(3, 3)]
    v = [torch.rand(10), torch.rand(3, 3)]
    step = torch.tensor(3.0)
    copies = [[t.clone() for t in ts] for ts in (p, m, v)]
    ops.adam_(p, g, m, v, step, 0.01, 0.9, 0.99, 1e-8, 0.1)
    reference.adam_(copies[0], g, copies[1], copies[2], step, 0.01, 0.9, 0.99, 1e-8, 0.1)
    for a, b in zip(p + m + v, copies[0] + copies[1] + copies[2]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("empty_at", [None, 0, 23, 24])
def test_more_tensors_than_one_launch_takes_with_empty_ones(device, empty_at):
    """On CUDA one launch takes up to 24 non-empty tensors: a window that skipped an empty one used
    to overlap the next launch's, which updated a parameter twice."""
    gen = torch.Generator().manual_seed(7)
    shapes = [(0,) if i == empty_at else (3 + i % 4,) for i in range(51)]
    p, g, m = ([torch.randn(s, generator=gen).to(device) for s in shapes] for _ in range(3))
    v = [torch.rand(s, generator=gen).to(device) for s in shapes]
    step = torch.tensor(2.0, device=device)
    want = [[t.clone() for t in ts] for ts in (p, m, v)]
    ops.adam_(p, g, m, v, step, 0.01, 0.9, 0.99, 1e-8, 0.0)
    reference.adam_(want[0], g, want[1], want[2], step, 0.01, 0.9, 0.99, 1e-8, 0.0)
    for a, b in zip(p + m + v, want[0] + want[1] + want[2]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_params(device):
    """Convolution weights in channels_last: the kernel walks param, grad and state as flat
    arrays in the same layout; the state is made in the parameter's layout, and a gradient
    or loaded state laid out otherwise is copied into it, so the update is torch's."""
    gen = torch.Generator().manual_seed(0)
    make = lambda: torch.randn(8, 3, 4, 4, generator=gen).to(device)
    ours = make().to(memory_format=torch.channels_last).requires_grad_()
    theirs = ours.detach().clone().contiguous().requires_grad_()
    opt, ref = Adam([ours], lr=1e-2), torch.optim.Adam([theirs], lr=1e-2)
    for i in range(4):
        g = make()
        ours.grad = g if i % 2 else g.to(memory_format=torch.channels_last)  # contiguous every other step
        theirs.grad = g.clone()
        opt.step()
        ref.step()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    for k in ("exp_avg", "exp_avg_sq"):
        assert opt.state[ours][k].is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(opt.state[ours][k], ref.state[theirs][k], rtol=1e-5, atol=1e-6)
    # a state saved from NCHW parameters loads into channels_last ones
    again = ours.detach().clone().contiguous().to(memory_format=torch.channels_last).requires_grad_()
    opt2 = Adam([again], lr=1e-2)
    opt2.load_state_dict(ref.state_dict())
    again.grad = ours.grad.clone()
    opt2.step()
    assert opt2.state[again]["exp_avg"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "args,match,exc",
    [
        (lambda p: ([p], [], [p], [p]), "same length", ValueError),
        (lambda p: ([p], [p.double()], [p], [p]), r"grads\[0\] must have params\[0\]'s dtype", TypeError),
        (lambda p: ([p], [p[:2]], [p], [p]), r"grads\[0\] must have params\[0\]'s shape", ValueError),
        (lambda p: ([p.long()], [p.long()], [p.long()], [p.long()]), "float32 or float64", TypeError),
    ],
)
def test_bad_arguments(args, match, exc):
    p = torch.randn(4)
    q = torch.randn(2, 3, 2, 2).to(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r"grads\[0\] must have params\[0\]'s memory layout"):
        ops.adam_([q], [q.contiguous()], [q.clone()], [q.clone()], torch.tensor(1.0), 1e-3, 0.9, 0.999)
    with pytest.raises(ValueError, match=r"params\[0\] must be dense"):
        r = torch.randn(4, 4)[:, :2]
        ops.adam_([r], [r], [r], [r], torch.tensor(1.0), 1e-3, 0.9, 0.999)
    with pytest.raises(exc, match=match):
        ops.adam_(*args(p), torch.tensor(1.0), 1e-3, 0.9, 0.999)
    with pytest.raises(ValueError, match="beta1 must be in"):
        ops.adam_([p], [p], [p.clone()], [p.clone()], torch.tensor(1.0), 1e-3, 1.5, 0.999)


@requires_kernels
def test_opcheck():
    p = [torch.randn(5), torch.randn(2, 3)]
    args = (
        p,
        [torch.randn_like(t) for t in p],
        [torch.zeros_like(t) for t in p],
        [torch.zeros_like(t) for t in p],
        torch.tensor(1.0),
        1e-3,
        0.9,
        0.999,
        1e-8,
        0.0,
    )
    torch.library.opcheck(torch.ops.fastgan.adam_.default, args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and the CUDA kernels")
def test_steps_inside_a_cuda_graph():
    from fastgan.train.graph import GraphedStep

    params = _params("cuda", torch.float32)
    grads = [torch.randn_like(p) for p in params]
    opt = Adam(params, lr=1e-2)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    ref = torch.optim.Adam(ref_params, lr=1e-2)

    def step():
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        return params[0]

    graphed = GraphedStep(step, warmup=2)
    for _ in range(6):
        graphed()
        for p, g in zip(ref_params, grads):
            p.grad = g.clone()
        ref.step()
    torch.cuda.synchronize()
    for a, b in zip(params, ref_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert graphed.graph is not None and float(opt.state[params[0]]["step"]) == 6


@pytest.mark.parametrize("device", DEVICES)
def test_a_parameter_that_skipped_steps_keeps_its_own_step_count(device):
    # torch.optim.Adam counts steps per parameter: one without a gradient at some step is behind
    # the others and gets its own bias correction. fastgan's adam_ takes one count per launch,
    # so Adam launches once per distinct count (from its host-side counts: no device read).
    kw = dict(lr=1e-2, betas=(0.5, 0.999))
    ours, theirs = _params(device, torch.float32), _params(device, torch.float32)
    opt, ref = Adam(ours, **kw), torch.optim.Adam(theirs, **kw)
    gen = torch.Generator().manual_seed(3)
    for step in range(6):
        for i, (p, q) in enumerate(zip(ours, theirs)):
            skip = (i == 1 and step < 3) or (i == 4 and step % 2 == 0)
            p.grad = None if skip else torch.randn(p.shape, generator=gen).to(device)
            q.grad = None if skip else p.grad.clone()
        opt.step()
        ref.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert float(opt.state[p]["step"]) == float(ref.state[q]["step"])
    assert [float(opt.state[p]["step"]) for p in ours][:2] == [6, 3]


def test_loaded_step_counts_are_kept_per_parameter():
    kw = dict(lr=1e-2, betas=(0.5, 0.999))
    ps = _params("cpu", torch.float32)
    ref = torch.optim.Adam(ps, **kw)
    gen = torch.Generator().manual_seed(4)
    for step in range(3):
        for i, p in enumerate(ps):
            p.grad = None if (i == 0 and step == 0) else torch.randn(p.shape, generator=gen)
        ref.step()
    ours = [p.detach().clone().requires_grad_() for p in ps]
    opt = Adam(ours, **kw)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))  # counts: 2 for the first parameter, 3 for the rest
    for p, q in zip(ours, ps):
        q.grad = torch.randn(q.shape, generator=gen)
        p.grad = q.grad.clone()
    opt.step()
    ref.step()
    for p, q in zip(ours, ps):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_a_group_may_mix_float32_and_float64_parameters():
    kw = dict(lr=1e-2, betas=(0.5, 0.999))
    ours = [torch.randn(5, 3, requires_grad=True), torch.randn(4, dtype=torch.float64, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    _train(Adam, ours, 3, **kw)
    _train(torch.optim.Adam, theirs, 3, **kw)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flag", ["amsgrad", "maximize", "decoupled_weight_decay", "differentiable"])
def test_a_state_dict_with_an_update_it_does_not_make_is_refused(flag):
    """A torch.optim.Adam state_dict with amsgrad/maximize/decoupled_weight_decay/differentiable on
    would load and then silently run plain Adam; it is refused before anything changes."""
    p, q = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
    theirs = torch.optim.Adam([p], lr=0.1, **{flag: True})
    p.grad = torch.randn(5)
    if flag != "differentiable":  # (torch's differentiable step cannot update a leaf in place)
        theirs.step()
    ours = Adam([q], lr=0.2)
    before = copy.deepcopy(ours.state_dict())
    with pytest.raises(ValueError, match=f"param group 0 has {flag}=True"):
        ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict() == before
    # the same options off load as before
    Adam([q]).load_state_dict(torch.optim.Adam([p], **{flag: False}).state_dict())


def test_a_number_step_in_a_loaded_state_is_made_a_tensor():
    # torch < 1.12 checkpoints (and hand-written states) hold the step as a Python number
    p = torch.nn.Parameter(torch.randn(3))
    ref = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    ref.step()
    q = torch.nn.Parameter(p.detach().clone())
    sd = ref.state_dict()
    sd["state"][0]["step"] = 1
    ours = Adam([q], lr=0.1)
    ours.load_state_dict(copy.deepcopy(sd))  # (a loaded state may share the saved tensors)
    ref.load_state_dict(copy.deepcopy(sd))
    for opt, t in ((ours, q), (ref, p)):
        t.grad = torch.full((3,), 0.5)
        opt.step()
    torch.testing.assert_close(q, p)
    assert torch.is_tensor(ours.state[q]["step"]) and int(ours.state[q]["step"]) == 2


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (lambda: torch.nn.Parameter(torch.randn(4).half()), TypeError, "parameter 1 of group 0 is torch.float16"),
        (lambda: torch.nn.Parameter(torch.randn(4, dtype=torch.complex64)), TypeError, "is torch.complex64"),
        (lambda: torch.randn(4, 4, requires_grad=True)[:, :2], ValueError, "parameter 1 of group 0 is not dense"),
    ],
)
def test_parameters_adam_cannot_update_are_refused_up_front(bad, exc, match):
    good = torch.nn.Parameter(torch.randn(3))
    with pytest.raises(exc, match=match):
        Adam([good, bad()])
    opt = Adam([good])
    with pytest.raises(exc, match=match.replace("parameter 1 of group 0", "parameter 0 of group 1")):
        opt.add_param_group({"params": [bad()]})
    assert len(opt.param_groups) == 1
    # a generator of parameters, as model.parameters() gives, still works in add_param_group
    opt.add_param_group({"params": (p for p in [torch.nn.Parameter(torch.randn(2))])})
    assert len(opt.param_groups[1]["params"]) == 1


def test_cpu_results_do_not_depend_on_the_thread_count():
    """Vector and scalar code round differently (the scalar tail may fuse multiply-adds): each
    element now takes the same path whatever the thread count splits (chunk tails moved)."""
    if not fastgan.build_info()["cpu_kernels"]:
        pytest.skip("needs the compiled kernels")
    gen = torch.Generator().manual_seed(5)
    start = [torch.randn(40003, generator=gen) for _ in range(3)]
    grads = [torch.randn(40003, generator=gen) for _ in range(3)]
    out = []
    for threads in (1, 2):
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            p, m, v = (t.clone() for t in start)
            v.abs_()
            for k, gr in enumerate(grads, 1):
                ops.adam_([p], [gr], [m], [v], torch.tensor(float(k)), 1e-3, 0.9, 0.999, 1e-8, 0.01)
            out.append((p, m, v))
        finally:
            torch.set_num_threads(saved)
    for a, b in zip(*out):
        assert torch.equal(a, b)


# -- torch.optim.Adam's keywords ---------------------------------------------------------------

TORCH_ADAM_KEYWORDS = {
    name: p.default
    for name, p in inspect.signature(torch.optim.Adam).parameters.items()
    if name != "params" and p.default is not inspect.Parameter.empty
}


def _updates(**kw):
    ps = _params("cpu", torch.float32)
    opt = _train(Adam, ps, 3, **kw)
    return ps, opt


def test_every_torch_adam_keyword_is_taken_at_its_default():
    """Each keyword of torch.optim.Adam's signature (a new torch's too) at its default value: taken,
    kept in the param groups as torch keeps it, and the update is bit for bit the one without it."""
    want, _ = _updates()
    p = torch.nn.Parameter(torch.zeros(2))
    theirs = torch.optim.Adam([p]).param_groups[0]
    for name, default in TORCH_ADAM_KEYWORDS.items():
        got, opt = _updates(**{name: default})
        assert all(torch.equal(a, b) for a, b in zip(got, want)), name
        assert opt.param_groups[0][name] == theirs[name], name
    got, opt = _updates(**TORCH_ADAM_KEYWORDS)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert set(opt.param_groups[0]) == set(theirs)


def test_the_signature_is_torch_adams():
    # amsgrad positional, the rest keyword-only, as torch's: the same calls work with both
    ours = [(n, p.kind, p.default) for n, p in inspect.signature(Adam).parameters.items()]
    theirs = [(n, p.kind, p.default) for n, p in inspect.signature(torch.optim.Adam).parameters.items()]
    assert ours == theirs


@pytest.mark.parametrize(
    "kw", [dict(foreach=True), dict(foreach=False), dict(fused=True), dict(fused=False), dict(capturable=True)]
)
def test_implementation_choices_are_taken_and_change_nothing(kw):
    """foreach/fused pick among torch's implementations (this one is one fused launch anyway);
    capturable=True: the step count is on the device already."""
    want, _ = _updates()
    got, opt = _updates(**kw)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    ((name, value),) = kw.items()
    assert opt.param_groups[0][name] is value


@pytest.mark.parametrize("name", ["amsgrad", "maximize", "decoupled_weight_decay", "differentiable"])
def test_unimplemented_settings_are_refused_naming_them(name):
    p = torch.nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match=rf"fastgan.optim.Adam: {name}=True is not implemented; use torch.optim.Adam"):
        Adam([p], **{name: True})
    opt = Adam([p])
    q = torch.nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match=rf"{name}=True in param group 1 is not implemented"):
        opt.add_param_group({"params": [q], name: True})
    assert len(opt.param_groups) == 1
    if name == "amsgrad":  # positional, as in torch
        with pytest.raises(ValueError, match="amsgrad=True"):
            Adam([p], 1e-3, (0.9, 0.999), 1e-8, 0.0, True)


def test_a_group_saved_without_the_keywords_gets_torchs_defaults():
    # an older fastgan Adam's state_dict has lr, betas, eps and weight_decay only
    p = torch.nn.Parameter(torch.randn(3))
    sd = Adam([p], lr=0.1).state_dict()
    for k in FLAG_DEFAULTS:
        del sd["param_groups"][0][k]
    opt = Adam([p])
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == 0.1
    assert {k: opt.param_groups[0][k] for k in FLAG_DEFAULTS} == FLAG_DEFAULTS
    torch_opt = torch.optim.Adam([p])
    torch_opt.load_state_dict(sd)
    assert set(torch_opt.param_groups[0]) == set(opt.param_groups[0])
