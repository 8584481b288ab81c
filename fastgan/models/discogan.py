"""DiscoGAN at MNIST scale (Kim et al. 2017): two generators between two unpaired domains A and
B (G_AB, G_BA: each a convolutional encoder-decoder, 28x28 -> 7x7 -> a fully connected code ->
7x7 -> 28x28) and a discriminator per domain, with reconstruction losses both ways (A -> B -> A,
B -> A -> B).

Images of both domains travel as pairs of channels (N, 2, 28, 28): channel 0 domain A, channel
1 domain B. G(pair) translates each: (G_BA(B), G_AB(A)), a pair again (fake A, fake B); D(pair)
gives (N, 2): D_A's logit of channel 0, D_B's of channel 1.
"""

from collections import OrderedDict

import torch
from torch import nn

from fastgan.models.dcgan import DCGANDiscriminator
from fastgan.models.layers import bn_act, check_backend, conv_act, init_dcgan


def _check_pair(x, role):
    if x.dim() != 4 or tuple(x.shape[1:]) != (2, 28, 28):
        raise ValueError(
            f"discogan's {role} takes pairs (N, 2, 28, 28): channel 0 domain A, channel 1 domain B; "
            f"got {tuple(x.shape)}"
        )


class Translator(nn.Module):
    """(N, 1, 28, 28) -> Conv stride 2 + LeakyReLU (14x14) -> Conv stride 2 + BN + LeakyReLU (7x7)
    -> Linear to `code` units + BN + LeakyReLU -> Linear back to 7x7 + BN2d + ReLU -> ConvT stride
    2 + BN + ReLU (14x14) -> ConvT stride 2 -> tanh (28x28).

    The fully connected bottleneck gives every output pixel the whole image: without it an
    output pixel sees a 16x16 window of the input, and a 90-degree rotation moves the pixels
    more than 5.6 px from the centre farther than that, i.e. the all-convolutional translator
    cannot draw the rotation that mnist:mnist-rot90 asks for (measured: RESULTS.md)."""

    def __init__(self, channels=(64, 128), code=None, backend="fastgan"):
        super().__init__()
        c0, c1 = channels
        code = 2 * c1 if code is None else code
        layers = conv_act("conv1", 1, c0, 4, 2, 1, 0.2, backend)
        layers += [("conv2", nn.Conv2d(c0, c1, 4, 2, 1, bias=False))] + bn_act("bn2", c1, 0.2, backend, dims=2)
        layers += [("flatten", nn.Flatten()), ("fc1", nn.Linear(c1 * 49, code, bias=False))]
        layers += bn_act("bn_fc1", code, 0.2, backend)
        layers += [("fc2", nn.Linear(code, c1 * 49, bias=False)), ("unflatten", nn.Unflatten(1, (c1, 7, 7)))]
        layers += bn_act("bn_fc2", c1, 0.0, backend, dims=2)  # per channel, as DCGAN's G after its fc
        layers += [("deconv1", nn.ConvTranspose2d(c1, c0, 4, 2, 1, bias=False))]
        layers += bn_act("bn3", c0, 0.0, backend, dims=2)
        layers += [("deconv2", nn.ConvTranspose2d(c0, 1, 4, 2, 1)), ("tanh", nn.Tanh())]
        self.net = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        return self.net(x)


class DiscoGenerator(nn.Module):
    """G_AB and G_BA. forward(pair) -> (G_BA(B), G_AB(A)); cycle(pair) -> (that, the
    reconstructions (G_BA(G_AB(A)), G_AB(G_BA(B))))."""

    def __init__(self, channels=(64, 128), backend="fastgan"):
        super().__init__()
        check_backend(backend)
        self.latent_dim = 0  # no noise: G's input is the batch
        self.ab, self.ba = Translator(channels, backend=backend), Translator(channels, backend=backend)
        init_dcgan(self)

    def forward(self, x, labels=None):
        if labels is not None:
            raise ValueError("this generator is not conditional: it takes no labels")
        _check_pair(x, "generator")
        return torch.cat([self.ba(x[:, 1:]), self.ab(x[:, :1])], dim=1)

    def cycle(self, x):
        fake = self(x)
        return fake, torch.cat([self.ba(fake[:, 1:]), self.ab(fake[:, :1])], dim=1)


class DiscoDiscriminator(nn.Module):
    """D_A and D_B (each the DCGAN D): pair (N, 2, 28, 28) -> (N, 2)."""

    def __init__(self, channels=(64, 128), dropout_p=0.0, backend="fastgan"):
        super().__init__()
        check_backend(backend)
        self.a, self.b = (DCGANDiscriminator(channels, dropout_p, backend=backend) for _ in range(2))
        init_dcgan(self)

    def forward(self, x, labels=None):
        if labels is not None:
            raise ValueError("this discriminator is not conditional: it takes no labels")
        _check_pair(x, "discriminator")
        return torch.cat([self.a(x[:, :1]), self.b(x[:, 1:])], dim=1)
