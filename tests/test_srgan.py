"""srgan (issue 18): the residual generator's shapes, the step (G's input the downsampled batch,
the content + feature + weighted adversarial loss) against plain PyTorch, PSNR and SSIM on cases
with known answers, the measurement beside bicubic upsampling, exact resumes, and the CLI end to
end (sample grid, sample --input, eval --json). Small widths keep it fast."""

import functools
import json
import math

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
from fastgan.metrics.fid import feature_stats
from fastgan.metrics.superres import Features, psnr, spread, ssim, ssim_map, superres_metrics
from fastgan.models import ModelError, SRGenerator, build
from fastgan.train import ConfigError, TrainConfig, Trainer, load_checkpoint, sample
from fastgan.train.step import Objective, make_step, train_step
from fastgan.train.superres import ContentLoss, bicubic, downsample

NARROW = dict(g_widths=(8, 8), d_widths=(8, 16))


def small(out, **kw):
    base = dict(model="srgan", steps=6, batch_size=8, device="cpu", progress=False, out=str(out), log_every=3)
    return TrainConfig(**{**base, **NARROW, **kw})


def tiny_features(seed=0):
    """A small random frozen stand-in for the classifier's penultimate layer (the loss's phi)."""
    torch.manual_seed(seed)
    lenet = metrics.LeNet(channels=(4, 8), features=16)
    return Features(lenet)


