"""28x28 DCGAN (`dcgan`) and its class-conditional version (`cdcgan`)."""

from collections import OrderedDict

from torch import nn

from fastgan.models.layers import bn_act, check_backend, conv_act, dropout, init_dcgan, with_labels


class DCGANGenerator(nn.Module):
    """z (N, latent_dim) [+ labels] -> Linear -> (C0, 7, 7) -> BN+ReLU -> ConvT stride 2 (14x14)
    -> BN+ReLU -> ConvT stride 2 (28x28) -> tanh."""

    def __init__(
        self, latent_dim=100, channels=(128, 64), num_classes=0, embed_dim=10, out_channels=1, backend="fastgan"
    ):
        super().__init__()
        check_backend(backend)
        c0, c1 = channels
        self.latent_dim, self.num_classes, self.c0 = latent_dim, num_classes, c0
        self.img_shape = (out_channels, 28, 28)
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        self.fc = nn.Linear(latent_dim + (embed_dim if num_classes else 0), c0 * 7 * 7, bias=False)
        layers = bn_act("bn0", c0, 0.0, backend, dims=2)
        layers += [("deconv1", nn.ConvTranspose2d(c0, c1, 4, 2, 1, bias=False))]
        layers += bn_act("bn1", c1, 0.0, backend, dims=2)
        layers += [("deconv2", nn.ConvTranspose2d(c1, out_channels, 4, 2, 1)), ("tanh", nn.Tanh())]
        self.net = nn.Sequential(OrderedDict(layers))
        init_dcgan(self)

    def forward(self, z, labels=None):
        z = with_labels(z, self.embed, labels, "generator")
        return self.net(self.fc(z).view(z.shape[0], self.c0, 7, 7))


class DCGANDiscriminator(nn.Module):
    """images (N, 1, 28, 28) [+ labels, as an extra 28x28 input map] -> Conv stride 2 + LeakyReLU
    (14x14) -> Conv stride 2 + BN + LeakyReLU (7x7) -> Linear -> logits (N, 1)."""

    def __init__(self, channels=(64, 128), dropout_p=0.0, num_classes=0, in_channels=1, backend="fastgan"):
        super().__init__()
        check_backend(backend)
        c0, c1 = channels
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, 28 * 28) if num_classes else None
        cin = in_channels + (1 if num_classes else 0)
        layers = d_body(cin, channels, dropout_p, backend) + [("out", nn.Linear(c1 * 7 * 7, 1))]
        self.net = nn.Sequential(OrderedDict(layers))
        init_dcgan(self)

    def forward(self, x, labels=None):
        return self.net(with_labels(x, self.embed, labels, "discriminator", shape=(1, 28, 28)))


def d_body(in_channels, channels, dropout_p, backend):
    """The DCGAN discriminator's layers up to its flattened (N, C1 * 7 * 7) features: Conv stride
    2 + LeakyReLU, Conv stride 2 + BN + LeakyReLU (the heads of acgan and infogan share it)."""
    c0, c1 = channels
    layers = conv_act("conv1", in_channels, c0, 4, 2, 1, 0.2, backend)
    layers += dropout("drop1", dropout_p)
    layers += [("conv2", nn.Conv2d(c0, c1, 4, 2, 1, bias=False))]
    layers += bn_act("bn2", c1, 0.2, backend, dims=2)
    layers += dropout("drop2", dropout_p)
    return layers + [("flatten", nn.Flatten())]
