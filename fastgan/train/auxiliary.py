"""The auxiliary losses of the models whose D has a second head (fastgan.models.heads), added
to D's and G's losses inside the one training step (fastgan.train.step), so that they run in
its CUDA graph and resume with it:

  ClassHead (acgan, Odena et al. 2017): D's class logits; D minimizes the cross-entropy of the
      real images' labels and of the labels the fakes were drawn for, G that of the fakes.
  InfoHead (infogan, Chen et al. 2016): Q's categorical logits and continuous means; both D
      (its body and Q) and G minimize lambda * L_I, L_I = the categorical code's cross-entropy
      + the continuous codes' Gaussian negative log-likelihood with unit variance (fixed, not
      learned): 0.5 * sum_j (c_j - mu_j)^2, its constant dropped. The codes are read back from
      the generator input z the step drew (LatentCodes.split).

  StackHead (stackgan, Zhang et al. 2017): not a second head but a second stage. Its generate()
      runs G's two stages and gives D pairs (the image, the stage-I sketch upsampled) and the KL
      term of the conditioning augmentation, which G's loss adds (kl_weight * KL); real_input()
      makes the real images' pairs (the image, its own 2x2 averages). D's (N, 2) logits are both
      adversarial: the step's loss averages the two stages'.
  DiscoHead (discogan, Kim et al. 2017): generate() translates the real batch (pairs of domains
      A, B) both ways and back; G's loss adds recon_weight * the reconstructions' MSE (the two
      domains' averaged). D's (N, 2) logits are D_A's and D_B's: the loss averages the two, so G's
      loss is half the paper's L_GAN_A + L_GAN_B + L_CONST_A + L_CONST_B (Adam does not mind).

D's output is (N, 1 + K): split() gives (the adversarial logit (N, 1), the head's (N, K)).
A head may also have generate(G, z, labels) -> (the fakes D sees, what g_loss needs of G's
forward) and real_input(real) -> what D sees of the real batch (fastgan.train.step).
"""

from dataclasses import dataclass

from torch.nn import functional as F

from fastgan._options import MODELS
from fastgan.models import stackgan
from fastgan.models.codes import LatentCodes


@dataclass(frozen=True)
class ClassHead:
    d_labels = False  # D predicts the labels; it is not given them

    def split(self, out):
        return out[:, :1], out[:, 1:]

    def d_loss(self, real_aux, fake_aux, labels, z):
        return F.cross_entropy(real_aux, labels) + F.cross_entropy(fake_aux, labels)

    def g_loss(self, fake_aux, labels, z, extra=None):
        return F.cross_entropy(fake_aux, labels)


@dataclass(frozen=True)
class InfoHead:
    codes: LatentCodes
    weight: float = 1.0  # lambda
    d_labels = False

    def split(self, out):
        return out[:, :1], out[:, 1:]

    def info_loss(self, q, z):
        """lambda * (cross-entropy of the categorical code + 0.5 * sum of squared errors of the
        continuous codes), averaged over the batch."""
        _, categorical, continuous = self.codes.split(z)
        k = self.codes.categories
        logits, means = q[:, :k], q[:, k:]
        nll = 0.5 * (continuous.to(means.dtype) - means).square().sum(1).mean()
        return self.weight * (F.cross_entropy(logits, categorical) + nll)

    def d_loss(self, real_aux, fake_aux, labels, z):
        return self.info_loss(fake_aux, z)

    def g_loss(self, fake_aux, labels, z, extra=None):
        return self.info_loss(fake_aux, z)


@dataclass(frozen=True)
class StackHead:
    kl_weight: float = 1.0
    d_labels = True  # both stages' discriminators are given the label
    critic_per_channel = True  # D's column j judges channel j of its input: --gp penalizes each

    def split(self, out):
        return out, out[:, :0]  # (N, 2): both columns adversarial; no other head

    def generate(self, G, z, labels, real=None):
        images, sketch, kl = G.stages(z, labels)
        return stackgan.pair(images, sketch), kl

    def real_input(self, real):
        return stackgan.pair(real)

    def d_loss(self, real_aux, fake_aux, labels, z):
        return None  # D's loss is the two stages' adversarial loss alone

    def g_loss(self, fake_aux, labels, z, extra=None):
        return self.kl_weight * extra


@dataclass(frozen=True)
class DiscoHead:
    recon_weight: float = 1.0
    d_labels = False  # unconditional
    critic_per_channel = True

    def split(self, out):
        return out, out[:, :0]  # (N, 2): D_A's and D_B's logits, both adversarial

    def generate(self, G, z, labels, real):
        """The batch's translations (G_BA(B), G_AB(A)) and the reconstruction error: the mean
        squared error of (G_BA(G_AB(A)), G_AB(G_BA(B))) against (A, B), i.e. the two domains'
        MSEs averaged."""
        fake, back = G.cycle(real)
        return fake, F.mse_loss(back, real)

    def d_loss(self, real_aux, fake_aux, labels, z):
        return None

    def g_loss(self, fake_aux, labels, z, extra=None):
        return self.recon_weight * extra


def head_of(cfg):
    """The auxiliary loss of cfg's model (a TrainConfig), None for models without one."""
    if cfg.user_model():
        return None
    aux = MODELS[cfg.model].aux
    if aux == "acgan":
        return ClassHead()
    if aux == "infogan":
        return InfoHead(LatentCodes(cfg.latent_dim), float(cfg.info_weight))
    if aux == "stackgan":
        return StackHead(float(cfg.kl_weight))
    if aux == "discogan":
        return DiscoHead(float(cfg.recon_weight))
    return None


def codes_of(cfg):
    """InfoGAN's LatentCodes for cfg's model, None for the others."""
    return None if cfg.user_model() or MODELS[cfg.model].aux != "infogan" else LatentCodes(cfg.latent_dim)
