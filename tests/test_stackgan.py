"""stackgan (issue 18): its two stages and conditioning augmentation, the step against plain
PyTorch, exact resumes, sampling, the stage I / stage II measurement on constructed cases, and the
CLI end to end. Small widths keep it fast."""

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
from torch.distributions import Normal, kl_divergence
from torch.nn import functional as F

from fastgan import metrics
from fastgan._options import MODELS
from fastgan.cli import main as cli_main
from fastgan.models import StackDiscriminator, StackGenerator, build
from fastgan.models.stackgan import CONDITION_DIM, kl_to_standard_normal, pair, stage_one_view
from fastgan.train import ConfigError, TrainConfig, Trainer, load_checkpoint, sample
from fastgan.train.auxiliary import StackHead
from fastgan.train.sampling import latent
from fastgan.train.step import Objective, make_step, train_step

TINY_CLF = metrics.ClassifierSettings(epochs=1, batch_size=32, channels=(8, 16), features=32)
NARROW = dict(g_widths=(16, 8), d_widths=(8, 16))


def small(out, **kw):
    base = dict(model="stackgan", steps=4, batch_size=8, device="cpu", progress=False, out=str(out), log_every=2)
    return TrainConfig(**{**base, **NARROW, **kw})


# -- the pieces ---------------------------------------------------------------------------


def test_stages_shapes_and_pairs():
    torch.manual_seed(0)
    G, D = build("stackgan", **NARROW)
    assert isinstance(G, StackGenerator) and isinstance(D, StackDiscriminator)
    assert G.latent_dim == 100 + 2 * CONDITION_DIM == 100 + MODELS["stackgan"].latent_extra
    z, labels = torch.randn(6, G.latent_dim), torch.arange(6)
    images, sketch, kl = G.stages(z, labels)
    assert images.shape == (6, 1, 28, 28) and sketch.shape == (6, 1, 14, 14) and kl.dim() == 0
    assert images.abs().max() <= 1 and sketch.abs().max() <= 1  # tanh
    torch.testing.assert_close(G(z, labels), images)
    p = pair(images, sketch)
    assert p.shape == (6, 2, 28, 28) and torch.equal(p[:, :1], images)
    assert torch.equal(stage_one_view(p[:, 1:]), sketch)  # the upsampled sketch averages back exactly
    real = torch.rand(6, 1, 28, 28) * 2 - 1
    torch.testing.assert_close(pair(real)[:, 1:, ::2, ::2], F.avg_pool2d(real, 2))
    out = D(p, labels)
    assert out.shape == (6, 2)
    torch.testing.assert_close(D(real, labels), D(pair(real), labels))  # a plain image is paired with its averages
    # each column is its stage's: stage I's logit does not see the image, stage II's not the sketch
    moved = p.clone()
    moved[:, :1] += 0.5
    assert torch.equal(D.eval()(moved, labels)[:, 1], D(p, labels)[:, 1])
    assert not torch.equal(D(moved, labels)[:, 0], D(p, labels)[:, 0])
    with pytest.raises(ValueError, match=r"z must be \(N, 132\)"):
        G(torch.randn(2, 100), torch.arange(2))
    with pytest.raises(ValueError, match=r"takes images \(N, 1, 28, 28\) or pairs"):
        D(torch.randn(2, 3, 28, 28), torch.arange(2))


def test_the_condition_is_the_labels_augmented():
    """eps = 0 gives c = mu, one per label; the eps columns of z move the images; both stages
    draw from the label."""
    torch.manual_seed(0)
    G, _ = build("stackgan", **NARROW)
    G.eval()
    noise = torch.randn(1, 100).expand(10, 100)
    z0 = torch.cat([noise, torch.zeros(10, 2 * CONDITION_DIM)], 1)
    e = G.embed(torch.arange(10))
    c, mu, _ = G.ca1(e, torch.zeros(10, CONDITION_DIM))
    assert torch.equal(c, mu)
    images, sketch, _ = G.stages(z0, torch.arange(10))
    assert (images[0] - images[7]).abs().max() > 1e-4 and (sketch[0] - sketch[7]).abs().max() > 1e-4
    z1 = z0.clone()
    z1[:, 100 + CONDITION_DIM :] = 1.0  # stage II's eps alone: the sketch stays, the image moves
    images1, sketch1, _ = G.stages(z1, torch.arange(10))
    assert torch.equal(sketch1, sketch) and (images1 - images).abs().max() > 1e-5


