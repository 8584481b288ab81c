"""The models' heads (fastgan.train.head's protocol: what a model makes of the one training
step beyond the plain GAN's), so that every model's losses run in the step's CUDA graph and
resume with it:

  ClassHead (acgan, Odena et al. 2017): D's class logits; D minimizes the cross-entropy of the
      real images' labels and of the labels the fakes were drawn for (--class-loss real: of
      the real images' alone, so that G cannot teach D its own class assignment), G that of the fakes.
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
  ContentLoss (srgan, fastgan.train.superres) and PyramidInput (lapgan, fastgan.train.pyramid):
      batch() makes G's input from the real batch, g_loss() adds the content loss.
"""

from dataclasses import dataclass

from torch.nn import functional as F

from fastgan._options import MODELS
from fastgan.models import stackgan
from fastgan.models.codes import LatentCodes
from fastgan.train.head import PLAIN, Head
from fastgan.train.pyramid import pyramid_of


@dataclass(frozen=True)
class ClassHead(Head):
    real_only: bool = False  # --class-loss real: D's class head learns from the real images alone
    d_labels = False  # D predicts the labels; it is not given them

    def split(self, out):
        return out[:, :1], out[:, 1:]

    def d_loss(self, real_aux, fake_aux, batch):
        real = F.cross_entropy(real_aux, batch.labels)
        return real if self.real_only else real + F.cross_entropy(fake_aux, batch.labels)

    def g_loss(self, adv_loss, fake_aux, fake, batch):
        return adv_loss + F.cross_entropy(fake_aux, batch.labels)


@dataclass(frozen=True)
class InfoHead(Head):
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

    def d_loss(self, real_aux, fake_aux, batch):
        return self.info_loss(fake_aux, batch.z)

    def g_loss(self, adv_loss, fake_aux, fake, batch):
        return adv_loss + self.info_loss(fake_aux, batch.z)


@dataclass(frozen=True)
class StackHead(Head):
    kl_weight: float = 1.0
    d_labels = True  # both stages' discriminators are given the label
    critic_per_channel = True  # (N, 2) logits, both adversarial: stage II's and stage I's

    def generate(self, G, z, labels, real):
        images, sketch, kl = G.stages(z, labels)
        return stackgan.pair(images, sketch), kl

    def real_input(self, real):
        return stackgan.pair(real)

    def g_loss(self, adv_loss, fake_aux, fake, batch):  # D's loss is the two stages' adversarial loss alone
        return adv_loss + self.kl_weight * batch.extra


@dataclass(frozen=True)
class DiscoHead(Head):
    recon_weight: float = 1.0
    d_labels = False  # unconditional
    critic_per_channel = True  # (N, 2) logits, both adversarial: D_A's and D_B's

    def generate(self, G, z, labels, real):
        """The batch's translations (G_BA(B), G_AB(A)) and the reconstruction error: the mean
        squared error of (G_BA(G_AB(A)), G_AB(G_BA(B))) against (A, B), i.e. the two domains'
        MSEs averaged."""
        fake, back = G.cycle(real)
        return fake, F.mse_loss(back, real)

    def g_loss(self, adv_loss, fake_aux, fake, batch):
        return adv_loss + self.recon_weight * batch.extra


def head_of(cfg):
    """The head of cfg's model (a TrainConfig): PLAIN for models without one of their own. srgan's
    (ContentLoss) reads the classifier's features: the trainer makes it (superres.content_of)."""
    if cfg.user_model():
        return PLAIN
    aux = MODELS[cfg.model].aux
    if aux == "acgan":
        return ClassHead(cfg.class_loss == "real")
    if aux == "infogan":
        return InfoHead(LatentCodes(cfg.latent_dim), float(cfg.info_weight))
    if aux == "stackgan":
        return StackHead(float(cfg.kl_weight))
    if aux == "discogan":
        return DiscoHead(float(cfg.recon_weight))
    return pyramid_of(cfg) or PLAIN


def codes_of(cfg):
    """InfoGAN's LatentCodes for cfg's model, None for the others."""
    return None if cfg.user_model() or MODELS[cfg.model].aux != "infogan" else LatentCodes(cfg.latent_dim)
