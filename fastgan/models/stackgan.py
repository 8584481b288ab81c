"""StackGAN at MNIST scale (Zhang et al. 2017): sketch, then refine, both conditioned on the digit.

The condition is the digit's learned embedding (the stand-in for StackGAN's text embedding);
each stage draws its own condition c from it by conditioning augmentation: a linear layer gives
(mu, log sigma^2) and c = mu + sigma * eps, eps ~ N(0, I), with a KL term pulling N(mu, sigma^2)
towards N(0, I). The eps of both stages are columns of G's input z, after the noise (z: noise,
eps of stage I, eps of stage II), so that the step draws them with its noise (one generator,
CUDA-graph safe, resumed exactly) and a sample is a function of z and the label.

  stage I:  [noise, c1] -> Linear -> (C0, 7, 7) -> BN+ReLU -> ConvT stride 2 -> (C0/2, 14, 14)
            -> BN+ReLU -> Conv 3x3 -> tanh: a 14x14 sketch
  stage II: the sketch -> Conv 3x3 + ReLU, joined with c2 replicated over the 14x14 grid ->
            Conv 3x3 -> BN+ReLU -> a residual block -> ConvT stride 2 (28x28) -> BN+ReLU ->
            Conv 3x3 -> tanh: the 28x28 image

D holds one discriminator per stage, both given the label (as cdcgan's D is): D's input is a
pair of 28x28 channels, the image and the stage-I view upsampled (nearest, so that a 2x2 average
gives the 14x14 view back exactly); D returns (N, 2): stage II's logit, then stage I's.
"""

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from fastgan.models.dcgan import DCGANDiscriminator
from fastgan.models.layers import bn_act, check_backend, conv_act, init_dcgan, with_labels

CONDITION_DIM = 16  # c's size per stage (StackGAN's N_g, 128 for text; a digit needs far less)


class ConditioningAugmentation(nn.Module):
    """The embedding e (N, E) -> (c (N, dim), mu, logvar): c = mu + exp(logvar / 2) * eps."""

    def __init__(self, embed_dim, dim=CONDITION_DIM):
        super().__init__()
        self.dim = dim
        self.fc = nn.Linear(embed_dim, 2 * dim)

    def forward(self, e, eps):
        mu, logvar = self.fc(e).chunk(2, dim=1)
        return mu + torch.exp(0.5 * logvar) * eps, mu, logvar


