"""srgan's measurement: how close its super-resolved test images are to the originals, beside
bicubic upsampling of the same low-res inputs, and whether the classifier still reads the digit.

    PSNR  10 log10(1 / MSE) in dB, pixels in [0, 1] (data range 1), per image, then averaged:
          infinite for an exact reconstruction
    SSIM  Wang et al. 2004: an 11x11 Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2, the
          map's mean over the valid windows (no padding), per image, then averaged; 1 when equal

The low-res inputs are the test images downsampled as in training (fastgan.train.superres), so
the numbers are those of the task the generator learned. feature_net() is the frozen
penultimate layer of the measuring classifier, which srgan's feature loss reads.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from fastgan._files import atomic_write
from fastgan.metrics.classifier import ClassifierSettings, classify, get_classifier, split, to_input
from fastgan.metrics.fid import ClassScores, RunningStats, entropy_bits, frechet_distance
from fastgan.train.config import ConfigError
from fastgan.train.images import save_grid
from fastgan.train.sampling import load_generator, resolve_device
from fastgan.train.superres import bicubic, downsample, read_image, superres

WINDOW, SIGMA, C1, C2 = 11, 1.5, 0.01**2, 0.03**2


def _unit(x):
    """Images in [-1, 1] as float64 in [0, 1]."""
    return (x.double() + 1) / 2


def psnr(x, y):
    """(N,) PSNR in dB of images x against y (N, C, H, W) in [-1, 1] (inf where they are equal)."""
    mse = (_unit(x) - _unit(y)).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def _gaussian_window(size=WINDOW, sigma=SIGMA):
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim_map(x, y):
    """(N, C, H - 10, W - 10) SSIM of each 11x11 window of x against y (images in [-1, 1])."""
    x, y = _unit(x), _unit(y)
    c = x.shape[1]
    w = _gaussian_window().to(x.device).expand(c, 1, WINDOW, WINDOW)

    def blur(t):
        return F.conv2d(t, w, groups=c)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    return ((2 * mx * my + C1) * (2 * cov + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2))


def ssim(x, y):
    """(N,) mean SSIM of each image x against y."""
    return ssim_map(x, y).flatten(1).mean(1)


class Features(nn.Module):
    """A classifier's penultimate-layer features (its .features method) as a frozen module."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def forward(self, x):
        return self.classifier.features(x)


def feature_net(dataset="mnist-5k", data_dir=None, cache_dir=None, settings=None):
    """The frozen features srgan's feature loss reads: the penultimate layer of the measuring
    classifier of `dataset` (fastgan.metrics.get_classifier: cached, trained on first use)."""
    model, _ = get_classifier(dataset, data_dir, cache_dir, settings or ClassifierSettings())
    return Features(model)


@torch.no_grad()
def super_resolve(G, low, batch_size=1000):
    """G's images of the low-res images `low`, batch by batch, G in eval mode."""
    was_training = G.training
    G.eval()
    try:
        return torch.cat([G(low[i : i + batch_size]).float() for i in range(0, len(low), batch_size)])
    finally:
        G.train(was_training)


@torch.no_grad()
def superres_metrics(G, cfg, images, labels, classifier, real_stats, batch_size=1000):
    """srgan's measurement on high-res images (N, 1, 28, 28) in [-1, 1] with their labels: PSNR
    and SSIM of G's super-resolved images and of bicubic upsampling against the originals, the
    classifier's accuracy on each (and on the originals), and the classifier FID of each against
    real_stats. The keys the trainer's --eval-every reads (fid, inception_score, class_entropy,
    label_accuracy: the accuracy on G's images) are G's."""
    device = next(G.parameters()).device
    images = images.to(device)
    low = downsample(images, cfg.sr_factor)
    out = {"n": len(images), "sr_factor": cfg.sr_factor}
    for name, x in (("sr", super_resolve(G, low, batch_size)), ("bicubic", bicubic(low, cfg.sr_factor))):
        features, probs = classify(classifier, x, batch_size)
        stats, scores = RunningStats(), ClassScores()
        stats.update(features)
        scores.update(probs, labels.cpu())
        hist = scores.histogram()
        out[name] = {
            "psnr": float(psnr(x, images).mean()),
            "ssim": float(ssim(x, images).mean()),
            "accuracy": scores.label_accuracy(),
            "fid": frechet_distance(*stats.stats(), *real_stats),
            "inception_score": scores.inception_score(),
            "class_histogram": hist,
            "class_entropy": entropy_bits(hist) if sum(hist) else math.nan,
            "nonfinite_images": int((~torch.isfinite(x).flatten(1).all(1)).sum()),
        }
    probs = classify(classifier, images, batch_size)[1]
    out["original_accuracy"] = float((probs.argmax(1) == labels.cpu()).double().mean())
    sr = out["sr"]
    return {
        **{k: sr[k] for k in ("fid", "inception_score", "class_histogram", "class_entropy", "nonfinite_images")},
        "label_accuracy": sr["accuracy"],
        "psnr": sr["psnr"],
        "ssim": sr["ssim"],
        **out,
    }


def spread(x, y, n=None):
    """(images (n, 1, 28, 28) in [-1, 1], labels) of n of the uint8 test images x, evenly spaced
    through them (the test files run digit by digit: the first n would be zeros), all of them
    if n is None or larger."""
    n = len(x) if n is None else min(n, len(x))
    pick = torch.linspace(0, len(x) - 1, n).round().long()
    return to_input(x[pick]), y[pick]


def held_out_images(cfg, n=None, data_dir=None):
    """spread() of the test images of cfg's dataset (the classifier's test split; mnist-5k: its
    held-out 1,000)."""
    (_, _), (x, y) = split(cfg.dataset, data_dir if data_dir is not None else cfg.data_dir)
    return spread(x, y, n)


def _superres_generator(checkpoint, device, ema):
    G, cfg, _ = load_generator(checkpoint, resolve_device(device), ema=ema)
    if not superres(cfg):
        raise ConfigError(f"--input super-resolves with an srgan checkpoint; {checkpoint} holds {cfg.model}")
    return G, cfg


def sample_superres(checkpoint, n=16, out="samples.png", device="cpu", ema=True, data_dir=None):
    """A grid of n test images in rows of four (bicubic, srgan, original) triplets, written as a
    PNG; returns the images (3n)."""
    G, cfg = _superres_generator(checkpoint, device, ema)
    images, _ = held_out_images(cfg, n, data_dir)
    images = images.to(next(G.parameters()).device)
    low = downsample(images, cfg.sr_factor)
    grid = torch.stack([bicubic(low, cfg.sr_factor), super_resolve(G, low), images], 1).flatten(0, 1)
    save_grid(grid.cpu(), out, ncol=12)
    return grid


def upsample_file(checkpoint, path, out="upsampled.png", device="cpu", ema=True):
    """A user's low-res PNG (any size: G is convolutional) super-resolved by the checkpoint's G
    (factor cfg.sr_factor), written as a PNG; returns the image (1, 1, H * f, W * f)."""
    from matplotlib import image as mpimg

    G, cfg = _superres_generator(checkpoint, device, ema)
    try:
        x = read_image(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    y = super_resolve(G, x.to(next(G.parameters()).device))
    with atomic_write(out) as f:  # the image itself, no grid border
        mpimg.imsave(f, y[0, 0].clamp(-1, 1).add(1).div(2).cpu().numpy(), cmap="gray", vmin=0.0, vmax=1.0, format="png")
    return y
