"""evaluate(checkpoint): sample quality of a fastgan checkpoint, measured by the classifier."""
import time

import torch

from fastgan.metrics.classifier import NUM_CLASSES, ClassifierSettings, get_classifier, split, to_input
from fastgan.metrics.fid import (class_histogram, entropy_bits, feature_stats, fid_from_features,
                                 frechet_distance, inception_score)
from fastgan.models import CONDITIONAL
from fastgan.train import CheckpointError, ConfigError, build_models, load_checkpoint, noise, resolve_device


@torch.no_grad()
def classify(model, images, batch_size=1000):
    """(features (N, D) float64 on CPU, probabilities (N, 10) float64 on CPU) of float images
    (N, 1, 28, 28) in [-1, 1]."""
    feats, probs = [], []
    for i in range(0, len(images), batch_size):
        f = model.features(images[i:i + batch_size])
        feats.append(f.double().cpu())
        probs.append(torch.softmax(model.fc2(f).double(), 1).cpu())
    return torch.cat(feats), torch.cat(probs)


def load_generator(checkpoint, device):
    """(G in eval mode, TrainConfig, checkpoint state) of a fastgan checkpoint."""
    state = load_checkpoint(checkpoint, map_location=device)
    cfg = state["config"]
    G, _ = build_models(cfg, device)
    try:
        G.load_state_dict(state["generator"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{checkpoint}: generator weights do not fit model {cfg.model}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return G.eval(), cfg, state


@torch.no_grad()
def generate(G, cfg, n, seed=0, device="cpu", batch_size=1000):
    """(images (n, 1, 28, 28) in [-1, 1], requested labels or None): noise drawn on the CPU from
    `seed` (the same images on every device); conditional models get labels arange(n) % 10."""
    conditional = cfg.model in CONDITIONAL
    gen = torch.Generator().manual_seed(seed)
    z = noise(n, cfg.latent_dim, cfg.noise, gen, "cpu")
    labels = torch.arange(n) % NUM_CLASSES if conditional else None
    out = []
    for i in range(0, n, batch_size):
        zi = z[i:i + batch_size].to(device)
        x = G(zi, labels[i:i + batch_size].to(device)) if conditional else G(zi)
        out.append(x.float().reshape(-1, 1, 28, 28))
    return torch.cat(out), labels


def evaluate(checkpoint, n=10000, device="cpu", data_dir=None, cache_dir=None, seed=0,
             classifier=None, batch_size=1000):
    """Sample-quality metrics of the generator in `checkpoint` (a fastgan checkpoint.pt).

    Draws n images (noise from `seed`), and measures them with the classifier of the
    checkpoint's dataset (trained and cached on first use, see get_classifier):

      fid               classifier FID: Fréchet distance between the classifier's penultimate
                        features of the n generated images and of the real test images
      fid_real          the same distance from an equal number of real training images to the
                        test images: the floor a perfect generator reaches
      inception_score   classifier Inception Score (1 to 10)
      class_histogram   predicted digits of the generated images (10 counts)
      class_entropy     entropy of that histogram in bits (max log2 10 = 3.32; low: mode collapse)
      label_accuracy    conditional models: the fraction classified as the requested label
                        (None for unconditional models)
      classifier_accuracy, classifier_cached, classifier_path: the measuring classifier
      model, dataset, step, n, seconds

    classifier: ClassifierSettings (or a dict of its fields) to override the default training.
    data_dir: where the IDX files of mnist / fashion-mnist are (default: the checkpoint's).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"--n must be an integer of at least 2 (a covariance needs 2 samples), got {n!r}")
    t0 = time.perf_counter()
    device = resolve_device(device)
    G, cfg, state = load_generator(checkpoint, device)
    dataset = cfg.dataset
    data = split(dataset, data_dir if data_dir is not None else cfg.data_dir)
    settings = classifier if classifier is not None else ClassifierSettings()
    model, info = get_classifier(dataset, cache=cache_dir, settings=settings, data=data)
    model = model.to(device)

    (train_x, _), (test_x, _) = data
    real_f, _ = classify(model, to_input(test_x).to(device), batch_size)
    mu_r, s_r = feature_stats(real_f)
    gen_x, labels = generate(G, cfg, n, seed, device, batch_size)
    gen_f, gen_p = classify(model, gen_x, batch_size)
    k = min(len(train_x), max(n, len(test_x)))
    pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))[:k]
    train_f, _ = classify(model, to_input(train_x[pick]).to(device), batch_size)

    predicted = gen_p.argmax(1)
    hist = class_histogram(predicted, NUM_CLASSES)
    return {
        "model": cfg.model,
        "dataset": dataset,
        "step": int(state.get("step", 0)),
        "n": n,
        "fid": frechet_distance(*feature_stats(gen_f), mu_r, s_r),
        "fid_real": fid_from_features(train_f, real_f),
        "inception_score": inception_score(gen_p),
        "class_histogram": hist,
        "class_entropy": entropy_bits(hist),
        "label_accuracy": (predicted == labels).double().mean().item() if labels is not None else None,
        "classifier_accuracy": info["test_accuracy"],
        "classifier_cached": info["cached"],
        "classifier_path": info["path"],
        "seconds": time.perf_counter() - t0,
    }
