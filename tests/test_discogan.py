"""discogan (issue 18): its two domains, generators and discriminators, the step against plain
PyTorch, exact resumes, the translation grid, the rotation measurement on constructed cases
(an exact rotation, the identity), and the CLI end to end. Small widths keep it fast."""

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
from fastgan.data import DatasetError, load_dataset
from fastgan.data.domains import load_domain, load_pairs, parse, rotate
from fastgan.metrics.classifier import split, to_input
from fastgan.models import DiscoDiscriminator, DiscoGenerator, ModelError, build
from fastgan.train import ConfigError, TrainConfig, Trainer, load_checkpoint, sample
from fastgan.train.auxiliary import DiscoHead
from fastgan.train.step import Objective, gradient_penalty, make_step, train_step

TINY_CLF = metrics.ClassifierSettings(epochs=1, batch_size=32, channels=(8, 16), features=32)
NARROW = dict(g_widths=(8, 16), d_widths=(8, 16))


def small(out, **kw):
    base = dict(model="discogan", steps=4, batch_size=8, device="cpu", progress=False, out=str(out), log_every=2)
    return TrainConfig(**{**base, **NARROW, **kw})


# -- the pieces ---------------------------------------------------------------------------


def test_generators_and_discriminators_per_domain():
    torch.manual_seed(0)
    G, D = build("discogan", **NARROW)
    assert isinstance(G, DiscoGenerator) and isinstance(D, DiscoDiscriminator) and G.latent_dim == 0
    x = torch.rand(4, 2, 28, 28) * 2 - 1
    fake, back = G.cycle(x)
    assert fake.shape == back.shape == (4, 2, 28, 28) and D(fake).shape == (4, 2)
    torch.testing.assert_close(fake, torch.cat([G.ba(x[:, 1:]), G.ab(x[:, :1])], 1))  # (fake A, fake B)
    torch.testing.assert_close(back, torch.cat([G.ba(G.ab(x[:, :1])), G.ab(G.ba(x[:, 1:]))], 1))
    G.eval()
    D.eval()
    moved = x.clone()
    moved[:, 1:] += 0.5  # domain B alone: G_BA's output and D_B's logit move, G_AB's and D_A's do not
    assert torch.equal(G(moved)[:, 1:], G(x)[:, 1:]) and not torch.equal(G(moved)[:, :1], G(x)[:, :1])
    assert torch.equal(D(moved)[:, 0], D(x)[:, 0]) and not torch.equal(D(moved)[:, 1], D(x)[:, 1])
    with pytest.raises(ValueError, match=r"takes pairs \(N, 2, 28, 28\)"):
        G(torch.rand(2, 1, 28, 28))
    with pytest.raises(ModelError, match="latent_dim: discogan takes no noise"):
        build("discogan", latent_dim=8)


