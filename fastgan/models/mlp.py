"""MLP GANs: the PyTorch tutorial GAN (`mlp`), the Keras one with batch norm (`mlp-bn`) and
their class-conditional version (`cgan`)."""

import math
from collections import OrderedDict

from torch import nn

from fastgan._options import G_ACTS
from fastgan.models.layers import bn_act, check_backend, dropout, init_dcgan, linear_act, with_labels


class MLPGenerator(nn.Module):
    """z (N, latent_dim) [+ labels (N,)] -> images (N, 1, 28, 28) in [-1, 1].

    Hidden layers: Linear -> act (ReLU as in the PyTorch tutorial, or LeakyReLU 0.2), or with
    batch_norm=True the Keras layout Linear -> LeakyReLU 0.2 -> BatchNorm(momentum).
    """

    def __init__(
        self,
        latent_dim=100,
        widths=(256, 512, 1024),
        act="relu",
        batch_norm=False,
        bn_momentum=0.3,
        num_classes=0,
        embed_dim=10,
        img_shape=(1, 28, 28),
        backend="fastgan",
    ):
        super().__init__()
        check_backend(backend)
        if act not in G_ACTS:
            raise ValueError(f"act must be one of {', '.join(G_ACTS)}, got {act!r}")
        self.latent_dim, self.num_classes, self.img_shape = latent_dim, num_classes, tuple(img_shape)
        slope = 0.2 if (act == "leaky" or batch_norm) else 0.0
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        layers, width = [], latent_dim + (embed_dim if num_classes else 0)
        for i, w in enumerate(widths, 1):
            layers += linear_act(f"fc{i}", width, w, slope, backend)
            if batch_norm:
                layers += bn_act(f"bn{i}", w, None, backend, dims=1, momentum=bn_momentum)
            width = w
        layers += [("out", nn.Linear(width, math.prod(img_shape))), ("tanh", nn.Tanh())]
        self.net = nn.Sequential(OrderedDict(layers))
        init_dcgan(self)

    def forward(self, z, labels=None):
        return self.net(with_labels(z, self.embed, labels, "generator")).view(z.shape[0], *self.img_shape)


class MLPDiscriminator(nn.Module):
    """images (N, 1, 28, 28) [+ labels (N,)] -> logits (N, 1); LeakyReLU 0.2, optional dropout."""

    def __init__(
        self,
        widths=(1024, 512, 256),
        dropout_p=0.0,
        num_classes=0,
        embed_dim=10,
        img_shape=(1, 28, 28),
        backend="fastgan",
    ):
        super().__init__()
        check_backend(backend)
        self.num_classes, self.img_shape = num_classes, tuple(img_shape)
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        width = math.prod(img_shape) + (embed_dim if num_classes else 0)
        layers = []
        for i, w in enumerate(widths, 1):
            layers += linear_act(f"fc{i}", width, w, 0.2, backend)
            layers += dropout(f"drop{i}", dropout_p)
            width = w
        layers.append(("out", nn.Linear(width, 1)))
        self.net = nn.Sequential(OrderedDict(layers))
        init_dcgan(self)

    def forward(self, x, labels=None):
        return self.net(with_labels(x.reshape(x.shape[0], -1), self.embed, labels, "discriminator"))
