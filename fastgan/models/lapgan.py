"""LAPGAN (Denton et al. 2015) at MNIST scale: a 3-level Laplacian pyramid, 7x7 -> 14x14 -> 28x28.

A real image's pyramid (pyramid()): r14 = the 2x2 block means of the image, x7 = those of r14;
each finer level is the upsampled coarser image (bilinear, the low-pass l) plus a band-pass
residual h: r14 = l14 + h14, image = l28 + h28, exactly. The generator is three GANs' generators
in one module: g0 draws x7 from noise, g1 and g2 draw the residuals h14, h28 from a noise map and
the low-pass image they refine; the discriminator is their three discriminators (d0 on x7, d1
on (h14, l14), d2 on (h28, l28)), giving (N, 3) logits. The three levels train jointly in one
step: each level's fakes are drawn from the real image's low-pass (as in the paper's training),
all levels' images packed in one (N, PACKED) tensor so that the step's one D pass sees them.

    G(z)          z (N, latent_dim): the noise of all levels -> a 28x28 sample through the pyramid
    G(train_in)   (N, latent_dim + 196 + 784): noise + the real l14, l28 -> packed fakes (x7, h14, l14, h28, l28)
    D(packed)     -> (N, 3); D(images (N, 1, 28, 28)) packs their pyramid first
"""

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from fastgan.models.layers import bn_act, check_backend, conv_act, init_dcgan, linear_act

SIZES = (7, 14, 28)
MAPS = 14 * 14 + 28 * 28  # the two noise maps (g1's, g2's), and the two low-pass images
PACKED = 7 * 7 + 2 * 14 * 14 + 2 * 28 * 28  # x7, h14, l14, h28, l28


def up(x):
    """x2 bilinear upsampling: the low-pass image of the next level."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def pyramid(images):
    """(x7, h14, l14, h28, l28) of images (N, 1, 28, 28): x7 + the residuals rebuild them exactly."""
    r14 = F.avg_pool2d(images, 2)
    x7 = F.avg_pool2d(r14, 2)
    l14, l28 = up(x7), up(r14)
    return x7, r14 - l14, l14, images - l28, l28


def pack(levels):
    return torch.cat([t.flatten(1) for t in levels], 1)


def unpack(packed):
    n, sizes = packed.shape[0], (49, 196, 196, 784, 784)
    parts = packed.split(sizes, 1)
    return tuple(p.view(n, 1, s, s) for p, s in zip(parts, (7, 14, 14, 28, 28)))


def _refiner(channels, backend):
    """(noise map, low-pass) 2 channels -> conv 3x3 + BN + ReLU, twice -> conv 3x3 to the residual."""
    layers = [("conv1", nn.Conv2d(2, channels, 3, 1, 1, bias=False))] + bn_act("bn1", channels, 0.0, backend, dims=2)
    layers += [("conv2", nn.Conv2d(channels, channels, 3, 1, 1, bias=False))]
    layers += bn_act("bn2", channels, 0.0, backend, dims=2)
    return nn.Sequential(OrderedDict(layers + [("out", nn.Conv2d(channels, 1, 3, 1, 1))]))


class LapGANGenerator(nn.Module):
    """The pyramid's three generators; channels: (the base MLP's width, the refiners' channels)."""

    def __init__(self, latent_dim=100 + MAPS, channels=(256, 32), backend="fastgan"):
        super().__init__()
        check_backend(backend)
        if latent_dim <= MAPS:
            raise ValueError(f"latent_dim must be more than {MAPS} (the two noise maps' pixels), got {latent_dim}")
        width, c = channels
        self.latent_dim, self.z0 = latent_dim, latent_dim - MAPS
        self.img_shape = (1, 28, 28)
        layers = linear_act("fc1", self.z0, width, 0.0, backend) + [("fc2", nn.Linear(width, 49)), ("tanh", nn.Tanh())]
        self.g0 = nn.Sequential(OrderedDict(layers))
        self.g1, self.g2 = _refiner(c, backend), _refiner(c, backend)
        init_dcgan(self)

    def _noise(self, z):
        n = z.shape[0]
        z0, z1, z2 = z.split((self.z0, 196, 784), 1)
        return z0, z1.view(n, 1, 14, 14), z2.view(n, 1, 28, 28)

    def forward(self, x, labels=None):
        if labels is not None:
            raise ValueError("this generator is not conditional: it takes no labels")
        n = x.shape[0]
        if x.dim() == 2 and x.shape[1] == self.latent_dim:  # a sample through the pyramid
            z0, z1, z2 = self._noise(x)
            x7 = self.g0(z0).view(n, 1, 7, 7)
            l14 = up(x7)
            l28 = up(l14 + self.g1(torch.cat([z1, l14], 1)))
            return (l28 + self.g2(torch.cat([z2, l28], 1))).clamp(-1.0, 1.0)
        if x.dim() == 2 and x.shape[1] == self.latent_dim + MAPS:  # training: each level from the real low-pass
            z, lows = x.split((self.latent_dim, MAPS), 1)
            z0, z1, z2 = self._noise(z)
            l14, l28 = lows[:, :196].view(n, 1, 14, 14), lows[:, 196:].view(n, 1, 28, 28)
            x7 = self.g0(z0).view(n, 1, 7, 7)
            return pack((x7, self.g1(torch.cat([z1, l14], 1)), l14, self.g2(torch.cat([z2, l28], 1)), l28))
        raise ValueError(
            f"lapgan's generator takes (N, {self.latent_dim}) noise or (N, {self.latent_dim + MAPS}) noise + "
            f"low-pass images, got {tuple(x.shape)}"
        )


class LapGANDiscriminator(nn.Module):
    """The pyramid's three discriminators -> (N, 3) logits; channels: (C0, C1) of the convs."""

    def __init__(self, channels=(32, 64), dropout_p=0.0, backend="fastgan"):
        super().__init__()
        check_backend(backend)
        c0, c1 = channels
        self.d0 = nn.Sequential(OrderedDict(linear_act("fc1", 49, 128, 0.2, backend) + [("out", nn.Linear(128, 1))]))
        self.d1 = nn.Sequential(
            OrderedDict(conv_act("conv1", 2, c0, 4, 2, 1, 0.2, backend) + [("flatten", nn.Flatten())])
        )
        self.d1_out = nn.Linear(c0 * 7 * 7, 1)
        layers = conv_act("conv1", 2, c0, 4, 2, 1, 0.2, backend) + conv_act("conv2", c0, c1, 4, 2, 1, 0.2, backend)
        self.d2 = nn.Sequential(OrderedDict(layers + [("flatten", nn.Flatten())]))
        self.d2_out = nn.Linear(c1 * 7 * 7, 1)
        self.dropout = nn.Dropout(dropout_p) if dropout_p else nn.Identity()
        init_dcgan(self)

    def forward(self, x, labels=None):
        if labels is not None:
            raise ValueError("this discriminator is not conditional: it takes no labels")
        x7, h14, l14, h28, l28 = unpack(x if x.dim() == 2 else pack(pyramid(x)))
        n = x.shape[0]
        return torch.cat(
            [
                self.d0(x7.reshape(n, 49)),
                self.d1_out(self.dropout(self.d1(torch.cat([h14, l14], 1)))),
                self.d2_out(self.dropout(self.d2(torch.cat([h28, l28], 1)))),
            ],
            1,
        )
