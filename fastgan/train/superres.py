"""srgan's part of the training step (Ledig et al. 2017, at MNIST scale): G's input is the real
batch downsampled, and G's loss is the content loss plus the adversarial loss weighted 1e-3:

    low  = avg_pool(real, f)                                  # 28x28 -> 7x7 (f = 4) or 14x14
    G:   adv_weight * L_adv(D(G(low))) + MSE(G(low), real) + feature_weight * MSE(phi(G(low)), phi(real))

phi is the measuring classifier's penultimate layer (fastgan.metrics: the MNIST stand-in for the
paper's VGG features), frozen; the trainer is handed it (feature_net). adv_weight 0 trains the
content-loss-only generator (the paper's SRResNet). D's step is the usual one on real and
super-resolved images. Downsampling is area averaging (the paper used bicubic), so a low-res
image is exactly the mean of its high-res pixels.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from fastgan._options import MODELS
from fastgan.train.head import Head


def downsample(images, factor):
    """(N, C, H, W) -> (N, C, H / factor, W / factor): each pixel the mean of its factor x factor block."""
    return F.avg_pool2d(images, factor)


def bicubic(low, factor):
    """The baseline: low-res images upsampled bicubically by `factor`, clamped to [-1, 1]."""
    return F.interpolate(low, scale_factor=factor, mode="bicubic", align_corners=False).clamp(-1.0, 1.0)


@dataclass(frozen=True, eq=False)
class ContentLoss(Head):
    """srgan's head (fastgan.train.head): G's input from the real batch, and G's loss."""

    factor: int = 4
    feature_weight: float = 0.01
    adv_weight: float = 1e-3
    features: object = None  # phi: a frozen module mapping images to (N, F) features; None: pixels only

    def g_input(self, real):
        return downsample(real, self.factor)

    def batch(self, real, noise_fn):
        """(what D sees of the real batch, G's input): the batch itself, and it downsampled (no noise)."""
        return real, self.g_input(real)

    def loss(self, fake, real):
        """MSE(fake, real) + feature_weight * MSE(phi(fake), phi(real)), averaged over all elements."""
        content = F.mse_loss(fake, real.to(fake.dtype))
        if self.features is None or not self.feature_weight:
            return content
        with torch.no_grad():
            target = self.features(real.to(fake.dtype))
        return content + self.feature_weight * F.mse_loss(self.features(fake), target)

    def g_loss(self, adv_loss, fake_aux, fake, batch):
        return self.adv_weight * adv_loss + self.loss(fake, batch.real)


def frozen(module):
    """module in eval mode with no parameter requiring a gradient (G's loss differentiates through it)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def superres(cfg):
    """Whether cfg's model is a super-resolution one (G's input: the real batch downsampled)."""
    return not cfg.user_model() and MODELS[cfg.model].superres


def content_of(cfg, feature_net=None, device="cpu"):
    """srgan's ContentLoss for TrainConfig cfg (None for other models), reading features with
    feature_net (fastgan.metrics.feature_net) when cfg.feature_weight > 0."""
    if not superres(cfg):
        return None
    net = frozen(feature_net.to(device)) if cfg.feature_weight else None
    return ContentLoss(cfg.sr_factor, float(cfg.feature_weight), float(cfg.adv_weight), net)


def read_image(path):
    """A PNG (grayscale, or RGB(A) averaged to gray) as a float (1, 1, H, W) tensor in [-1, 1]."""
    from matplotlib import image as mpimg

    try:
        pixels = mpimg.imread(path, format="png")
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"--input {path}: not a readable PNG ({str(exc).splitlines()[0]})") from None
    x = torch.as_tensor(pixels, dtype=torch.float32)  # matplotlib reads PNGs as floats in [0, 1]
    if x.dim() == 3:
        x = x[..., :3].mean(-1)
    return x.mul(2).sub(1)[None, None]
