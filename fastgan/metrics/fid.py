"""Fréchet distance, Inception Score and class-histogram entropy, all in float64."""
import math

import torch


def _f64(x):
    return torch.as_tensor(x).detach().to("cpu", torch.float64)


def sqrtm_psd(a):
    """The symmetric positive semi-definite square root of a symmetric PSD matrix (float64),
    by eigendecomposition; eigenvalues below zero (rounding) are clamped to zero."""
    a = _f64(a)
    if a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"sqrtm_psd needs a square matrix, got shape {tuple(a.shape)}")
    a = (a + a.T) / 2
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def feature_stats(features):
    """(mean, covariance) in float64 of features (N, D), N >= 2."""
    f = _f64(features)
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"feature statistics need (N, D) features with N >= 2, got {tuple(f.shape)}")
    mu = f.mean(0)
    c = f - mu
    return mu, (c.T @ c) / (f.shape[0] - 1)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), in float64.

    tr((S1 S2)^1/2) is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix S1^1/2 S2 S1^1/2, which has the same eigenvalues as S1 S2: no
    non-symmetric sqrtm, no complex parts, no NaN for singular covariances."""
    mu1, mu2, s1, s2 = map(_f64, (mu1, mu2, sigma1, sigma2))
    r1 = sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    d = (mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * tr_covmean
    return max(0.0, d.item())


def fid_from_features(a, b):
    """Fréchet distance between two feature sets (N, D) and (M, D)."""
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def inception_score(probs):
    """exp(E_x KL(p(y|x) || p(y))) of class probabilities (N, C): 1 (one class, or all
    uncertain) up to C (confident and balanced)."""
    p = _f64(probs).clamp(min=1e-12)
    py = p.mean(0, keepdim=True)
    kl = (p * (p.log() - py.log())).sum(1)
    return math.exp(kl.mean().item())


def class_histogram(predicted, num_classes=10):
    """Counts (list of ints) of each predicted class."""
    return torch.bincount(torch.as_tensor(predicted).cpu().flatten(), minlength=num_classes).tolist()


def entropy_bits(histogram):
    """Entropy in bits of a histogram (log2(10) = 3.32 for ten equally frequent classes)."""
    h = _f64(histogram)
    p = h / h.sum()
    p = p[p > 0]
    return max(0.0, -(p * p.log2()).sum().item())
