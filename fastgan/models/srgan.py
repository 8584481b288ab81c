"""SRGAN's generator (Ledig et al. 2017) at MNIST scale: a low-resolution image (N, 1, 28 / f,
28 / f) -> (N, 1, 28, 28) for f = 2 or 4 (the discriminator is dcgan's).

The paper's SRResNet, narrowed: a 5x5 conv + activation, residual blocks (conv, BN +
activation, conv, BN, skip), a conv + BN with a skip over all the blocks, one sub-pixel stage
(conv to 4C, pixel shuffle x2, activation) per factor of 2, and a 5x5 conv + tanh. The paper's
PReLU is a LeakyReLU(0.2) here, so that each BN + activation is one fused kernel
(fastgan.nn.BatchNorm2d(negative_slope=...)); a sub-pixel stage's bias and activation run before
the shuffle, which only moves pixels (the same math, one fused kernel)."""

from collections import OrderedDict

from torch import nn

from fastgan.models.layers import bn_act, check_backend, conv_act, init_dcgan

SLOPE = 0.2
SR_FACTORS = (2, 4)


class ResidualBlock(nn.Module):
    """x + BN(conv(BN+act(conv(x)))): the paper's block, its first BN fused with the activation."""

    def __init__(self, channels, backend="fastgan"):
        super().__init__()
        layers = [("conv1", nn.Conv2d(channels, channels, 3, 1, 1, bias=False))]
        layers += bn_act("bn1", channels, SLOPE, backend, dims=2)
        layers += [("conv2", nn.Conv2d(channels, channels, 3, 1, 1, bias=False))]
        layers += bn_act("bn2", channels, None, backend, dims=2)
        self.net = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        return x + self.net(x)


class SRGenerator(nn.Module):
    """low-res (N, 1, 28 // factor, 28 // factor) in [-1, 1] -> (N, 1, 28, 28) in [-1, 1].
    channels: (C, C_up): the residual blocks' channels, and each sub-pixel stage's output's."""

    def __init__(self, factor=4, channels=(32, 16), blocks=4, backend="fastgan"):
        super().__init__()
        check_backend(backend)
        if factor not in SR_FACTORS:
            raise ValueError(f"factor must be one of {', '.join(map(str, SR_FACTORS))}, got {factor!r}")
        c, c_up = channels
        self.factor, self.img_shape = factor, (1, 28, 28)
        self.input_shape = (1, 28 // factor, 28 // factor)
        self.head = nn.Sequential(OrderedDict(conv_act("conv", 1, c, 5, 1, 2, SLOPE, backend)))
        self.blocks = nn.Sequential(OrderedDict((f"block{i}", ResidualBlock(c, backend)) for i in range(blocks)))
        self.trunk = nn.Sequential(
            OrderedDict([("conv", nn.Conv2d(c, c, 3, 1, 1, bias=False))] + bn_act("bn", c, None, backend, dims=2))
        )
        layers, cin = [], c
        for i in range(factor.bit_length() - 1):  # one x2 stage per factor of 2
            layers += conv_act(f"up{i}", cin, 4 * c_up, 3, 1, 1, SLOPE, backend)
            layers += [(f"shuffle{i}", nn.PixelShuffle(2))]
            cin = c_up
        layers += [("out", nn.Conv2d(cin, 1, 5, 1, 2)), ("tanh", nn.Tanh())]
        self.tail = nn.Sequential(OrderedDict(layers))
        init_dcgan(self)

    def forward(self, x, labels=None):
        if labels is not None:
            raise ValueError("this generator is not conditional: it takes no labels")
        h = self.head(x)
        return self.tail(h + self.trunk(self.blocks(h)))
