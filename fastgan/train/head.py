"""The head: what a model makes of the one training step (fastgan.train.step) beyond the plain
GAN's. Every model's step runs the same code and asks its head, in this order:

    real, z = head.batch(real, noise_fn)            # the real batch as the step uses it, G's input
    fake, extra = head.generate(G, z, labels, real)  # the fakes D sees, and what G's loss needs besides
    head.real_input(real)                            # what D sees of the real batch
    logits, aux = head.split(D(...))                 # the adversarial logits, the head's own outputs
    head.d_loss(real_aux, fake_aux, batch)           # what D's loss adds (None: nothing)
    head.g_loss(adv_loss, fake_aux, fake, batch)     # G's loss from its adversarial loss

PLAIN (Head()) is the plain step: the built-in GANs' and a user's pair. The others override what
their model changes: fastgan.train.auxiliary (acgan, infogan, stackgan, discogan),
fastgan.train.superres (srgan), fastgan.train.pyramid (lapgan).
"""

from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor

from fastgan.models.user import forward


class StepBatch(NamedTuple):
    """What a step's losses may read of its batch: the real batch (after Head.batch()), the
    labels (None: unconditional), G's input z, and what Head.generate() gave besides the fakes."""

    real: Tensor
    labels: Tensor | None
    z: Tensor
    extra: object = None


@dataclass(frozen=True)
class Head:
    """The plain step: G(z, labels) against the real batch, D's output all adversarial logits,
    no loss beyond the adversarial one. Subclasses override what their model changes."""

    d_labels = True  # D is given the labels (of conditional models); False: D predicts them (acgan)
    critic_per_channel = False  # D's column j judges channel j of its input: --gp penalizes each

    def batch(self, real, noise_fn):
        """(the real batch as the step uses it, G's input): the batch, and the step's noise."""
        return real, noise_fn()

    def generate(self, G, z, labels, real):
        """(the fakes D sees, what g_loss needs of G's forward besides them: StepBatch.extra)."""
        return forward(G, z, labels), None

    def real_input(self, real):
        """What D sees of the real batch."""
        return real

    def split(self, out):
        """D's output -> (its adversarial logits, the head's outputs or None)."""
        return out, None

    def d_loss(self, real_aux, fake_aux, batch):
        """What D's loss adds (None: nothing), of the head's outputs on real and fake images."""
        return None

    def g_loss(self, adv_loss, fake_aux, fake, batch):
        """G's loss, given its adversarial loss, the head's outputs on the fakes and the fakes."""
        return adv_loss


PLAIN = Head()
