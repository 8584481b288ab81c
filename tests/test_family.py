"""acgan and infogan (issue 18): their heads and codes, each auxiliary loss in the one training step
against plain PyTorch, exact resumes, sampling (InfoGAN's traverse figure), the categorical code's
best-matching accuracy on constructed cases, and the CLI end to end. Small widths keep it fast."""

import functools
import itertools
import json

import pytest
import torch
from model_testing import (
    assert_graph_run_matches_eager,
    assert_resumes_exactly,
    assert_same_step,
    bce,
    four_adams,
    update,
)
from torch import nn
from torch.nn import functional as F

from fastgan import metrics
from fastgan.cli import main as cli_main
from fastgan.metrics.matching import best_matching, code_accuracy, confusion
from fastgan.models import AuxDiscriminator, LatentCodes, build
from fastgan.train import ConfigError, TrainConfig, Trainer, load_checkpoint, sample, traverse
from fastgan.train.auxiliary import ClassHead, InfoHead
from fastgan.train.step import Objective, gradient_penalty, make_step, train_step

TINY_CLF = metrics.ClassifierSettings(epochs=1, batch_size=32, channels=(8, 16), features=32)
NARROW = dict(g_widths=(16, 8), d_widths=(8, 16))


def small(out, model, **kw):
    base = dict(model=model, steps=6, batch_size=16, device="cpu", progress=False, out=str(out), log_every=3)
    return TrainConfig(**{**base, **NARROW, **kw})


# -- the pieces ---------------------------------------------------------------------------


def test_latent_codes_join_and_split_back():
    codes = LatentCodes(5)
    assert (codes.dim, codes.q_outputs) == (5 + 10 + 2, 12)
    z = torch.randn(200, 5)
    x = codes.attach(z, torch.Generator().manual_seed(0))
    assert x.shape == (200, 17)
    back, categorical, continuous = codes.split(x)
    assert torch.equal(back, z)
    assert torch.equal(x[:, 5:15], F.one_hot(categorical, 10).float())  # one-hot
    assert set(categorical.tolist()) == set(range(10))  # drawn over all the categories
    assert continuous.min() >= -1 and continuous.max() <= 1 and continuous.std() > 0.4  # uniform in [-1, 1]
    given = codes.attach(z[:3], categorical=torch.tensor([7, 0, 9]), continuous=torch.full((3, 2), 1.5))
    assert codes.split(given)[1].tolist() == [7, 0, 9] and torch.equal(codes.split(given)[2], torch.full((3, 2), 1.5))
    again = codes.attach(z, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)  # the step's noise generator alone decides the codes
    with pytest.raises(ValueError, match=r"z must be \(N, 5\)"):
        codes.attach(torch.randn(2, 6))


@pytest.mark.parametrize("name, outputs", [("acgan", 11), ("infogan", 13)])
def test_heads_share_ds_body(name, outputs):
    torch.manual_seed(0)
    G, D = build(name, **NARROW)
    assert isinstance(D, AuxDiscriminator) and D.aux_outputs == outputs - 1
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    out = D(x)
    assert out.shape == (4, outputs)
    # one body: a change to its first layer moves the adversarial logit and the head's outputs alike
    with torch.no_grad():
        D.body.conv1.weight.add_(0.5)
    moved = (D(x) - out).abs().amax(0)
    assert (moved > 1e-6).all()
    if name == "acgan":
        assert G(torch.randn(4, 100), torch.arange(4)).shape == (4, 1, 28, 28)
    else:
        assert G.latent_dim == 74 and G(G.codes.attach(torch.randn(4, 62))).shape == (4, 1, 28, 28)


