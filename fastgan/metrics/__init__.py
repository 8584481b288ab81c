"""Sample quality you can measure offline: a small digit classifier stands in for Inception.

    from fastgan.metrics import evaluate
    m = evaluate("runs/dcgan-mnist-5k/checkpoint.pt", n=10000)
    m["fid"], m["inception_score"], m["class_entropy"], m["label_accuracy"]

The classifier (LeNet-like, see classifier.py) is trained on the checkpoint's dataset on
first use, deterministically on the CPU, and cached under ~/.cache/fastgan ($FASTGAN_CACHE,
or cache_dir=...), keyed by the dataset's sha256 and the training settings.
"""

from fastgan.metrics.classifier import (
    ClassifierSettings,
    LeNet,
    accuracy,
    cache_dir,
    dataset_hash,
    get_classifier,
    split,
    to_input,
    train_classifier,
)
from fastgan.metrics.evaluate import Evaluator, classify, evaluate, generate, generate_batches, load_generator
from fastgan.metrics.fid import (
    ClassScores,
    RunningStats,
    class_histogram,
    entropy_bits,
    feature_stats,
    fid_from_features,
    frechet_distance,
    inception_score,
    sqrtm_psd,
)
from fastgan.metrics.superres import feature_net, psnr, sample_superres, ssim, superres_metrics, upsample_file

__all__ = [
    "ClassScores",
    "ClassifierSettings",
    "Evaluator",
    "LeNet",
    "RunningStats",
    "accuracy",
    "cache_dir",
    "class_histogram",
    "classify",
    "dataset_hash",
    "entropy_bits",
    "evaluate",
    "feature_net",
    "feature_stats",
    "fid_from_features",
    "frechet_distance",
    "generate",
    "generate_batches",
    "get_classifier",
    "inception_score",
    "load_generator",
    "psnr",
    "sample_superres",
    "split",
    "sqrtm_psd",
    "ssim",
    "superres_metrics",
    "to_input",
    "train_classifier",
    "upsample_file",
]
