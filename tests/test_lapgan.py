"""lapgan (issue 18): the Laplacian pyramid (exact), the generator's two paths (a sample through
the pyramid; the levels' fakes from the real low-pass), the joint step against the three
levels' GAN steps written out in plain PyTorch, exact resumes, and the CLI end to end."""

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

from fastgan.cli import main as cli_main
from fastgan.models import LapGANDiscriminator, LapGANGenerator, ModelError, build
from fastgan.models.lapgan import MAPS, pack, pyramid, unpack, up
from fastgan.train import TrainConfig, load_checkpoint
from fastgan.train.pyramid import PyramidInput
from fastgan.train.step import Objective, make_step, train_step

NARROW = dict(g_widths=(16, 8), d_widths=(8, 16))
LATENT = 100 + MAPS


def small(out, **kw):
    base = dict(model="lapgan", steps=6, batch_size=8, device="cpu", progress=False, out=str(out), log_every=3)
    return TrainConfig(**{**base, **NARROW, **kw})


def test_the_pyramid_rebuilds_the_image_exactly():
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64) * 2 - 1
    x7, h14, l14, h28, l28 = pyramid(x)
    assert [t.shape[-1] for t in (x7, h14, l14, h28, l28)] == [7, 14, 14, 28, 28]
    torch.testing.assert_close(x7, x.view(3, 1, 7, 4, 7, 4).mean((3, 5)))  # 4x4 block means
    torch.testing.assert_close(l14, up(x7))
    torch.testing.assert_close(l28 + h28, x)
    torch.testing.assert_close(up(up(x7) + h14) + h28, x)  # coarse + residuals
    back = unpack(pack((x7, h14, l14, h28, l28)))
    assert all(torch.equal(a, b) for a, b in zip(back, (x7, h14, l14, h28, l28)))


def test_the_generators_two_paths_and_ds_three_logits():
    torch.manual_seed(0)
    G, D = build("lapgan", **NARROW)
    assert isinstance(G, LapGANGenerator) and isinstance(D, LapGANDiscriminator) and G.latent_dim == LATENT
    G.eval()
    z = torch.randn(4, LATENT)
    x = G(z)
    assert x.shape == (4, 1, 28, 28) and x.abs().max() <= 1
    # the sample is the pyramid built level by level: x7, then each residual on the upsampled coarser image
    z0, z1, z2 = z.split((100, 196, 784), 1)
    x7 = G.g0(z0).view(4, 1, 7, 7)
    x14 = up(x7) + G.g1(torch.cat([z1.view(4, 1, 14, 14), up(x7)], 1))
    want = (up(x14) + G.g2(torch.cat([z2.view(4, 1, 28, 28), up(x14)], 1))).clamp(-1, 1)
    torch.testing.assert_close(x, want)
    # training: each level from the real low-pass; D sees the packed levels, or packs an image's pyramid
    real = torch.rand(4, 1, 28, 28) * 2 - 1
    packed_real, g_in = PyramidInput().batch(real, lambda: z)
    fake = G(g_in)
    assert fake.shape == packed_real.shape == (4, 49 + 2 * 196 + 2 * 784)
    lows = unpack(fake)
    assert torch.equal(lows[2], pyramid(real)[2]) and torch.equal(lows[4], pyramid(real)[4])
    torch.testing.assert_close(D(real), D(packed_real))
    assert D(fake).shape == (4, 3)
    with pytest.raises(ValueError, match=r"takes \(N, 1080\) noise or \(N, 2060\) noise \+ low-pass images"):
        G(torch.randn(2, 7))
    with pytest.raises(ModelError, match="latent_dim must be more than 980"):
        build("lapgan", latent_dim=900)


def test_the_joint_step_is_the_three_levels_gan_steps():
    """D: the mean over the levels of each level's BCE (real pyramid -> 1, fakes drawn from the real
    low-pass -> 0); G: the mean of each level's non-saturating loss; in float64 against torch.nn."""
    nets, opts = four_adams("lapgan", **NARROW)
    G, D, Gr, Dr = nets
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(8, 1, 28, 28, generator=gen, dtype=torch.float64) * 2 - 1
    z = torch.randn(8, LATENT, generator=gen, dtype=torch.float64)
    packed, g_in = PyramidInput().batch(real, lambda: z)
    losses = train_step(G, D, opts[0], opts[1], packed, None, g_in, objective=Objective(head=PyramidInput()))

    x7, h14, l14, h28, l28 = pyramid(real)
    z0, z1, z2 = z[:, :100], z[:, 100:296].view(8, 1, 14, 14), z[:, 296:].view(8, 1, 28, 28)
    fakes = (Gr.g0(z0).view(8, 1, 7, 7), Gr.g1(torch.cat([z1, l14], 1)), Gr.g2(torch.cat([z2, l28], 1)))

    def level_logits(x7_, h14_, h28_):
        return [
            Dr.d0(x7_.reshape(8, 49)),
            Dr.d1_out(Dr.d1(torch.cat([h14_, l14], 1))),
            Dr.d2_out(Dr.d2(torch.cat([h28_, l28], 1))),
        ]

    real_l, fake_l = level_logits(x7, h14, h28), level_logits(*(f.detach() for f in fakes))
    d_loss = sum(bce(r, 1.0) + bce(f, 0.0) for r, f in zip(real_l, fake_l)) / 3
    update(opts[3], d_loss)
    g_loss = sum(bce(f, 1.0) for f in level_logits(*fakes)) / 3
    update(opts[2], g_loss)
    assert_same_step(losses, d_loss, g_loss, nets)


def test_lapgan_trains_and_resumes_exactly(tmp_path):
    whole, _ = assert_resumes_exactly(small, tmp_path, 3)
    assert whole.objective.head == PyramidInput() and whole.fixed_z.shape == (64, LATENT)
    assert whole.samples().shape == (64, 1, 28, 28) and (tmp_path / "whole" / "samples.png").is_file()


def test_make_step_runs_lapgan_on_its_pyramid():
    step = make_step("lapgan", 8, device="cpu")
    objectives = [c.cell_contents for c in step.fn.__closure__ if isinstance(c.cell_contents, Objective)]
    assert [type(o.head) for o in objectives] == [PyramidInput]
    assert torch.isfinite(step()).all() and torch.isfinite(step()).all()


def test_cli_train_sample_and_eval(tmp_path):
    run = tmp_path / "run"
    args = ["--model", "lapgan", "--g-widths", "16,8", "--d-widths", "8,16", "--batch-size", "8", "--no-progress"]
    assert cli_main(["train", *args, "--steps", "2", "--out", str(run)]) == 0
    ckpt = str(run / "checkpoint.pt")
    assert load_checkpoint(ckpt)["config"].latent_dim == LATENT
    assert cli_main(["sample", "--checkpoint", ckpt, "--n", "4", "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").is_file()
    js = tmp_path / "m.json"
    cache = ["--cache-dir", str(tmp_path / "cache"), "--classifier-epochs", "1"]
    assert cli_main(["eval", "--checkpoint", ckpt, "--n", "50", *cache, "--json", str(js)]) == 0
    m = json.loads(js.read_text())
    assert m["model"] == "lapgan" and m["fid"] > 0 and m["label_accuracy"] is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_graph_step_matches_the_eager_one(tmp_path):
    assert_graph_run_matches_eager(small, tmp_path)