def _reference_step(Gr, Dr, opt_g, opt_d, real, g_input, aux_d, aux_g):
    """The GAN step written out in plain PyTorch: D on real and fake (its output's column 0 the
    adversarial logit, the rest the head's), then G; aux_d / aux_g the head's losses. Returns
    (d_loss, g_loss)."""
    fake = Gr(*g_input)
    rl, fl = Dr(real), Dr(fake.detach())
    d_loss = bce(rl[:, :1], 1.0) + bce(fl[:, :1], 0.0) + aux_d(rl[:, 1:], fl[:, 1:])
    update(opt_d, d_loss)
    out = Dr(fake)
    g_loss = bce(out[:, :1], 1.0) + aux_g(out[:, 1:])
    update(opt_g, g_loss)
    return d_loss, g_loss


@pytest.mark.parametrize("real_only", [False, True])
def test_acgan_step_is_plain_pytorchs(real_only):
    """D: BCE + the class cross-entropy of the real images' labels and of the labels the fakes
    were drawn for (real_only, --class-loss real: of the real images' alone); G: BCE + the
    fakes' class cross-entropy; D is given no labels."""
    nets, opts = four_adams("acgan", **NARROW)
    G, D, Gr, Dr = nets
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(16, 1, 28, 28, generator=gen, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 10, (16,), generator=gen)
    z = torch.randn(16, 100, generator=gen, dtype=torch.float64)
    losses = train_step(G, D, opts[0], opts[1], real, labels, z, objective=Objective(head=ClassHead(real_only)))
    want = _reference_step(
        Gr,
        Dr,
        opts[2],
        opts[3],
        real,
        (z, labels),
        lambda r, f: F.cross_entropy(r, labels) + (0 if real_only else F.cross_entropy(f, labels)),
        lambda f: F.cross_entropy(f, labels),
    )
    assert_same_step(losses, *want, nets)
    # the class terms are in: about log(10) = 2.3 each, beside BCE's log(4) = 1.4
    assert 3.0 < losses[0] < 5.0 if real_only else losses[0] > 5.0


@pytest.mark.parametrize("weight", [1.0, 0.25])
def test_infogan_step_is_plain_pytorchs(weight):
    """Both steps add lambda * (the categorical code's cross-entropy + 0.5 * the continuous
    codes' squared error): D's (its body and Q) on the detached fakes, G's on the fakes."""
    nets, opts = four_adams("infogan", **NARROW)
    G, D, Gr, Dr = nets
    codes = G.codes
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(16, 1, 28, 28, generator=gen, dtype=torch.float64) * 2 - 1
    z = codes.attach(torch.randn(16, 62, generator=gen, dtype=torch.float64), gen)
    categorical, continuous = z[:, 62:72].argmax(1), z[:, 72:]

    def info(q):
        return weight * (
            F.cross_entropy(q[:, :10], categorical) + F.mse_loss(q[:, 10:], continuous, reduction="sum") / 32
        )

    objective = Objective(head=InfoHead(codes, weight))
    losses = train_step(G, D, opts[0], opts[1], real, None, z, objective=objective)
    want = _reference_step(Gr, Dr, opts[2], opts[3], real, (z,), lambda r, f: info(f), info)
    assert_same_step(losses, *want, nets)


def test_the_info_loss_trains_q_in_ds_step_and_g_in_gs():
    """Q's weights get their gradient from D's step, through the info loss alone (lambda 0: none;
    G's step leaves D's weights alone), and the info loss changes G's gradient too."""

    def grads(weight):
        torch.manual_seed(0)
        G, D = build("infogan", **NARROW)
        opt_g, opt_d = (torch.optim.SGD(n.parameters(), lr=0.0) for n in (G, D))
        real = torch.rand(8, 1, 28, 28) * 2 - 1
        z = G.codes.attach(torch.randn(8, 62), torch.Generator().manual_seed(1))
        train_step(G, D, opt_g, opt_d, real, None, z, objective=Objective(head=InfoHead(G.codes, weight)))
        return D.aux.out.weight.grad, G.fc.fc1.weight.grad

    (q1, g1), (q0, g0) = grads(1.0), grads(0.0)
    assert q1.abs().sum() > 0 and q0.abs().sum() == 0
    assert not torch.allclose(g1, g0)


