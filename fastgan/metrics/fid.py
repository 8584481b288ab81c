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


class RunningStats:
    """Mean and covariance (float64) of feature rows given chunk by chunk, merged pairwise (Chan,
    Golub and LeVeque): measuring n images takes O(D^2) memory, not O(n D), and gives what
    feature_stats gives for all the rows at once (to float64 rounding)."""

    def __init__(self):
        self.n, self.mean, self.scatter = 0, None, None

    def update(self, features):
        f = _f64(features)
        if f.dim() != 2:
            raise ValueError(f"feature statistics need (N, D) features, got {tuple(f.shape)}")
        k = f.shape[0]
        if k == 0:
            return
        mean = f.mean(0)
        c = f - mean
        scatter = c.T @ c
        if self.n == 0:
            self.n, self.mean, self.scatter = k, mean, scatter
            return
        n = self.n + k
        d = mean - self.mean
        self.scatter = self.scatter + scatter + torch.outer(d, d) * (self.n * k / n)
        self.mean = self.mean + d * (k / n)
        self.n = n

    def stats(self):
        """(mean, covariance) of all rows so far, N >= 2."""
        if self.n < 2:
            raise ValueError(f"feature statistics need at least 2 rows, got {self.n}")
        return self.mean, self.scatter / (self.n - 1)


def feature_stats(features):
    """(mean, covariance) in float64 of features (N, D), N >= 2."""
    f = _f64(features)
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"feature statistics need (N, D) features with N >= 2, got {tuple(f.shape)}")
    stats = RunningStats()
    stats.update(f)
    return stats.stats()


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), in float64.

    tr((S1 S2)^1/2) is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix S1^1/2 S2 S1^1/2, which has the same eigenvalues as S1 S2: no
    non-symmetric sqrtm, no complex parts, no NaN for singular covariances."""
    mu1, mu2, s1, s2 = map(_f64, (mu1, mu2, sigma1, sigma2))
    if not all(torch.isfinite(t).all() for t in (mu1, mu2, s1, s2)):
        return math.nan  # features of non-finite images (a diverged G): no distance, and no eigh error
    r1 = sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    d = (mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * tr_covmean
    return max(0.0, d.item())


def fid_from_features(a, b):
    """Fréchet distance between two feature sets (N, D) and (M, D)."""
    return frechet_distance(*feature_stats(a), *feature_stats(b))


class ClassScores:
    """What the classifier's probabilities (N, C) say of generated images, given chunk by chunk in
    O(C) memory: the predicted classes' histogram, the Inception Score and, for images drawn
    for requested labels, the fraction classified as asked."""

    def __init__(self, num_classes=10):
        self.num_classes = num_classes
        self.n, self.correct = 0, 0
        self.counts = torch.zeros(num_classes, dtype=torch.int64)
        self.sum_p = torch.zeros(num_classes, dtype=torch.float64)
        self.sum_plogp = 0.0

    def update(self, probs, labels=None):
        p = _f64(probs)
        if p.dim() != 2 or p.shape[1] != self.num_classes:
            raise ValueError(f"class probabilities must be (N, {self.num_classes}), got {tuple(p.shape)}")
        predicted = p.argmax(1)
        self.counts += torch.bincount(predicted, minlength=self.num_classes)
        if labels is not None:
            self.correct += int((predicted == torch.as_tensor(labels).cpu()).sum())
        p = p.clamp(min=1e-12)
        self.sum_p += p.sum(0)
        self.sum_plogp += (p * p.log()).sum().item()
        self.n += p.shape[0]

    def inception_score(self):
        """exp(E_x KL(p(y|x) || p(y))) = exp(E_x sum p log p - sum p(y) log p(y)); nan of no images."""
        if not self.n:
            return math.nan
        py = self.sum_p / self.n
        return math.exp(self.sum_plogp / self.n - (py * py.log()).sum().item())

    def histogram(self):
        return self.counts.tolist()

    def label_accuracy(self):
        return self.correct / self.n if self.n else math.nan


def inception_score(probs):
    """exp(E_x KL(p(y|x) || p(y))) of class probabilities (N, C): 1 (one class, or all
    uncertain) up to C (confident and balanced)."""
    p = _f64(probs)
    scores = ClassScores(p.shape[-1])
    scores.update(p)
    return scores.inception_score()


def class_histogram(predicted, num_classes=10):
    """Counts (list of ints) of each predicted class."""
    return torch.bincount(torch.as_tensor(predicted).cpu().flatten(), minlength=num_classes).tolist()


def entropy_bits(histogram):
    """Entropy in bits of a histogram (log2(10) = 3.32 for ten equally frequent classes)."""
    h = _f64(histogram)
    p = h / h.sum()
    p = p[p > 0]
    return max(0.0, -(p * p.log2()).sum().item())
