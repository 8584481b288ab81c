"""Shared pieces of the built-in models' step tests (test_family, test_srgan, test_lapgan,
test_stackgan, test_discogan): the plain-PyTorch side of each 'the step is plain PyTorch's' test."""

import torch
import torch.nn.functional as F

from fastgan.models import build


def four_adams(name, **options):
    """fastgan's G and D and plain torch.nn's with the same weights, in float64, each with torch's Adam."""
    torch.manual_seed(0)
    G, D = build(name, **options)
    Gr, Dr = build(name, backend="torch", **options)
    Gr.load_state_dict(G.state_dict())
    Dr.load_state_dict(D.state_dict())
    nets = [n.double() for n in (G, D, Gr, Dr)]
    return nets, [torch.optim.Adam(n.parameters(), lr=2e-4, betas=(0.5, 0.999)) for n in nets]


def bce(logits, target):
    """BCE with logits against a constant target (1.0 real, 0.0 fake)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))