def test_kl_term_against_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(8, 16, generator=gen, dtype=torch.float64), torch.randn(8, 16, generator=gen).double()
    want = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), 1.0)).mean()
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar), want)
    assert kl_to_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)) == 0  # the prior itself


@pytest.mark.parametrize("kl_weight", [1.0, 0.25])
def test_the_step_is_plain_pytorchs(kl_weight):
    """D: BCE of both stages' logits (averaged) on real pairs (the image, its 2x2 averages) and
    fake pairs (the image, the sketch); G: the same BCE on the fakes + kl_weight * KL."""
    nets, opts = four_adams("stackgan", **NARROW)
    G, D, Gr, Dr = nets
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(16, 1, 28, 28, generator=gen, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 10, (16,), generator=gen)
    z = torch.randn(16, G.latent_dim, generator=gen, dtype=torch.float64)
    losses = train_step(G, D, opts[0], opts[1], real, labels, z, objective=Objective(head=StackHead(kl_weight)))

    images, sketch, kl = Gr.stages(z, labels)
    fake = torch.cat([images, F.interpolate(sketch, scale_factor=2.0)], 1)
    real_pair = torch.cat([real, F.interpolate(F.avg_pool2d(real, 2), scale_factor=2.0)], 1)
    d_loss = bce(Dr(real_pair, labels), 1.0) + bce(Dr(fake.detach(), labels), 0.0)
    update(opts[3], d_loss)
    g_loss = bce(Dr(fake, labels), 1.0) + kl_weight * kl
    update(opts[2], g_loss)
    assert_same_step(losses, d_loss, g_loss, nets)


def test_the_kl_term_trains_the_conditioning_augmentation():
    def grads(weight):
        torch.manual_seed(0)
        G, D = build("stackgan", **NARROW)
        opt_g, opt_d = (torch.optim.SGD(n.parameters(), lr=0.0) for n in (G, D))
        real = torch.rand(8, 1, 28, 28) * 2 - 1
        z = torch.randn(8, G.latent_dim, generator=torch.Generator().manual_seed(1))
        train_step(G, D, opt_g, opt_d, real, torch.arange(8), z, objective=Objective(head=StackHead(weight)))
        return G.ca1.fc.weight.grad.clone(), G.stage1.deconv1.weight.grad.clone()

    (ca1, conv1), (ca0, conv0) = grads(1.0), grads(0.0)
    assert not torch.allclose(ca1, ca0)
    torch.testing.assert_close(conv1, conv0)  # the KL term reaches the conditioning augmentation only


# -- the measurement ----------------------------------------------------------------------------


class _Bank(nn.Module):
    """A 'stackgan G': stage II draws a real test image of the requested digit, stage I one of the
    next digit (its sketch, upsampled, names another label)."""

    def __init__(self, bank):
        super().__init__()
        self.bank = bank

    def forward(self, z, labels):
        return self.bank[labels]

    def sketch(self, z, labels):
        return self.bank[(labels + 1) % 10]


def test_the_evaluator_measures_each_stage(tmp_path):
    evaluator = metrics.Evaluator("mnist-5k", cache_dir=tmp_path, classifier=TINY_CLF)
    (_, _), (test_x, _) = evaluator.data
    x = metrics.classifier.to_input(test_x[:500])
    predicted = metrics.classify(evaluator.model, x)[1].argmax(1)
    bank = torch.stack([x[(predicted == d).nonzero()[0, 0]] for d in range(10)])
    m = evaluator(_Bank(bank), TrainConfig(model="stackgan"), n=60)
    assert m["label_accuracy"] == 1.0 and m["stage1_label_accuracy"] == 0.0
    assert m["fid"] == pytest.approx(m["stage1_fid"], rel=1e-6)  # the same ten images, other labels
    assert m["stage1_nonfinite_images"] == 0
    assert "stage1_fid" not in evaluator(_Bank(bank), TrainConfig(model="cdcgan"), n=10)  # stackgan's alone


