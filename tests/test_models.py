"""fastgan.models: shapes, both backends (fused ops vs plain torch.nn) giving the same outputs
and gradients for the same weights, init, options and bad input."""

import pytest
import torch
from torch import nn

from fastgan import nn as fnn
from fastgan.models import CONDITIONAL, MODELS, Conv2dLeakyReLU, LatentCodes, LinearLeakyReLU, ModelError, build


def inputs(name, n=16, latent=100, seed=0):
    """z (infogan: its noise with codes joined on; discogan: pairs of images, its two domains;
    srgan: a 7x7 low-res image) and labels (None: unconditional)."""
    g = torch.Generator().manual_seed(seed)
    if name == "discogan":
        return torch.rand(n, 2, 28, 28, generator=g) * 2 - 1, None
    if MODELS[name].superres:
        return torch.rand(n, 1, 7, 7, generator=g) * 2 - 1, None
    if MODELS[name].pyramid:  # lapgan: the noise of its three levels
        latent = MODELS[name].latent_dim
    if MODELS[name].aux == "infogan":
        codes = LatentCodes(MODELS[name].latent_dim)
        return codes.attach(torch.randn(n, codes.noise_dim, generator=g), g), None
    z = torch.randn(n, latent + MODELS[name].latent_extra, generator=g)  # stackgan: + its eps
    labels = torch.arange(n) % 10 if name in CONDITIONAL else None
    return z, labels


def call(module, x, labels):
    return module(x, labels) if labels is not None else module(x)


def d_call(name, D, x, labels):
    """D's output: an ACGAN's D takes no labels (it predicts them)."""
    return call(D, x, labels if MODELS[name].d_conditional else None)


# the adversarial logit, then the head's (stackgan: the logits of its two stages; lapgan: its levels')
D_OUTPUTS = {"acgan": 1 + 10, "infogan": 1 + 10 + 2, "stackgan": 2, "discogan": 2, "lapgan": 3}
CHANNELS = {"discogan": 2}  # G's images: discogan's are pairs (domain A, domain B)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("backend", ["fastgan", "torch"])
def test_shapes(name, backend):
    torch.manual_seed(0)
    G, D = build(name, backend=backend)
    z, labels = inputs(name)
    x = call(G, z, labels)
    assert x.shape == (16, CHANNELS.get(name, 1), 28, 28)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    logits = d_call(name, D, x, labels)
    assert logits.shape == (16, D_OUTPUTS.get(name, 1))
    if MODELS[name].superres:
        assert G.input_shape == (1, 7, 7)
    else:
        expected = {"infogan": 62 + 10 + 2, "stackgan": 100 + 2 * 16, "discogan": 0, "lapgan": 100 + 14 * 14 + 28 * 28}
        assert G.latent_dim == expected.get(name, 100)
    logits.sum().backward()


# stackgan's G is deeper (two stages, six batch norms): in float32 its gradients differ between the
# backends by up to 3e-3 of a parameter's largest entry, rounding amplified; compared in float64
DTYPES = {"stackgan": torch.float64, "srgan": torch.float64}  # deep gradients whose float32 sums cancel


