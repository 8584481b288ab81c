"""The objectives and stabilizers of issue 17 in the step and the trainer: the penalties' gradients
against plain PyTorch, spectral norm, generator EMA, D steps per G step, and exact resumes."""

import copy

import pytest
import torch
from torch.nn import functional as F

from fastgan.models import build
from fastgan.models.layers import spectral_norm_layers
from fastgan.train import ConfigError, TrainConfig, Trainer, load_checkpoint, sample
from fastgan.train.ema import GeneratorEMA
from fastgan.train.head import StepBatch
from fastgan.train.step import Objective, Settings, d_step
from fastgan.train.step import autocast as _autocast


def amp():
    return _autocast("cpu", None)


def small(out, **kw):
    base = dict(model="mlp", steps=6, batch_size=16, device="cpu", progress=False, out=str(out), log_every=3)
    base.update(kw)
    return TrainConfig(**base)


class _NoStep(torch.optim.SGD):
    """An optimizer that keeps the gradients d_step computed and changes nothing."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)

    def step(self, closure=None):
        return None


def _pair_of_ds(model):
    """fastgan's D and plain torch.nn's D with the same weights, in float64."""
    torch.manual_seed(0)
    _, mine = build(model, backend="fastgan")
    _, ref = build(model, backend="torch")
    ref.load_state_dict(mine.state_dict())
    return mine.double().train(), ref.double().train()


def _ref_d_loss(D, real, fake, r1=0.0, gp=0.0, eps=None):
    real = real.detach().requires_grad_(True)
    rl, fl = D(real), D(fake)
    loss = F.binary_cross_entropy_with_logits(rl, torch.ones_like(rl)) + F.binary_cross_entropy_with_logits(
        fl, torch.zeros_like(fl)
    )
    if r1:
        (g,) = torch.autograd.grad(rl.sum(), real, create_graph=True)
        loss = loss + r1 / 2 * g.flatten(1).square().sum(1).mean()
    if gp:
        x_hat = (eps.view(-1, 1, 1, 1) * real.detach() + (1 - eps.view(-1, 1, 1, 1)) * fake).requires_grad_(True)
        (g,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
        loss = loss + gp * (g.flatten(1).norm(dim=1) - 1).square().mean()
    return loss


@pytest.mark.parametrize("model", ["mlp", "dcgan"])
@pytest.mark.parametrize("penalty", ["r1", "gp"])
def test_the_penalties_gradient_through_fastgans_d_is_plain_pytorchs(model, penalty):
    """Double backward through fused bias+LeakyReLU, batch norm (dcgan's D) and the losses: the
    gradient of D's penalized loss equals the plain-PyTorch D's, weights and inputs the same."""
    mine, ref = _pair_of_ds(model)
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(8, 1, 28, 28, generator=gen, dtype=torch.float64) * 2 - 1
    fake = torch.rand(8, 1, 28, 28, generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.rand(8, generator=gen, dtype=torch.float64)
    weight = {"r1": dict(r1=10.0), "gp": dict(gp=10.0)}[penalty]
    opt = _NoStep(mine.parameters())
    how = Settings(amp=amp, objective=Objective(**weight), uniform=lambda n: eps)
    loss = d_step(mine, opt, StepBatch(real, None, None), fake, how)
    want = _ref_d_loss(ref, real, fake, eps=eps, **weight)
    want.backward()
    # float64 (this found fused batch norm + LeakyReLU's double backward using 0.2f for the slope)
    torch.testing.assert_close(loss, want.detach(), rtol=1e-10, atol=1e-12)
    for (name, p), q in zip(mine.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)
    assert any(p.grad.abs().sum() > 0 for p in mine.parameters())


def test_the_penalty_changes_ds_gradient():
    """A test that could fail: with r1 the gradient is not the unpenalized one."""
    mine, _ = _pair_of_ds("mlp")
    real = torch.rand(8, 1, 28, 28, dtype=torch.float64) * 2 - 1
    grads = []
    for objective in (Objective(), Objective(r1=10.0)):
        opt = _NoStep(mine.parameters())
        d_step(mine, opt, StepBatch(real, None, None), real.flip(0), Settings(amp=amp, objective=objective))
        grads.append([p.grad.clone() for p in mine.parameters()])
    assert not all(torch.allclose(a, b) for a, b in zip(*grads))


# -- generator EMA --------------------------------------------------------------------------


def test_ema_update_is_a_lerp_of_every_parameter_and_copies_the_buffers():
    torch.manual_seed(0)
    G, _ = build("mlp-bn")
    ema = GeneratorEMA(G, 0.9)
    before = copy.deepcopy(ema.module.state_dict())
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
        for b in G.buffers():
            b.add_(3)
    ema.update()
    now, g = ema.module.state_dict(), G.state_dict()
    params = {n for n, _ in G.named_parameters()}
    for k, v in now.items():
        want = before[k] + 0.1 * (g[k] - before[k]) if k in params else g[k]
        torch.testing.assert_close(v, want, msg=k)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_is_checkpointed_resumed_exactly_and_used_by_the_grids_and_sample(tmp_path):
    whole = Trainer(small(tmp_path / "a", ema=0.9, ema_start=2))
    whole.fit()
    half = Trainer(small(tmp_path / "b", ema=0.9, ema_start=2, steps=3))
    half.fit()
    resumed = Trainer(small(tmp_path / "b", ema=0.9, ema_start=2, steps=6), resume=True)
    resumed.fit()
    for k, v in whole.ema.state_dict().items():
        assert torch.equal(v, resumed.ema.state_dict()[k]), k
    state = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    assert set(state["generator_ema"]) == set(state["generator"])
    assert not torch.equal(state["generator_ema"]["net.fc1.weight"], state["generator"]["net.fc1.weight"])
    assert whole.sampling_generator() is whole.ema.module
    averaged = sample(tmp_path / "a" / "checkpoint.pt", n=4, out=str(tmp_path / "e.png"))
    raw = sample(tmp_path / "a" / "checkpoint.pt", n=4, out=str(tmp_path / "g.png"), ema=False)
    assert not torch.equal(averaged, raw)
    with torch.no_grad():
        whole.G.eval()
        assert torch.equal(raw, whole.G(*_inputs(whole, 4)))


def _inputs(trainer, n):
    from fastgan.train.sampling import latent_inputs

    return latent_inputs(trainer.cfg, n, torch.Generator().manual_seed(0), "cpu")


def test_ema_start_begins_the_average_at_g_as_it_is_then(tmp_path):
    """After --ema-start steps the average is G itself (what that step's grid and evaluation
    draw); each later step lerps it toward G. Before, the samples come from G."""
    t = Trainer(small(tmp_path / "a", ema=0.5, ema_start=4, steps=3))
    t.fit()
    assert t.sampling_generator() is t.G  # step 3 < ema_start
    t = Trainer(small(tmp_path / "b", ema=0.5, ema_start=4, steps=4))
    t.fit()
    assert t.sampling_generator() is t.ema.module
    for avg, p in zip(t.ema.module.parameters(), t.G.parameters()):
        assert torch.equal(avg, p)  # not the average of the first 4 steps
    g4 = [p.detach().clone() for p in t.G.parameters()]
    more = TrainConfig(**{**t.cfg.to_dict(), "steps": 5})
    t5 = Trainer(more, resume=True, explicit={"steps"})
    t5.fit()
    for avg, before, after in zip(t5.ema.module.parameters(), g4, t5.G.parameters()):
        torch.testing.assert_close(avg, torch.lerp(before, after, 0.5), rtol=0, atol=1e-7)


# -- spectral norm ------------------------------------------------------------------------


def test_spectral_norm_normalizes_each_weight_layer_and_is_checkpointed(tmp_path):
    from torch.nn.utils import parametrize

    _, D = build("dcgan")
    spectral_norm_layers(D)
    layers = [m for m in D.modules() if parametrize.is_parametrized(m, "weight")]
    assert len(layers) == 3  # two convolutions and the final linear
    D.train()
    for _ in range(30):  # power iterations converge on the largest singular value
        D(torch.rand(2, 1, 28, 28))
    for m in layers:
        w = m.weight.flatten(1) if not isinstance(m, torch.nn.ConvTranspose2d) else m.weight.transpose(0, 1).flatten(1)
        assert abs(torch.linalg.matrix_norm(w, ord=2).item() - 1.0) < 0.05
    t = Trainer(small(tmp_path / "a", spectral_norm=True, spectral_norm_g=True))
    t.fit()
    state = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    assert any(k.endswith("parametrizations.weight.0._u") for k in state["discriminator"])
    assert any(k.endswith("parametrizations.weight.0._u") for k in state["generator"])
    sample(tmp_path / "a" / "checkpoint.pt", n=4, out=str(tmp_path / "s.png"))


@pytest.mark.parametrize(
    "options",
    [
        dict(spectral_norm=True),
        dict(r1=5.0),
        dict(gp=5.0, n_critic=2),
        dict(ema=0.99, spectral_norm_g=True),
        dict(loss="hinge", spectral_norm=True, ema=0.999),  # the recipes
        dict(loss="wgan", gp=10.0, n_critic=5),
        dict(loss="lsgan", model="dcgan"),
    ],
    ids=["spectral-norm", "r1", "gp-n-critic", "ema-sn-g", "hinge-sn-ema", "wgan-gp", "lsgan-dcgan"],
)
def test_each_stabilizer_resumes_exactly(tmp_path, options):
    whole = Trainer(small(tmp_path / "a", **options))
    whole.fit()
    Trainer(small(tmp_path / "b", steps=3, **options)).fit()
    resumed = Trainer(small(tmp_path / "b", **options), resume=True)
    resumed.fit()
    for net in ("G", "D"):
        a, b = getattr(whole, net).state_dict(), getattr(resumed, net).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), (net, k)
    assert torch.equal(whole.history, resumed.history)


# -- D steps per G step ---------------------------------------------------------------------


def test_n_critic_takes_that_many_d_steps_per_g_step_each_on_its_own_batch(tmp_path):
    t = Trainer(small(tmp_path, n_critic=3, steps=4))
    assert t.steps_per_epoch == t.loader.steps_per_epoch // 3
    batches = []
    real_next = t.loader.next

    def next_batch(labels=True):
        batch = real_next(labels)
        batches.append(batch[0].sum().item())
        return batch

    t.loader.next = next_batch
    t.fit()
    assert len(batches) == 12 and len(set(batches)) == 12
    d_steps = t.opt_d.state[next(iter(t.D.parameters()))]["step"]
    g_steps = t.opt_g.state[next(iter(t.G.parameters()))]["step"]
    assert (float(d_steps), float(g_steps)) == (12.0, 4.0)


# -- option checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(ema=1.0), "--ema must be a decay in"),
        (dict(ema_start=5), "--ema-start needs --ema"),
        (dict(n_critic=0), "--n-critic must be a positive integer"),
        (dict(gp=-1.0), "--gp must be a number >= 0"),
        (dict(r1=float("nan")), "--r1 must be a number >= 0"),
        (dict(loss="nope"), "--loss must be one of bce, hinge, lsgan, wgan"),
        (dict(gp=10.0, compile=True), "--gp and --r1 differentiate twice"),
    ],
)
def test_bad_objective_options_are_refused_naming_them(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(small(tmp_path, **options))


def test_odd_recipes_warn_once_in_the_log(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        Trainer(small(tmp_path / "r", gp=1.0, steps=2), log=f).fit()
    text = log.read_text()
    assert text.count("warning: --gp with --loss bce") == 1
    assert "batch norm in D" not in text  # the mlp's D has none


def test_gp_with_batch_norm_in_d_warns_naming_the_layer(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        Trainer(small(tmp_path / "r", model="dcgan", loss="wgan", gp=1.0, steps=1), log=f).fit()
    assert log.read_text().count("warning: --gp with batch norm in D (net.bn2)") == 1


@pytest.mark.parametrize("kind", ["hinge", "lsgan", "wgan"])
def test_a_step_with_another_loss_is_plain_pytorchs(kind):
    """One D and one G step of the mlp with --loss kind: fastgan's fused losses, fused layers and
    Adam end where torch's layers, the losses written out and torch.optim.Adam end."""
    from fastgan.train.step import train_step

    torch.manual_seed(0)
    G, D = build("mlp")
    Gr, Dr = build("mlp", backend="torch")
    Gr.load_state_dict(G.state_dict())
    Dr.load_state_dict(D.state_dict())
    # float64: Adam's first step is about lr * sign(grad), so float32 rounding flips a few
    # near-zero gradients' updates by 2 * lr
    G, D, Gr, Dr = (n.double() for n in (G, D, Gr, Dr))
    opts = [torch.optim.Adam(n.parameters(), lr=2e-4, betas=(0.5, 0.999)) for n in (G, D, Gr, Dr)]
    real = torch.rand(16, 1, 28, 28, dtype=torch.float64) * 2 - 1
    z = torch.randn(16, 100, dtype=torch.float64)
    losses = train_step(G, D, opts[0], opts[1], real, None, z, objective=Objective(loss=kind))
    d = {
        "hinge": lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(),
        "lsgan": lambda r, f: (r - 1).square().mean() / 2 + f.square().mean() / 2,
        "wgan": lambda r, f: f.mean() - r.mean(),
    }[kind]
    g = {"hinge": lambda f: -f.mean(), "lsgan": lambda f: (f - 1).square().mean() / 2, "wgan": lambda f: -f.mean()}[
        kind
    ]
    fake = Gr(z)
    d_loss = d(Dr(real), Dr(fake.detach()))
    opts[3].zero_grad()
    d_loss.backward()
    opts[3].step()
    g_loss = g(Dr(fake))
    opts[2].zero_grad()
    g_loss.backward()
    opts[2].step()
    torch.testing.assert_close(losses, torch.stack([d_loss, g_loss]).detach(), rtol=1e-12, atol=1e-12)
    for mine, ref in ((G, Gr), (D, Dr)):
        for (k, a), b in zip(mine.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=k)


# -- CUDA: each option inside the step's one CUDA graph ---------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize(
    "options",
    [
        dict(loss="hinge", spectral_norm=True, ema=0.999),
        dict(loss="wgan", gp=10.0, n_critic=5),
        dict(r1=10.0, model="dcgan"),
        dict(loss="lsgan", model="mlp-bn", ema=0.99, ema_start=5),
    ],
    ids=["hinge-sn-ema", "wgan-gp", "r1-dcgan", "lsgan-mlp-bn-ema"],
)
def test_each_recipe_in_one_cuda_graph_matches_its_eager_steps(tmp_path, options):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    runs = []
    for graph in (False, True):
        t = Trainer(small(tmp_path / f"g{graph}", device="cuda", cuda_graph=graph, steps=12, **options))
        assert t.cuda_graph == graph
        runs.append((t.fit(), t))
    (he, te), (hg, tg) = runs
    torch.testing.assert_close(hg, he, rtol=1e-4, atol=1e-5)
    for k, v in te.G.state_dict().items():
        torch.testing.assert_close(tg.G.state_dict()[k], v, rtol=1e-4, atol=1e-5, msg=k)
    if te.ema is not None:
        for k, v in te.ema.state_dict().items():
            torch.testing.assert_close(tg.ema.state_dict()[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_lazy_r1_runs_the_penalty_k_times_as_strong_on_every_kth_step(tmp_path):
    t = Trainer(small(tmp_path / "a", r1=4.0, r1_every=3, steps=7))
    ran = []
    plain, lazy = t._step, t._r1_step
    t._step = lambda: ran.append("plain") or plain()
    t._r1_step = lambda: ran.append("r1") or lazy()
    t.fit()
    assert ran == ["r1", "plain", "plain", "r1", "plain", "plain", "r1"]
    objectives = {
        c.cell_contents for f in (plain, lazy) for c in f.__closure__ if isinstance(c.cell_contents, Objective)
    }
    assert {o.r1 for o in objectives} == {0.0, 12.0}
    # and it resumes exactly across a lazy step
    whole = Trainer(small(tmp_path / "w", r1=4.0, r1_every=3, steps=6))
    whole.fit()
    Trainer(small(tmp_path / "h", r1=4.0, r1_every=3, steps=4)).fit()
    resumed = Trainer(small(tmp_path / "h", r1=4.0, r1_every=3, steps=6), resume=True)
    resumed.fit()
    for k, v in whole.D.state_dict().items():
        assert torch.equal(v, resumed.D.state_dict()[k]), k
    with pytest.raises(ConfigError, match="--r1-every needs --r1"):
        Trainer(small(tmp_path / "x", r1_every=2))