def test_the_penalties_see_the_adversarial_logit_only(tmp_path):
    """WGAN-GP's gradient is that of D's column 0, not of the head's outputs; and R1 and GP run in
    each model's step."""
    torch.manual_seed(0)
    _, D = build("acgan", **NARROW)
    D = D.double()
    gen = torch.Generator().manual_seed(2)
    real, fake = (torch.rand(6, 1, 28, 28, generator=gen, dtype=torch.float64) * 2 - 1 for _ in range(2))
    eps = torch.rand(6, generator=gen, dtype=torch.float64)
    got = gradient_penalty(D, real, fake, None, eps, ClassHead())
    x_hat = (eps.view(-1, 1, 1, 1) * real + (1 - eps.view(-1, 1, 1, 1)) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(D(x_hat)[:, :1].sum(), x_hat)
    torch.testing.assert_close(got, (g.flatten(1).norm(dim=1) - 1).square().mean(), rtol=1e-10, atol=1e-12)
    (g_all,) = torch.autograd.grad(D(x_hat).sum(), x_hat)
    assert not torch.allclose(g, g_all)
    Trainer(small(tmp_path / "r1", "infogan", r1=1.0, steps=2)).fit()
    history = Trainer(small(tmp_path / "gp", "acgan", loss="wgan", gp=10.0, steps=2)).fit()
    assert torch.isfinite(history).all()


# -- the measurement ---------------------------------------------------------------------------


def test_best_matching_is_the_best_permutation():
    gen = torch.Generator().manual_seed(0)
    for k in (1, 2, 4, 6):
        for _ in range(10):
            counts = torch.randint(0, 30, (k, k), generator=gen)
            matched, mapping = best_matching(counts)
            brute = max(sum(int(counts[i, p[i]]) for i in range(k)) for p in itertools.permutations(range(k)))
            assert matched == brute == sum(int(counts[i, mapping[i]]) for i in range(k))
            assert sorted(mapping) == list(range(k))


def test_a_perfect_permuted_code_gives_100_percent_and_its_permutation():
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    codes = torch.arange(1000) % 10
    accuracy, mapping = code_accuracy(codes, perm[codes])
    assert accuracy == 1.0 and mapping == perm.tolist()
    # a code that says nothing of the digit: one digit for every code gets 1/10
    accuracy, _ = code_accuracy(codes, torch.zeros(1000, dtype=torch.long))
    assert accuracy == pytest.approx(0.1)
    # two codes drawing the same digit: only one of them can be matched to it
    predicted = perm[codes].clone()
    predicted[codes == 1] = perm[0]
    assert code_accuracy(codes, predicted)[0] == pytest.approx(0.9)
    assert confusion(torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0]), k=2).tolist() == [[0, 2], [1, 0]]
    with pytest.raises(ValueError, match="in 0..9"):
        confusion(torch.tensor([10]), torch.tensor([0]))


class _DigitBank(nn.Module):
    """A 'generator' that draws, for categorical code c, a real test image the classifier calls
    digit perm[c]: the code names the digit perfectly, under a permutation."""

    def __init__(self, codes, bank):
        super().__init__()
        self.codes, self.bank = codes, bank

    def forward(self, z):
        return self.bank[self.codes.split(z)[1]]


def test_the_evaluator_finds_a_perfect_code_and_its_matching(tmp_path):
    evaluator = metrics.Evaluator("mnist-5k", cache_dir=tmp_path, classifier=TINY_CLF)
    (_, _), (test_x, _) = evaluator.data
    x = metrics.classifier.to_input(test_x[:500])
    predicted = metrics.classify(evaluator.model, x)[1].argmax(1)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(5))
    bank = torch.stack([x[(predicted == perm[c]).nonzero()[0, 0]] for c in range(10)])
    cfg = TrainConfig(model="infogan")
    m = evaluator(_DigitBank(LatentCodes(62), bank), cfg, n=60)
    assert m["code_accuracy"] == 1.0 and m["code_to_digit"] == perm.tolist()
    assert m["label_accuracy"] is None and sum(m["class_histogram"]) == 60