def test_each_translated_pixel_sees_the_whole_image():
    """The fully connected bottleneck: a corner of G_AB(x) depends on the opposite corner of x (a
    90-degree rotation needs pixels 19 px away; the convolutions alone reach 8)."""
    torch.manual_seed(0)
    G = build("discogan", **NARROW)[0].eval()
    x = (torch.rand(1, 1, 28, 28) * 2 - 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(G.ab(x)[0, 0, 0, 0], x)
    assert grad[0, 0, 27, 27] != 0 and grad[0, 0, 0, 27] != 0


def test_domains_are_unpaired_copies():
    images, labels = load_pairs("mnist-5k:mnist-5k-rot90")
    mnist, digits = load_dataset("mnist-5k")
    assert images.shape == (5000, 2, 28, 28) and torch.equal(images[:, 0], mnist) and torch.equal(labels, digits)
    back = rotate(images[:, 1], -1)
    assert not torch.equal(back, mnist)  # shuffled: the i-th B is not the i-th A rotated
    key = lambda x: sorted(map(bytes, x.flatten(1).numpy()))  # noqa: E731
    assert key(back) == key(mnist)  # but the same images, rotated
    (test_x, test_y) = split("mnist-5k")[1]
    rx, ry = load_domain("mnist-5k-rot90", train=False)
    assert torch.equal(rx, rotate(test_x)) and torch.equal(ry, test_y)  # test images in order, rotated
    assert parse("mnist:fashion-mnist") == ("mnist", "fashion-mnist")
    for bad in ("mnist", "mnist:svhn", "a:b:c", ":mnist"):
        with pytest.raises(DatasetError, match="--domains"):
            parse(bad)


@pytest.mark.parametrize("weight", [1.0, 10.0])
def test_the_step_is_plain_pytorchs(weight):
    """D: BCE of D_A's and D_B's logits (averaged) on the real pairs and on the translations; G:
    the same BCE on the translations + weight * the reconstructions' MSE (both domains')."""
    nets, opts = four_adams("discogan", **NARROW)
    G, D, Gr, Dr = nets
    real = torch.rand(8, 2, 28, 28, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    losses = train_step(
        G, D, opts[0], opts[1], real, None, torch.zeros(8, 0), objective=Objective(head=DiscoHead(weight))
    )

    fake_a, fake_b = Gr.ba(real[:, 1:]), Gr.ab(real[:, :1])
    back_a, back_b = Gr.ba(fake_b), Gr.ab(fake_a)

    def adversarial(a, b, target):
        return (bce(Dr.a(a), target) + bce(Dr.b(b), target)) / 2

    d_loss = adversarial(real[:, :1], real[:, 1:], 1.0) + adversarial(fake_a.detach(), fake_b.detach(), 0.0)
    update(opts[3], d_loss)
    recon = (F.mse_loss(back_a, real[:, :1]) + F.mse_loss(back_b, real[:, 1:])) / 2
    g_loss = adversarial(fake_a, fake_b, 1.0) + weight * recon
    update(opts[2], g_loss)
    assert_same_step(losses, d_loss, g_loss, nets)


def test_the_gradient_penalty_is_each_critics():
    """WGAN-GP on D's two critics: each one's (|grad| - 1)^2 on its own domain, averaged (not the
    norm of their joint gradient)."""
    torch.manual_seed(0)
    _, D = build("discogan", **NARROW)
    D = D.double()
    gen = torch.Generator().manual_seed(2)
    real, fake = (torch.rand(6, 2, 28, 28, generator=gen, dtype=torch.float64) * 2 - 1 for _ in range(2))
    eps = torch.rand(6, generator=gen, dtype=torch.float64)
    got = gradient_penalty(D, real, fake, None, eps, DiscoHead())
    x_hat = (eps.view(-1, 1, 1, 1) * real + (1 - eps.view(-1, 1, 1, 1)) * fake).requires_grad_(True)
    penalties = []
    for critic, channel in ((D.a, slice(0, 1)), (D.b, slice(1, 2))):
        (g,) = torch.autograd.grad(critic(x_hat[:, channel]).sum(), x_hat)
        penalties.append((g.flatten(1).norm(dim=1) - 1).square().mean())
    torch.testing.assert_close(got, (penalties[0] + penalties[1]) / 2, rtol=1e-10, atol=1e-12)


# -- the measurement ----------------------------------------------------------------------------


class _Rotations(nn.Module):
    """A 'discogan G' that maps A -> B by rotating k x 90 degrees, and B -> A by rotating back."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def cycle(self, x):
        fake = torch.cat([rotate(x[:, 1:], -self.k), rotate(x[:, :1], self.k)], 1)
        return fake, torch.cat([rotate(fake[:, 1:], -self.k), rotate(fake[:, :1], self.k)], 1)


def test_the_rotation_measurement_on_known_mappings(tmp_path):
    evaluator = metrics.Evaluator("mnist-5k", cache_dir=tmp_path, classifier=TINY_CLF)
    cfg = TrainConfig(model="discogan")
    (_, _), (test_x, test_y) = evaluator.data
    accuracy = float((metrics.classify(evaluator.model, to_input(test_x))[1].argmax(1) == test_y).double().mean())
    exact = evaluator(_Rotations(1), cfg, n=10000)  # the true relation: the classifier's own accuracy
    assert exact["translation_accuracy_ab"] == exact["translation_accuracy_ba"] == pytest.approx(accuracy, abs=1e-12)
    assert exact["reconstruction_mse_a"] == exact["reconstruction_mse_b"] == 0.0
    assert exact["fid"] == pytest.approx(0.0, abs=1e-6)  # G_BA gives back A's test images themselves
    identity = evaluator(_Rotations(0), cfg, n=10000)  # each image left as it is
    assert identity["translation_accuracy_ab"] == identity["identity_accuracy_ab"] < accuracy - 0.3
    assert identity["reconstruction_mse_a"] == 0.0 and exact["identity_accuracy_ab"] == identity["identity_accuracy_ab"]
    other = evaluator(_Rotations(1), TrainConfig(model="discogan", domains="mnist-5k:mnist-5k"), n=100)
    assert "translation_accuracy_ab" not in other and "reconstruction_mse_b" in other  # no known relation


class _Relabels(nn.Module):
    """A 'discogan G' that draws each source digit d as a correctly classified test digit of class
    perm[d] (in the target domain's orientation): consistent, though not the rotation."""

    def __init__(self, model, perm):
        super().__init__()
        (xa, ya), (xb, yb) = (load_domain(name, None, train=False) for name in ("mnist-5k", "mnist-5k-rot90"))
        self.sources = [(to_input(xa), ya), (to_input(xb), yb)]
        predicted = metrics.classify(model, to_input(xa))[1].argmax(1)
        first = [int(((predicted == ya) & (ya == d)).nonzero()[0]) for d in range(10)]
        self.proto_a = to_input(xa)[[first[p] for p in perm]]  # proto_a[d]: an A digit of class perm[d]
        self.proto_b = rotate(self.proto_a, 1)

    def _labels(self, x, domain):
        images, labels = self.sources[domain]
        return labels[torch.cdist(x.flatten(1), images.flatten(1)).argmin(1)]  # each image's own label

    def cycle(self, x):
        fake = torch.cat([self.proto_a[self._labels(x[:, 1:], 1)], self.proto_b[self._labels(x[:, :1], 0)]], 1)
        return fake, fake


def test_translation_consistency_finds_a_relabelling(tmp_path):
    evaluator = metrics.Evaluator("mnist-5k", cache_dir=tmp_path, classifier=TINY_CLF)
    perm = [(d + 1) % 10 for d in range(10)]  # every digit drawn as the next one: no fixed point
    m = evaluator(_Relabels(evaluator.model, perm), TrainConfig(model="discogan"), n=10000)
    assert m["translation_consistency_ab"] == m["translation_consistency_ba"] == 1.0
    assert m["translation_matching_ab"] == m["translation_matching_ba"] == perm
    assert m["translation_accuracy_ab"] == m["translation_accuracy_ba"] == 0.0
    exact = evaluator(_Rotations(1), TrainConfig(model="discogan"), n=10000)  # the rotation: matched to itself
    assert exact["translation_matching_ab"] == list(range(10))
    assert exact["translation_consistency_ab"] == pytest.approx(exact["translation_accuracy_ab"], abs=1e-12)


# -- the trainer: exact resumes, grids, sampling, the CLI ---------------------------------------


def test_trains_and_resumes_exactly(tmp_path):
    whole, _ = assert_resumes_exactly(small, tmp_path, 2)
    assert whole.objective.head == DiscoHead(1.0) and whole.loader.images.shape[1:] == (2, 28, 28)
    assert whole.fixed_z.shape == (10, 2, 28, 28) and whole.grid_cols == 10 and whole.samples().shape == (60, 1, 28, 28)
    assert (tmp_path / "whole" / "samples.png").is_file()


def test_bad_options_are_refused_naming_them(tmp_path):
    for kw, match in (
        (dict(model="dcgan", domains="mnist-5k:mnist-5k-rot90"), "--domains .* needs --model discogan"),
        (
            dict(domains="mnist:mnist-rot90"),
            "domain A is drawn from --dataset, which is mnist-5k; give --dataset mnist",
        ),
        (dict(domains="mnist-5k"), "--domains must be two domains A:B"),
        (dict(latent_dim=10), "--latent-dim: discogan takes no noise"),
        (dict(recon_weight=-1.0), "--recon-weight must be a number >= 0"),
        (dict(model="dcgan", recon_weight=2.0), "--recon-weight .* needs --model discogan"),
    ):
        with pytest.raises(ConfigError, match=match):
            Trainer(small(tmp_path / "x", **kw))


def test_cli_train_sample_and_eval(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--model", "discogan", "--g-widths", "8,16", "--d-widths", "8,16", "--batch-size", "8", "--no-progress"]
    assert cli_main(["train", *args, "--steps", "1", "--recon-weight", "2", "--out", str(run)]) == 0
    ckpt = str(run / "checkpoint.pt")
    cfg = load_checkpoint(ckpt)["config"]
    assert cfg.recon_weight == 2.0 and cfg.domain_spec() == "mnist-5k:mnist-5k-rot90"
    assert cli_main(["sample", "--checkpoint", ckpt, "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert sample(ckpt, n=3, out=str(tmp_path / "t.png")).shape == (18, 1, 28, 28)  # six rows of 3
    out = tmp_path / "m.json"
    cache = ["--cache-dir", str(tmp_path / "cache"), "--classifier-epochs", "1"]
    capsys.readouterr()
    assert cli_main(["eval", "--checkpoint", ckpt, "--n", "100", *cache, "--json", str(out)]) == 0
    assert "translation_accuracy_ab" in capsys.readouterr().out
    m = json.loads(out.read_text())
    assert (
        m["model"] == "discogan"
        and m["n"] == 100
        and 0 <= m["translation_accuracy_ab"] <= 1
        and m["reconstruction_mse_a"] > 0
    )


def test_make_step_runs_it_on_pairs():
    step = make_step("discogan", 4, device="cpu")
    objectives = [c.cell_contents for c in step.fn.__closure__ if isinstance(c.cell_contents, Objective)]
    assert [type(o.head) for o in objectives] == [DiscoHead] and step.batches.images.shape[1:] == (2, 28, 28)
    assert torch.isfinite(step()).all() and torch.isfinite(step()).all()


# -- CUDA: both translations inside the step's one CUDA graph -----------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_graph_step_matches_the_eager_one(tmp_path):
    assert_graph_run_matches_eager(small, tmp_path)


def test_mnist_to_fashion_mnist_from_one_data_dir(tmp_path):
    """--domains mnist:fashion-mnist reads both from one --data-dir (torchvision's layout): B is
    Fashion-MNIST shuffled; training and eval run, eval without the rotation measurement."""
    import numpy as np

    from fastgan.data import write_idx

    rng = np.random.default_rng(0)
    for folder, n in (("MNIST", 40), ("FashionMNIST", 30)):
        for split_name, count in (("train", n), ("t10k", 20)):
            raw = tmp_path / "data" / folder / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            write_idx(
                str(raw / f"{split_name}-images-idx3-ubyte"), rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
            )
            write_idx(str(raw / f"{split_name}-labels-idx1-ubyte"), (np.arange(count) % 10).astype(np.uint8))
    data = str(tmp_path / "data")
    images, labels = load_pairs("mnist:fashion-mnist", data)
    fashion = load_dataset("fashion-mnist", data)[0]
    assert images.shape == (30, 2, 28, 28) and torch.equal(images[:, 0], load_dataset("mnist", data)[0][:30])
    key = lambda x: sorted(map(bytes, x.flatten(1).numpy()))  # noqa: E731
    assert key(images[:, 1]) == key(fashion) and not torch.equal(images[:, 1], fashion)
    cfg = small(tmp_path / "run", dataset="mnist", domains="mnist:fashion-mnist", data_dir=data, steps=1)
    Trainer(cfg).fit()
    m = metrics.evaluate(
        str(tmp_path / "run" / "checkpoint.pt"), n=20, cache_dir=tmp_path / "cache", classifier=TINY_CLF
    )
    assert m["reconstruction_mse_b"] > 0 and "translation_accuracy_ab" not in m
