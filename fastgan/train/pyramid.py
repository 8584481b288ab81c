"""lapgan's part of the training step (Denton et al. 2015): each batch becomes its Laplacian
pyramid (fastgan.models.lapgan.pyramid), packed in one tensor for D, and G's input is the
step's noise joined with the real low-pass images l14 and l28, so that each level's generator
is trained conditioned on the real coarser image, as in the paper, and all three levels train
in the one step (their parameters are disjoint: one Adam over them is three Adams). The losses
are the step's own (--loss), averaged over the three levels' logits.
"""

from dataclasses import dataclass

import torch

from fastgan._options import MODELS
from fastgan.models.lapgan import pack, pyramid
from fastgan.train.head import Head


@dataclass(frozen=True)
class PyramidInput(Head):
    """lapgan's head (fastgan.train.head): D's packed real pyramid and G's input from the batch."""

    def batch(self, real, noise_fn):
        levels = pyramid(real)
        lows = torch.cat([levels[2].flatten(1), levels[4].flatten(1)], 1)  # l14, l28
        return pack(levels), torch.cat([noise_fn(), lows], 1)


def pyramid_of(cfg):
    """lapgan's PyramidInput for TrainConfig cfg, None for the other models."""
    return PyramidInput() if not cfg.user_model() and MODELS[cfg.model].pyramid else None