# -- the trainer: exact resumes, grids, sampling --------------------------------------------------


@pytest.mark.parametrize("model", ["acgan", "infogan"])
def test_each_model_trains_and_resumes_exactly(tmp_path, model):
    whole, _ = assert_resumes_exactly(functools.partial(small, model=model), tmp_path, 3)
    assert whole.grid_cols == 10 and whole.fixed_z.shape[0] == 100  # a column per label / code
    if model == "infogan":
        assert whole.fixed_labels is None and whole.fixed_z.shape[1] == 74
        assert whole.fixed_z[:, 62:72].argmax(1).tolist() == [i % 10 for i in range(100)]
        assert whole.objective.head == InfoHead(LatentCodes(62), 1.0)
    else:
        assert whole.fixed_labels.tolist() == [i % 10 for i in range(100)]
        assert whole.objective.head == ClassHead()
    assert (tmp_path / "whole" / "samples.png").is_file()


def test_sample_and_traverse_infogan(tmp_path):
    Trainer(small(tmp_path / "r", "infogan", steps=2, latent_dim=8)).fit()
    ckpt = str(tmp_path / "r" / "checkpoint.pt")
    images = sample(ckpt, n=6, label=3, out=str(tmp_path / "three.png"))
    assert images.shape == (6, 1, 28, 28)
    grid = traverse(ckpt, code=1, out=str(tmp_path / "t.png"))
    assert grid.shape == (100, 1, 28, 28) and (tmp_path / "t.png").is_file()
    rows = grid.view(10, 10, -1)
    assert (rows[:, 0] - rows[:, -1]).abs().amax() > 0  # the sweep changes the images along a row
    assert (rows[0] - rows[5]).abs().amax() > 0  # and the categorical code down a column
    G = build("infogan", latent_dim=8, **NARROW)[0]
    G.load_state_dict(load_checkpoint(ckpt)["generator"])
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    sweep = torch.zeros(10, 2)
    sweep[:, 1] = torch.linspace(-2, 2, 10)
    with torch.no_grad():
        want = G.eval()(G.codes.attach(z.expand(10, 8), None, torch.full((10,), 4), sweep))
    torch.testing.assert_close(grid[40:50], want)  # row 4: code 4, continuous code 1 from -2 to 2
    with pytest.raises(ConfigError, match="--code must be a continuous code from 0 to 1, got 2"):
        traverse(ckpt, code=2, out=str(tmp_path / "x.png"))


def test_bad_options_are_refused_naming_them(tmp_path):
    with pytest.raises(ConfigError, match="--class-loss is ACGAN's .* needs --model acgan"):
        Trainer(small(tmp_path / "a", "infogan", class_loss="real"))
    with pytest.raises(ConfigError, match="--class-loss must be both or real, got 'fake'"):
        Trainer(small(tmp_path / "a", "acgan", class_loss="fake"))
    assert Trainer(small(tmp_path / "real", "acgan", class_loss="real")).objective.head == ClassHead(True)
    with pytest.raises(ConfigError, match="--info-weight .* needs --model infogan"):
        Trainer(small(tmp_path / "a", "acgan", info_weight=0.5))
    with pytest.raises(ConfigError, match="--info-weight must be a number >= 0"):
        Trainer(small(tmp_path / "b", "infogan", info_weight=-1.0))
    assert TrainConfig(model="infogan").latent_dim == 62 and TrainConfig(model="acgan").latent_dim == 100
    Trainer(small(tmp_path / "c", "acgan", steps=1)).fit()
    with pytest.raises(ConfigError, match="--traverse .* needs an infogan checkpoint"):
        traverse(str(tmp_path / "c" / "checkpoint.pt"), out=str(tmp_path / "t.png"))


