"""Building blocks with two backends and one parameter layout.

backend="fastgan": a Linear/Conv whose bias is added inside fastgan.ops.bias_leaky_relu, and
batch norm fused with its LeakyReLU/ReLU (fastgan.nn.BatchNorm*(negative_slope=...)).
backend="torch": the plain torch.nn layers a tutorial uses (nn.Linear + nn.LeakyReLU, ...).

Each helper returns (name, module) pairs for an OrderedDict Sequential. A parameterised layer
has the same name, class of parameters and shapes in both backends (activations get their own
parameter-free names in the torch backend), so state_dicts load across backends.
"""

import torch
from torch import nn
from torch.nn import functional as F

from fastgan import nn as fnn
from fastgan import ops
from fastgan._options import BACKENDS


def check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


class LinearLeakyReLU(nn.Linear):
    """nn.Linear followed by LeakyReLU (slope 0: ReLU); bias + activation in one fused kernel."""

    def __init__(self, in_features, out_features, negative_slope=0.2, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=True, device=device, dtype=dtype)
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        y = F.linear(x, self.weight)
        return ops.bias_leaky_relu(y, fnn.like(self.bias, y, float32_ok=True), self.negative_slope)

    def extra_repr(self):
        return f"{super().extra_repr()}, negative_slope={self.negative_slope}"


class Conv2dLeakyReLU(nn.Conv2d):
    """nn.Conv2d followed by LeakyReLU (slope 0: ReLU); bias + activation in one fused kernel."""

    def __init__(
        self, in_channels, out_channels, kernel_size, stride=1, padding=0, negative_slope=0.2, device=None, dtype=None
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=True, device=device, dtype=dtype)
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        y = self._conv_forward(x, self.weight, None)
        return ops.bias_leaky_relu(y, fnn.like(self.bias, y, float32_ok=True), self.negative_slope)

    def extra_repr(self):
        return f"{super().extra_repr()}, negative_slope={self.negative_slope}"


def _act(slope):
    return nn.ReLU() if slope == 0 else nn.LeakyReLU(slope)


def linear_act(name, in_features, out_features, slope, backend):
    """Linear (with bias) + LeakyReLU(slope), slope 0 meaning ReLU."""
    if backend == "fastgan":
        return [(name, LinearLeakyReLU(in_features, out_features, slope))]
    return [(name, nn.Linear(in_features, out_features)), (f"{name}_act", _act(slope))]


def conv_act(name, in_channels, out_channels, kernel_size, stride, padding, slope, backend):
    """Conv2d (with bias) + LeakyReLU(slope)."""
    if backend == "fastgan":
        return [(name, Conv2dLeakyReLU(in_channels, out_channels, kernel_size, stride, padding, slope))]
    return [(name, nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)), (f"{name}_act", _act(slope))]


def bn_act(name, num_features, slope, backend, dims=1, momentum=0.1):
    """BatchNorm1d/2d followed by LeakyReLU(slope) (slope 0: ReLU; None: no activation)."""
    if backend == "fastgan":
        cls = fnn.BatchNorm1d if dims == 1 else fnn.BatchNorm2d
        return [(name, cls(num_features, momentum=momentum, negative_slope=slope))]
    cls = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    layers = [(name, cls(num_features, momentum=momentum))]
    if slope is not None:
        layers.append((f"{name}_act", _act(slope)))
    return layers


def dropout(name, p):
    return [(name, nn.Dropout(p))] if p else []


def with_labels(x, embed, labels, role, shape=()):
    """x with the embedding of labels (N,) joined along dim 1 (reshaped to (N, *shape) when a
    shape is given): the input of a conditional model. x itself where embed is None."""
    if embed is None:
        if labels is not None:  # rather than ignore them
            raise ValueError(f"this {role} is not conditional: it takes no labels")
        return x
    if labels is None:
        raise ValueError(f"this {role} is conditional: pass labels (N,)")
    # shape and dtype only: a range check (0 <= label < num_classes) would read the labels back
    # from the GPU every step; an out-of-range label fails in the embedding instead
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dtype not in (torch.int64, torch.int32)
        or labels.shape != (x.shape[0],)
    ):
        got = (
            f"{labels.dtype} of shape {tuple(labels.shape)}"
            if isinstance(labels, torch.Tensor)
            else type(labels).__name__
        )
        raise ValueError(
            f"this {role}'s labels must be an int64 tensor of shape ({x.shape[0]},) (one class per sample), got {got}"
        )
    e = embed(labels)
    return torch.cat([x, e.view(x.shape[0], *shape) if shape else e], dim=1)


def init_dcgan(module):
    """DCGAN init: conv/linear weights N(0, 0.02), biases 0, batch-norm scale N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


WEIGHT_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)  # fastgan's fused layers are their subclasses


def spectral_norm_layers(net):
    """net (in place) with the weight of each Linear / Conv2d / ConvTranspose2d spectrally
    normalized by torch's parametrization (Miyato et al. 2018): one power iteration per training
    forward, updating its u and v buffers in place (no host sync: CUDA-graph safe), which the
    state_dict keeps. Returns net."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(net.modules()):
        if isinstance(m, WEIGHT_LAYERS) and not parametrize.is_parametrized(m, "weight"):
            spectral_norm(m)
    return net
