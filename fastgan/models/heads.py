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
    """images (N, 1, 28, 28) -> (N, 1 + aux_outputs). head "classes": a linear layer giving
    num_classes logits (ACGAN); head "q": Linear 128 -> BN + LeakyReLU -> Linear giving
    q_outputs (InfoGAN's Q, as in the paper's MNIST network). D takes no labels: it predicts them."""

    def __init__(self, head, channels=(64, 128), dropout_p=0.0, aux_outputs=10, backend="fastgan"):
        super().__init__()
        check_backend(backend)
        if head not in ("classes", "q"):
            raise ValueError(f"head must be 'classes' or 'q', got {head!r}")
        features = channels[1] * 7 * 7
        self.head, self.aux_outputs = head, int(aux_outputs)
        self.body = nn.Sequential(OrderedDict(d_body(1, channels, dropout_p, backend)))
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
    """The DCGAN generator on InfoGAN's input (codes.dim wide: noise, one-hot code, continuous
    codes; see fastgan.models.codes.LatentCodes); `codes` says how that input is laid out."""

    def __init__(self, codes, channels=(128, 64), backend="fastgan"):
        super().__init__(codes.dim, channels, backend=backend)
        self.codes = codes