def test_cli_class_loss_real_trains_acgan_and_is_refused_elsewhere(tmp_path, capsys):
    args = ["--g-widths", "16,8", "--d-widths", "8,16", "--batch-size", "16", "--no-progress", "--class-loss", "real"]
    assert cli_main(["train", "--model", "acgan", *args, "--steps", "1", "--out", str(tmp_path / "a")]) == 0
    assert load_checkpoint(str(tmp_path / "a" / "checkpoint.pt"))["config"].class_loss == "real"
    assert cli_main(["train", "--model", "cdcgan", *args, "--steps", "1", "--out", str(tmp_path / "b")]) == 2
    assert "--class-loss is ACGAN's D class loss" in capsys.readouterr().err


def test_cli_train_sample_traverse_and_eval(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--model", "infogan", "--g-widths", "16,8", "--d-widths", "8,16", "--batch-size", "16", "--no-progress"]
    assert cli_main(["train", *args, "--steps", "2", "--info-weight", "0.5", "--out", str(run)]) == 0
    ckpt = str(run / "checkpoint.pt")
    assert load_checkpoint(ckpt)["config"].info_weight == 0.5
    assert (
        cli_main(["sample", "--checkpoint", ckpt, "--traverse", "--code", "1", "--out", str(tmp_path / "t.png")]) == 0
    )
    assert (tmp_path / "t.png").is_file()
    capsys.readouterr()
    assert cli_main(["sample", "--checkpoint", ckpt, "--traverse", "--n", "5"]) == 2
    assert "--traverse draws its own 10 x 10 grid: leave out --n" in capsys.readouterr().err
    assert cli_main(["sample", "--checkpoint", ckpt, "--code", "1"]) == 2
    assert "--code picks the continuous code that --traverse sweeps" in capsys.readouterr().err
    out = tmp_path / "m.json"
    cache = ["--cache-dir", str(tmp_path / "cache"), "--classifier-epochs", "1"]
    assert cli_main(["eval", "--checkpoint", ckpt, "--n", "50", *cache, "--json", str(out)]) == 0
    assert "code_accuracy" in capsys.readouterr().out
    m = json.loads(out.read_text())
    assert 0.1 <= m["code_accuracy"] <= 1.0 and sorted(m["code_to_digit"]) == list(range(10))
    acgan = [a if a != "infogan" else "acgan" for a in args]
    assert cli_main(["train", *acgan, "--steps", "2", "--out", str(tmp_path / "ac")]) == 0
    assert (
        cli_main(
            ["eval", "--checkpoint", str(tmp_path / "ac" / "checkpoint.pt"), "--n", "50", *cache, "--json", str(out)]
        )
        == 0
    )
    m = json.loads(out.read_text())
    assert m["model"] == "acgan" and 0 <= m["label_accuracy"] <= 1 and m["fid"] > 0 and "code_accuracy" not in m


# -- CUDA: the heads' losses inside the step's one CUDA graph -------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("model", ["acgan", "infogan"])
def test_the_graph_step_matches_the_eager_one(tmp_path, model):
    assert_graph_run_matches_eager(functools.partial(small, model=model), tmp_path)


@pytest.mark.parametrize("model, head", [("acgan", ClassHead), ("infogan", InfoHead)])
def test_make_step_runs_each_with_its_head(model, head):
    """`make_step` (behind fastgan bench) builds the step with the model's auxiliary loss."""
    step = make_step(model, 8, device="cpu")
    objectives = [c.cell_contents for c in step.fn.__closure__ if isinstance(c.cell_contents, Objective)]
    assert [type(o.head) for o in objectives] == [head]
    assert torch.isfinite(step()).all() and torch.isfinite(step()).all()