def kl_to_standard_normal(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) averaged over the batch and the condition's dimensions
    (as StackGAN's code does): mean(0.5 * (mu^2 + exp(logvar) - 1 - logvar))."""
    return 0.5 * (mu.square() + logvar.exp() - 1 - logvar).mean()


def stage_one_view(images):
    """The 14x14 view of 28x28 images that stage I's discriminator judges: their 2x2 averages."""
    return F.avg_pool2d(images, 2)


def upsample(sketch):
    """A 14x14 sketch as 28x28 (nearest: stage_one_view gives it back exactly)."""
    return F.interpolate(sketch, scale_factor=2, mode="nearest")


def pair(images, sketch=None):
    """D's input (N, 2, 28, 28): the image and the stage-I view upsampled (a real image's own
    2x2 averages when no sketch is given)."""
    return torch.cat([images, upsample(stage_one_view(images) if sketch is None else sketch)], dim=1)


class ResidualBlock(nn.Module):
    """x + BN(Conv(BN+ReLU(Conv(x)))), then ReLU (StackGAN's stage-II residual blocks)."""

    def __init__(self, channels, backend):
        super().__init__()
        layers = [("conv1", nn.Conv2d(channels, channels, 3, 1, 1, bias=False))]
        layers += bn_act("bn1", channels, 0.0, backend, dims=2)
        layers += [("conv2", nn.Conv2d(channels, channels, 3, 1, 1, bias=False))]
        layers += bn_act("bn2", channels, None, backend, dims=2)
        self.net = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        return F.relu(x + self.net(x))


class StackGenerator(nn.Module):
    """(z (N, noise_dim + 2 * CONDITION_DIM), labels (N,)) -> stage II's images (N, 1, 28, 28);
    stages() gives both stages and their conditions. channels: (stage I's 7x7 channels, stage
    II's channels)."""

    def __init__(self, noise_dim=100, channels=(128, 32), num_classes=10, embed_dim=32, backend="fastgan"):
        super().__init__()
        check_backend(backend)
        c0, c1 = channels
        half = max(1, c0 // 2)
        self.noise_dim, self.num_classes, self.c0 = noise_dim, num_classes, c0
        self.latent_dim = noise_dim + 2 * CONDITION_DIM  # the step's z: noise, then both stages' eps
        self.img_shape = (1, 28, 28)
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.ca1 = ConditioningAugmentation(embed_dim)
        self.ca2 = ConditioningAugmentation(embed_dim)
        self.fc = nn.Linear(noise_dim + CONDITION_DIM, c0 * 7 * 7, bias=False)
        layers = bn_act("bn0", c0, 0.0, backend, dims=2)
        layers += [("deconv1", nn.ConvTranspose2d(c0, half, 4, 2, 1, bias=False))]
        layers += bn_act("bn1", half, 0.0, backend, dims=2)
        layers += [("conv2", nn.Conv2d(half, 1, 3, 1, 1)), ("tanh", nn.Tanh())]
        self.stage1 = nn.Sequential(OrderedDict(layers))
        self.encode = nn.Sequential(OrderedDict(conv_act("conv", 1, c1, 3, 1, 1, 0.0, backend)))
        layers = [("join", nn.Conv2d(c1 + CONDITION_DIM, c1, 3, 1, 1, bias=False))]
        layers += bn_act("bn0", c1, 0.0, backend, dims=2)
        layers += [("res", ResidualBlock(c1, backend))]
        layers += [("deconv", nn.ConvTranspose2d(c1, c1, 4, 2, 1, bias=False))]
        layers += bn_act("bn1", c1, 0.0, backend, dims=2)
        layers += [("out", nn.Conv2d(c1, 1, 3, 1, 1)), ("tanh", nn.Tanh())]
        self.stage2 = nn.Sequential(OrderedDict(layers))
        init_dcgan(self)

    def split(self, z):
        """(noise, stage I's eps, stage II's eps) of an input z."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"z must be (N, {self.latent_dim}): {self.noise_dim} noise, then {CONDITION_DIM} eps for each "
                f"stage's conditioning augmentation; got {tuple(z.shape)}"
            )
        d, c = self.noise_dim, CONDITION_DIM
        return z[:, :d], z[:, d : d + c], z[:, d + c :]

    def stages(self, z, labels):
        """(stage II's images (N, 1, 28, 28), stage I's sketches (N, 1, 14, 14), the KL term of
        both stages' conditioning augmentation (0-dim))."""
        noise, eps1, eps2 = self.split(z)
        e = with_labels(noise[:, :0], self.embed, labels, "generator")  # the labels' embedding, checked
        c1, mu1, logvar1 = self.ca1(e, eps1)
        c2, mu2, logvar2 = self.ca2(e, eps2)
        h = self.fc(torch.cat([noise, c1], dim=1)).view(z.shape[0], self.c0, 7, 7)
        sketch = self.stage1(h)
        grid = c2[:, :, None, None].expand(-1, -1, 14, 14)
        images = self.stage2(torch.cat([self.encode(sketch), grid], dim=1))
        return images, sketch, kl_to_standard_normal(mu1, logvar1) + kl_to_standard_normal(mu2, logvar2)

    def forward(self, z, labels=None):
        return self.stages(z, labels)[0]

    def sketch(self, z, labels=None):
        """Stage I's sketches upsampled to 28x28 (bilinear): what `fastgan eval` measures of stage I."""
        return F.interpolate(self.stages(z, labels)[1], scale_factor=2, mode="bilinear", align_corners=False)


class SketchDiscriminator(nn.Module):
    """Stage I's D: (N, 1, 14, 14) + the label as an extra 14x14 map -> Conv stride 2 + LeakyReLU
    (7x7) -> Conv 3x3 + BN + LeakyReLU -> Linear -> (N, 1)."""

    def __init__(self, channels=(64, 128), num_classes=10, backend="fastgan"):
        super().__init__()
        c0, c1 = channels
        self.embed = nn.Embedding(num_classes, 14 * 14)
        layers = conv_act("conv1", 2, c0, 4, 2, 1, 0.2, backend)
        layers += [("conv2", nn.Conv2d(c0, c1, 3, 1, 1, bias=False))] + bn_act("bn2", c1, 0.2, backend, dims=2)
        layers += [("flatten", nn.Flatten()), ("out", nn.Linear(c1 * 7 * 7, 1))]
        self.net = nn.Sequential(OrderedDict(layers))

    def forward(self, x, labels):
        return self.net(with_labels(x, self.embed, labels, "discriminator", shape=(1, 14, 14)))


class StackDiscriminator(nn.Module):
    """D's input: pair() of images (N, 2, 28, 28), or images (N, 1, 28, 28), paired with their own
    2x2 averages; with labels (N,). Returns (N, 2): stage II's logit (cdcgan's D on the image),
    then stage I's (SketchDiscriminator on the 14x14 view)."""

    def __init__(self, channels=(64, 128), dropout_p=0.0, num_classes=10, backend="fastgan"):
        super().__init__()
        check_backend(backend)
        self.num_classes = num_classes
        self.d2 = DCGANDiscriminator(channels, dropout_p, num_classes=num_classes, backend=backend)
        self.d1 = SketchDiscriminator(channels, num_classes, backend=backend)
        init_dcgan(self)

    def forward(self, x, labels=None):
        if x.dim() != 4 or x.shape[1:] not in ((1, 28, 28), (2, 28, 28)):
            raise ValueError(
                "stackgan's discriminator takes images (N, 1, 28, 28) or pairs (N, 2, 28, 28) "
                f"(fastgan.models.stackgan.pair), got {tuple(x.shape)}"
            )
        if x.shape[1] == 1:
            x = pair(x)
        return torch.cat([self.d2(x[:, :1], labels), self.d1(stage_one_view(x[:, 1:]), labels)], dim=1)