# -- the pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 4])
def test_the_generator_upscales_by_its_factor(factor):
    torch.manual_seed(0)
    G, D = build("srgan", sr_factor=factor, **NARROW)
    assert isinstance(G, SRGenerator) and G.input_shape == (1, 28 // factor, 28 // factor)
    low = torch.rand(3, 1, 28 // factor, 28 // factor) * 2 - 1
    x = G(low)
    assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1
    assert D(x).shape == (3, 1)
    assert G(torch.zeros(1, 1, 5, 6)).shape == (1, 1, 5 * factor, 6 * factor)  # convolutional: any size
    # the torch backend builds the same parameters and computes the same images
    Gr, _ = build("srgan", backend="torch", sr_factor=factor, **NARROW)
    Gr.load_state_dict(G.state_dict())
    torch.testing.assert_close(Gr(low), x, rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError, match="sr_factor must be one of 2, 4, got 3"):
        build("srgan", sr_factor=3)


def test_downsample_is_the_block_mean_and_bicubic_keeps_constants():
    x = torch.rand(2, 1, 28, 28)
    want = x.view(2, 1, 7, 4, 7, 4).mean((3, 5))
    torch.testing.assert_close(downsample(x, 4), want)
    flat = torch.full((1, 1, 7, 7), 0.3)
    torch.testing.assert_close(bicubic(flat, 4), torch.full((1, 1, 28, 28), 0.3))


@pytest.mark.parametrize("adv_weight, feature_weight", [(1e-3, 0.5), (0.0, 0.5), (1e-3, 0.0)])
def test_the_step_is_plain_pytorchs(adv_weight, feature_weight):
    """G's input: the real batch's 4x4 block means; D: BCE on real and super-resolved images;
    G: adv_weight * BCE + MSE(pixels) + feature_weight * MSE(phi(fake), phi(real))."""
    nets, opts = four_adams("srgan", **NARROW)
    G, D, Gr, Dr = nets
    phi = tiny_features().double()
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(4, 1, 28, 28, generator=gen, dtype=torch.float64) * 2 - 1
    content = ContentLoss(4, feature_weight, adv_weight, phi)
    low = content.g_input(real)
    losses = train_step(G, D, opts[0], opts[1], real, None, low, objective=Objective(head=content))

    low_ref = real.view(4, 1, 7, 4, 7, 4).mean((3, 5))
    fake = Gr(low_ref)
    d_loss = bce(Dr(real), 1.0) + bce(Dr(fake.detach()), 0.0)
    update(opts[3], d_loss)
    feat = ((phi(fake) - phi(real)) ** 2).mean()
    g_loss = adv_weight * bce(Dr(fake), 1.0) + ((fake - real) ** 2).mean() + feature_weight * feat
    update(opts[2], g_loss)
    assert_same_step(losses, d_loss, g_loss, nets)
    assert all(p.grad is None for p in phi.parameters())  # phi stays frozen


def test_psnr_on_known_cases():
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert torch.isinf(psnr(x, x)).all()  # exact: infinite
    y = torch.full((2, 1, 28, 28), -1.0)  # 0 in [0, 1]
    z = y + 0.2  # 0.1 in [0, 1]: MSE 0.01, 20 dB
    torch.testing.assert_close(psnr(z, y), torch.full((2,), 20.0, dtype=torch.float64))


def test_ssim_on_known_cases():
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert ssim_map(x, x).shape == (2, 1, 18, 18)
    # two constant images a, b in [0, 1]: no variance, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.2, 0.7, 0.01**2
    got = ssim(torch.full((1, 1, 28, 28), 2 * a - 1), torch.full((1, 1, 28, 28), 2 * b - 1))
    torch.testing.assert_close(got, torch.tensor([(2 * a * b + c1) / (a * a + b * b + c1)], dtype=torch.float64))
    # one window by hand: Gaussian-weighted means, variances and covariance of an 11x11 patch
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    t = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(t**2) / (2 * 1.5**2))
    w = torch.outer(g, g) / g.sum() ** 2
    p, q = (x[0, 0, 3:14, 5:16].double() + 1) / 2, (y[0, 0, 3:14, 5:16].double() + 1) / 2
    mp, mq = (w * p).sum(), (w * q).sum()
    vp, vq, cov = (w * (p - mp) ** 2).sum(), (w * (q - mq) ** 2).sum(), (w * (p - mp) * (q - mq)).sum()
    c2 = 0.03**2
    want = (2 * mp * mq + c1) * (2 * cov + c2) / ((mp**2 + mq**2 + c1) * (vp + vq + c2))
    torch.testing.assert_close(ssim_map(x, y)[0, 0, 3, 5], want)


def test_the_held_out_digits_are_spread_over_the_test_set():
    x = torch.arange(100, dtype=torch.uint8).view(100, 1, 1).expand(100, 28, 28)
    y = torch.arange(100) // 10  # digit by digit, as the test files run
    images, labels = spread(x, y, 10)
    assert labels.tolist() == list(range(10)) and images.shape == (10, 1, 28, 28)
    assert spread(x, y)[1].tolist() == y.tolist() and len(spread(x, y, 500)[1]) == 100


class _Nearest(nn.Module):
    """An oracle for block-constant images: nearest-neighbour upsampling restores them exactly."""

    def __init__(self, factor):
        super().__init__()
        self.factor, self.w = factor, nn.Parameter(torch.zeros(()))

    def forward(self, x, labels=None):
        return F.interpolate(x, scale_factor=self.factor, mode="nearest") + self.w


def test_the_measurement_on_known_cases():
    """Block-constant images: an exact super-resolver gets infinite PSNR and SSIM 1 and keeps the
    classifier's accuracy on the originals; bicubic falls short. Constant images: bicubic is exact."""
    torch.manual_seed(0)
    clf = metrics.LeNet(channels=(4, 8), features=16).eval()
    low = torch.randint(-8, 9, (20, 1, 7, 7)) / 8.0  # dyadic: a block's mean is exact in float32
    images = F.interpolate(low, scale_factor=4, mode="nearest")
    labels = torch.randint(0, 10, (20,))
    real_stats = feature_stats(metrics.classify(clf, images)[0])
    cfg = TrainConfig(model="srgan")
    m = superres_metrics(_Nearest(4), cfg, images, labels, clf, real_stats)
    assert math.isinf(m["psnr"]) and m["ssim"] == pytest.approx(1.0) and m["n"] == 20
    assert m["label_accuracy"] == m["original_accuracy"] == m["sr"]["accuracy"]
    assert abs(m["fid"]) < 1e-4
    assert m["bicubic"]["psnr"] < 40 and m["bicubic"]["ssim"] < 1
    flat = torch.ones(4, 1, 28, 28) * torch.linspace(-0.5, 0.5, 4).view(4, 1, 1, 1)
    m = superres_metrics(_Nearest(4), cfg, flat, labels[:4], clf, real_stats)
    assert math.isinf(m["bicubic"]["psnr"]) and math.isinf(m["psnr"])


# -- the trainer: exact resumes, options --------------------------------------------------------


@pytest.mark.parametrize("factor", [4, 2])
def test_srgan_trains_and_resumes_exactly(tmp_path, factor):
    phi = tiny_features()
    whole, _ = assert_resumes_exactly(functools.partial(small, sr_factor=factor), tmp_path, 3, feature_net=phi)
    content = whole.objective.head
    assert (content.factor, content.feature_weight, content.adv_weight) == (factor, 0.01, 1e-3)
    assert whole.fixed_z.shape == (64, 1, 28 // factor, 28 // factor) and whole.grid_cols == 8
    assert whole.samples().shape == (64, 1, 28, 28) and (tmp_path / "whole" / "samples.png").is_file()


def test_bad_options_are_refused_naming_them(tmp_path):
    with pytest.raises(ConfigError, match="--sr-factor must be 2 .* or 4 .*, got 3"):
        Trainer(small(tmp_path / "a", sr_factor=3, feature_weight=0.0))
    with pytest.raises(ConfigError, match="--adv-weight weighs a term of srgan's loss: it needs --model srgan"):
        Trainer(small(tmp_path / "b", model="dcgan", adv_weight=0.0))
    with pytest.raises(ConfigError, match="--feature-weight must be a number >= 0"):
        Trainer(small(tmp_path / "c", feature_weight=-1.0))
    with pytest.raises(ConfigError, match="feature_net=fastgan.metrics.feature_net"):
        Trainer(small(tmp_path / "d"))  # the feature loss needs its classifier
    Trainer(small(tmp_path / "e", steps=1, feature_weight=0.0)).fit()
    with pytest.raises(ConfigError, match="holds srgan, which super-resolves images"):
        sample(str(tmp_path / "e" / "checkpoint.pt"), out=str(tmp_path / "s.png"))


def test_make_step_runs_srgan_on_its_downsampled_batch():
    step = make_step("srgan", 8, device="cpu")
    objectives = [c.cell_contents for c in step.fn.__closure__ if isinstance(c.cell_contents, Objective)]
    assert [type(o.head) for o in objectives] == [ContentLoss]
    assert torch.isfinite(step()).all() and torch.isfinite(step()).all()


def test_cli_train_sample_input_and_eval(tmp_path, capsys):
    from matplotlib import image as mpimg

    run = tmp_path / "run"
    args = ["--model", "srgan", "--g-widths", "8,8", "--d-widths", "8,16", "--batch-size", "8", "--no-progress"]
    assert cli_main(["train", *args, "--steps", "2", "--feature-weight", "0", "--out", str(run)]) == 0
    ckpt = str(run / "checkpoint.pt")
    assert load_checkpoint(ckpt)["config"].feature_weight == 0.0
    assert cli_main(["sample", "--checkpoint", ckpt, "--n", "4", "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").is_file()
    mpimg.imsave(str(tmp_path / "low.png"), torch.rand(7, 9).numpy(), cmap="gray", vmin=0, vmax=1)
    out = tmp_path / "up.png"
    assert cli_main(["sample", "--checkpoint", ckpt, "--input", str(tmp_path / "low.png"), "--out", str(out)]) == 0
    assert mpimg.imread(str(out)).shape[:2] == (28, 36)
    capsys.readouterr()
    assert cli_main(["sample", "--checkpoint", ckpt, "--label", "3"]) == 2
    assert "leave out --label" in capsys.readouterr().err
    js = tmp_path / "m.json"
    cache = ["--cache-dir", str(tmp_path / "cache"), "--classifier-epochs", "1"]
    assert cli_main(["eval", "--checkpoint", ckpt, "--n", "50", *cache, "--json", str(js)]) == 0
    assert "psnr" in capsys.readouterr().out
    m = json.loads(js.read_text())
    assert m["model"] == "srgan" and m["n"] == 50 and m["sr_factor"] == 4
    assert m["psnr"] == m["sr"]["psnr"] and 0 < m["bicubic"]["psnr"] < 100 and -1 <= m["bicubic"]["ssim"] <= 1
    assert 0 <= m["label_accuracy"] <= 1 and 0 <= m["original_accuracy"] <= 1


# -- CUDA: srgan's content loss inside the step's one CUDA graph -------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_graph_step_matches_the_eager_one(tmp_path):
    assert_graph_run_matches_eager(small, tmp_path, feature_net=tiny_features())