@pytest.mark.parametrize("name", list(MODELS))
def test_backends_share_state_dict_and_outputs(name):
    torch.manual_seed(0)
    Gf, Df = build(name, backend="fastgan", dropout=0.0)
    Gt, Dt = build(name, backend="torch")
    for a, b in ((Gf, Gt), (Df, Dt)):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb)
        assert all(sa[k].shape == sb[k].shape for k in sa)
        b.load_state_dict(sa)  # and the other way round
        a.load_state_dict(b.state_dict())
    # the fastgan backend really runs fastgan's fused modules
    fused = (LinearLeakyReLU, Conv2dLeakyReLU, fnn.BatchNorm1d, fnn.BatchNorm2d)
    assert any(isinstance(m, fused) for m in list(Gf.modules()) + list(Df.modules()))
    assert not any(isinstance(m, fused) for m in list(Gt.modules()) + list(Dt.modules()))

    z, labels = inputs(name)
    dtype = DTYPES.get(name, torch.float32)
    z = z.to(dtype)
    for m in (Gf, Gt, Df, Dt):
        m.to(dtype)
    for mode in ("train", "eval"):
        for m in (Gf, Gt, Df, Dt):
            m.train(mode == "train")
        xf, xt = call(Gf, z, labels), call(Gt, z, labels)
        torch.testing.assert_close(xf, xt, rtol=1e-5, atol=1e-6)
        real = torch.rand(16, CHANNELS.get(name, 1), 28, 28, dtype=dtype) * 2 - 1
        lf, lt = d_call(name, Df, xf, labels), d_call(name, Dt, xt, labels)
        torch.testing.assert_close(lf, lt, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(d_call(name, Df, real, labels), d_call(name, Dt, real, labels), rtol=1e-5, atol=1e-5)
        if mode == "train":
            (lf.square().mean()).backward()
            (lt.square().mean()).backward()
            for (k, pf), (_, pt) in zip(
                list(Gf.named_parameters()) + list(Df.named_parameters()),
                list(Gt.named_parameters()) + list(Dt.named_parameters()),
            ):
                # float32 sums in another order (fused kernels, other conv algorithms): 1e-4
                # relative, or 1e-5 of the gradient's largest entry for entries near zero
                scale = float(pt.grad.abs().max())
                torch.testing.assert_close(pf.grad, pt.grad, rtol=1e-4, atol=max(1e-6, 1e-5 * scale), msg=k)
    # batch-norm running statistics were updated identically
    for (k, bf), (_, bt) in zip(Gf.named_buffers(), Gt.named_buffers()):
        torch.testing.assert_close(bf, bt, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("name", list(MODELS))
def test_dcgan_init(name):
    torch.manual_seed(0)
    G, D = build(name)
    for module in (G, D):
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) and m.weight.numel() > 5000:
                assert abs(m.weight.std().item() - 0.02) < 0.002
                assert m.bias is None or torch.all(m.bias == 0)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                assert abs(m.weight.mean().item() - 1.0) < 0.02


def test_architectures():
    G, D = build("mlp")
    widths = [m.out_features for m in G.modules() if isinstance(m, nn.Linear)]
    assert widths == [256, 512, 1024, 784]
    assert [m.out_features for m in D.modules() if isinstance(m, nn.Linear)] == [1024, 512, 256, 1]
    assert all(m.negative_slope == 0.0 for m in G.modules() if isinstance(m, LinearLeakyReLU))  # ReLU
    assert all(m.negative_slope == 0.2 for m in D.modules() if isinstance(m, LinearLeakyReLU))
    G, _ = build("mlp", g_act="leaky", backend="torch")
    assert any(isinstance(m, nn.LeakyReLU) for m in G.modules())
    G, D = build("mlp-bn")
    bns = [m for m in G.modules() if isinstance(m, fnn.BatchNorm1d)]
    assert len(bns) == 3 and all(b.momentum == 0.3 for b in bns)
    # Keras order: Dense -> LeakyReLU(0.2) -> BatchNorm, the activation fused into the Dense
    acts = [m.negative_slope for m in G.modules() if isinstance(m, LinearLeakyReLU)]
    assert acts == [0.2, 0.2, 0.2] and all(b.negative_slope is None for b in bns)
    hidden = [type(m).__name__ for m in G.net.children()][:6]
    assert hidden == ["LinearLeakyReLU", "BatchNorm1d"] * 3
    G, _ = build("mlp-bn", backend="torch")
    assert [m.negative_slope for m in G.modules() if isinstance(m, nn.LeakyReLU)] == [0.2, 0.2, 0.2]
    assert [m.out_features for m in D.modules() if isinstance(m, nn.Linear)] == [512, 256, 1]
    G, D = build("dcgan")
    assert sum(isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2) for m in G.modules()) == 2
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and all(c.stride == (2, 2) for c in convs)
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules()) == 1  # not on the first
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in D.modules())


