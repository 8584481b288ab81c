"""Discriminators with an auxiliary head on the DCGAN body: ACGAN's class logits (Odena et al.
2017) and InfoGAN's Q network (Chen et al. 2016). D returns one tensor, (N, 1 + K): the
adversarial logit, then the head's K outputs, so the step's one (or two) D passes give both
(fastgan.train.auxiliary splits them)."""

from collections import OrderedDict

import torch
from torch import nn

from fastgan.models.dcgan import DCGANGenerator, d_body
from fastgan.models.layers import bn_act, check_backend, init_dcgan, with_labels


class AuxDiscriminator(nn.Module):
    """images (N, 1, 28, 28) -> (N, 1 + aux_outputs). The body: the DCGAN D's convolutions, and
    with hidden > 0 a shared Linear(hidden) + BN + LeakyReLU on them (InfoGAN's MNIST D: 1024).
    head "classes": a linear layer giving aux_outputs class logits (ACGAN); head "q": Linear 128
    -> BN + LeakyReLU -> Linear giving aux_outputs (InfoGAN's Q, as in the paper's MNIST
    network). D takes no labels: it predicts them."""

    def __init__(self, head, channels=(64, 128), dropout_p=0.0, aux_outputs=10, hidden=0, backend="fastgan"):
        super().__init__()
        check_backend(backend)
        if head not in ("classes", "q"):
            raise ValueError(f"head must be 'classes' or 'q', got {head!r}")
        features = channels[1] * 7 * 7
        self.head, self.aux_outputs = head, int(aux_outputs)
        layers = d_body(1, channels, dropout_p, backend)
        if hidden:
            layers += [("fc", nn.Linear(features, hidden, bias=False))] + bn_act("bn", hidden, 0.2, backend, dims=1)
            features = hidden
        self.body = nn.Sequential(OrderedDict(layers))
        self.out = nn.Linear(features, 1)
        if head == "classes":
            self.aux = nn.Linear(features, self.aux_outputs)
        else:
            layers = [("fc", nn.Linear(features, 128, bias=False))] + bn_act("bn", 128, 0.2, backend, dims=1)
            self.aux = nn.Sequential(OrderedDict(layers + [("out", nn.Linear(128, self.aux_outputs))]))
        init_dcgan(self)

    def forward(self, x, labels=None):
        h = self.body(with_labels(x, None, labels, "discriminator"))
        return torch.cat([self.out(h), self.aux(h)], dim=1)


class InfoGANGenerator(DCGANGenerator):
    """InfoGAN's MNIST generator (Chen et al. 2016, appendix C.1): its input (codes.dim wide:
    noise, one-hot code, continuous codes; `codes` says how, see LatentCodes) -> FC hidden
    (1024) + BN + ReLU -> FC to (C0, 7, 7), then the DCGAN generator's BN + ReLU and two
    stride-2 transposed convolutions."""

    def __init__(self, codes, channels=(128, 64), hidden=1024, backend="fastgan"):
        super().__init__(codes.dim, channels, backend=backend)
        self.codes = codes
        layers = [("fc1", nn.Linear(codes.dim, hidden, bias=False))] + bn_act("bn1", hidden, 0.0, backend, dims=1)
        self.fc = nn.Sequential(OrderedDict(layers + [("fc2", nn.Linear(hidden, channels[0] * 7 * 7, bias=False))]))
        init_dcgan(self)