# -- the trainer: exact resumes, grids, sampling, the CLI ---------------------------------------


def test_trains_and_resumes_exactly(tmp_path):
    whole, _ = assert_resumes_exactly(small, tmp_path, 2)
    assert whole.objective.head == StackHead(1.0)
    assert whole.grid_cols == 10 and whole.fixed_z.shape == (100, 132)  # a column per label
    assert whole.fixed_labels.tolist() == [i % 10 for i in range(100)]
    assert (tmp_path / "whole" / "samples.png").is_file()


def test_the_eps_are_normal_whatever_the_noise(tmp_path):
    cfg = small(tmp_path, noise="uniform")
    z = latent(cfg, 4000, torch.Generator().manual_seed(0), "cpu")
    assert z.shape == (4000, 132)
    assert z[:, :100].abs().max() <= 1 and z[:, 100:].abs().max() > 2.5  # uniform noise, N(0, 1) eps
    assert abs(float(z[:, 100:].std()) - 1) < 0.05


def test_bad_options_are_refused_naming_them(tmp_path):
    with pytest.raises(ConfigError, match="--kl-weight .* needs --model stackgan"):
        Trainer(small(tmp_path / "a", model="cdcgan", kl_weight=0.5))
    with pytest.raises(ConfigError, match="--kl-weight must be a number >= 0"):
        Trainer(small(tmp_path / "b", kl_weight=-1.0))


def test_r1_and_gp_run_on_the_pairs(tmp_path):
    assert torch.isfinite(Trainer(small(tmp_path / "r1", r1=1.0, steps=1)).fit()).all()
    assert torch.isfinite(Trainer(small(tmp_path / "gp", loss="wgan", gp=10.0, steps=1)).fit()).all()


def test_cli_train_sample_and_eval(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--model", "stackgan", "--g-widths", "16,8", "--d-widths", "8,16", "--batch-size", "8", "--no-progress"]
    assert cli_main(["train", *args, "--steps", "1", "--kl-weight", "0.5", "--out", str(run)]) == 0
    ckpt = str(run / "checkpoint.pt")
    assert load_checkpoint(ckpt)["config"].kl_weight == 0.5
    assert cli_main(["sample", "--checkpoint", ckpt, "--label", "3", "--n", "5", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    assert sample(ckpt, n=4, label=2, out=str(tmp_path / "t.png")).shape == (4, 1, 28, 28)
    out = tmp_path / "m.json"
    cache = ["--cache-dir", str(tmp_path / "cache"), "--classifier-epochs", "1"]
    capsys.readouterr()
    assert cli_main(["eval", "--checkpoint", ckpt, "--n", "50", *cache, "--json", str(out)]) == 0
    assert "stage I" in capsys.readouterr().out
    m = json.loads(out.read_text())
    assert m["model"] == "stackgan" and m["fid"] > 0 and m["stage1_fid"] > 0
    assert 0 <= m["label_accuracy"] <= 1 and 0 <= m["stage1_label_accuracy"] <= 1


def test_make_step_runs_it_with_its_stages():
    step = make_step("stackgan", 4, device="cpu")
    objectives = [c.cell_contents for c in step.fn.__closure__ if isinstance(c.cell_contents, Objective)]
    assert [type(o.head) for o in objectives] == [StackHead]
    assert torch.isfinite(step()).all() and torch.isfinite(step()).all()


# -- CUDA: the two stages inside the step's one CUDA graph ----------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_graph_step_matches_the_eager_one(tmp_path):
    assert_graph_run_matches_eager(small, tmp_path)