def test_options():
    G, D = build("mlp", latent_dim=32, g_widths=(64, 128), d_widths=(128, 64), dropout=0.3)
    assert G(torch.randn(4, 32)).shape == (4, 1, 28, 28)
    assert [m.p for m in D.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    D.eval()
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(D(x), D(x))  # dropout off in eval mode
    G, D = build("dcgan", g_widths=(32, 16), d_widths=(8, 16), dropout=0.4)
    assert G(torch.randn(2, 100)).shape == (2, 1, 28, 28)
    assert sum(isinstance(m, nn.Dropout) for m in D.modules()) == 2


@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_models_use_the_label(name):
    torch.manual_seed(0)
    G, D = build(name)
    G.eval()
    z = torch.randn(1, G.latent_dim).expand(10, G.latent_dim)
    x = G(z, torch.arange(10))
    assert (x[0] - x[7]).abs().max() > 1e-4
    if not MODELS[name].d_conditional:  # acgan: D predicts the label and refuses to be given it
        with pytest.raises(ValueError, match="not conditional: it takes no labels"):
            D(x, torch.zeros(10, dtype=torch.long))
        with pytest.raises(ValueError, match="conditional"):
            G(z)
        return
    assert (D(x, torch.zeros(10, dtype=torch.long)) - D(x, torch.ones(10, dtype=torch.long))).abs().max() > 0
    with pytest.raises(ValueError, match="conditional"):
        G(z)
    with pytest.raises(ValueError, match="conditional"):
        D(x)


def test_bad_names():
    with pytest.raises(ModelError, match="unknown model 'wgan'"):
        build("wgan")
    with pytest.raises(ValueError, match="unknown backend"):
        build("mlp", backend="jax")
    with pytest.raises(ModelError, match="dropout"):
        build("mlp", dropout=1.5)
    for kw, match in (
        (dict(g_widths=(16, 0)), "g_widths must be a positive integer, got 0"),  # a dead G
        (dict(d_widths=()), "d_widths must be a non-empty list"),
        (dict(g_act="bogus"), "g_act must be one of relu, leaky"),
        (dict(latent_dim=100.5), "latent_dim must be a positive integer"),
    ):
        with pytest.raises(ModelError, match=match):
            build("mlp-bn", **kw)
    with pytest.raises(ModelError, match="g_widths: this model takes 2 channel counts, got 3"):
        build("dcgan", g_widths=(8, 16, 32))


@pytest.mark.parametrize("name", list(MODELS))
def test_labels_are_checked(name):
    """Labels an unconditional model would ignore, and labels of the wrong shape or dtype for a
    conditional one, are named (they gave embedding/cat errors, or were silently ignored)."""
    G, D = build(
        name, g_widths=(8, 16) if MODELS[name].conv else (8, 16, 32), d_widths=(8, 16) if MODELS[name].conv else (16, 8)
    )
    z, x = inputs(name, 4)[0], torch.randn(4, 1, 28, 28)
    if not MODELS[name].d_conditional:
        with pytest.raises(ValueError, match="not conditional: it takes no labels"):
            D(x, torch.zeros(4, dtype=torch.long))
    if name not in CONDITIONAL:
        with pytest.raises(ValueError, match="not conditional: it takes no labels"):
            G(z, torch.zeros(4, dtype=torch.long))
        return
    for bad in (torch.zeros(4), torch.zeros(4, 1, dtype=torch.long), torch.zeros(3, dtype=torch.long), [0, 1, 2, 3]):
        with pytest.raises(ValueError, match=r"labels must be an int64 tensor of shape \(4,\)"):
            G(z, bad)
        if MODELS[name].d_conditional:
            with pytest.raises(ValueError, match=r"labels must be an int64 tensor of shape \(4,\)"):
                D(x, bad)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list(MODELS))
def test_backends_agree_on_cuda(name):
    torch.manual_seed(0)
    Gf, Df = build(name, backend="fastgan")
    Gt, Dt = build(name, backend="torch")
    Gt.load_state_dict(Gf.state_dict())
    Dt.load_state_dict(Df.state_dict())
    for m in (Gf, Df, Gt, Dt):
        m.cuda()
    z, labels = inputs(name)
    z = z.cuda()
    labels = labels.cuda() if labels is not None else None
    xf, xt = call(Gf, z, labels), call(Gt, z, labels)
    torch.testing.assert_close(xf, xt, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(d_call(name, Df, xf, labels), d_call(name, Dt, xt, labels), rtol=1e-4, atol=1e-4)
