"""evaluate(checkpoint): sample quality of a fastgan checkpoint, measured by the classifier."""

import math
import time

import torch
from torch import nn

from fastgan._options import MODELS
from fastgan.metrics.classifier import NUM_CLASSES, ClassifierSettings, classify, get_classifier, split, to_input
from fastgan.metrics.fid import (
    ClassScores,
    RunningStats,
    entropy_bits,
    feature_stats,
    fid_from_features,
    frechet_distance,
)
from fastgan.metrics.matching import code_accuracy
from fastgan.metrics.superres import spread, superres_metrics
from fastgan.train.auxiliary import codes_of
from fastgan.train.config import ConfigError
from fastgan.train.sampling import latent_inputs, load_generator, resolve_device, run_generator
from fastgan.train.superres import superres


def generate_batches(G, cfg, n, seed=0, device="cpu", batch_size=1000):
    """Yields (images (k, 1, 28, 28) in [-1, 1], requested labels or None) for n images in
    batches of up to batch_size: noise drawn on the CPU from `seed`, batch by batch (the same
    numbers as one draw of all n, and the same images on every device); conditional models get
    labels arange(n) % 10, and infogan categorical codes arange(n) % 10 (yielded as its labels)."""
    gen = torch.Generator().manual_seed(seed)
    codes = codes_of(cfg)
    for i in range(0, n, batch_size):
        k = min(batch_size, n - i)
        z, labels = latent_inputs(cfg, k, gen, device, start=i)
        with torch.no_grad():
            x = run_generator(G, cfg, z, labels)
        if codes is not None:
            labels = codes.split(z)[1]
        yield x.float().reshape(-1, 1, 28, 28), (labels.cpu() if labels is not None else None)


def generate(G, cfg, n, seed=0, device="cpu", batch_size=1000):
    """(images (n, 1, 28, 28) in [-1, 1], requested labels or None): generate_batches in one
    tensor (n images in memory; Evaluator measures batch by batch instead)."""
    images, labels = zip(*generate_batches(G, cfg, n, seed, device, batch_size))
    return torch.cat(images), (torch.cat(labels) if labels[0] is not None else None)


class Evaluator:
    """The measuring side of evaluate(), set up once and then applied to a generator as often as
    needed (`fastgan train --eval-every`): the dataset's classifier (cached, see
    get_classifier) and the statistics of its features on the real test images."""

    def __init__(self, dataset, data_dir=None, device="cpu", cache_dir=None, classifier=None, batch_size=1000):
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.dataset = dataset
        self.data = split(dataset, data_dir)
        settings = classifier if classifier is not None else ClassifierSettings()
        model, self.classifier_info = get_classifier(dataset, cache=cache_dir, settings=settings, data=self.data)
        self.model = model.to(self.device)
        (_, _), (test_x, _) = self.data
        self.real_features = classify(self.model, to_input(test_x).to(self.device), batch_size)[0]
        self.real_stats = feature_stats(self.real_features)

    @torch.no_grad()
    def __call__(self, G, cfg, n=10000, seed=0):
        """Metrics of generator G (a model of TrainConfig cfg) on n images drawn from noise
        `seed`: fid, inception_score, class_histogram, class_entropy, label_accuracy (None for
        unconditional models). G is put in eval mode for the draw and then restored. stackgan:
        also stage1_fid, stage1_label_accuracy, stage1_inception_score, stage1_class_entropy,
        of stage I's sketches upsampled to 28x28 (bilinear) from the same inputs."""
        if cfg.discogan():
            return self._translations(G, cfg, n)
        m = self._measure(G, cfg, n, seed)
        if not cfg.user_model() and MODELS[cfg.model].aux == "stackgan":
            stage1 = self._measure(_Sketches(G), cfg, n, seed)
            for key in ("fid", "label_accuracy", "inception_score", "class_entropy", "nonfinite_images"):
                m[f"stage1_{key}"] = stage1[key]
        return m

    def _measure(self, G, cfg, n, seed):
        check_n(n)
        if superres(cfg):  # n held-out images spread over the digits, super-resolved (all of them if fewer)
            (_, _), (x, y) = self.data
            images, labels = spread(x, y, n)
            return superres_metrics(G, cfg, images, labels, self.model, self.real_stats, self.batch_size)
        was_training = G.training
        G.eval()
        stats, scores = RunningStats(), ClassScores(NUM_CLASSES)
        nonfinite = 0
        infogan = codes_of(cfg) is not None
        codes, predicted = [], []  # infogan: each image's categorical code and predicted digit
        try:
            # batch by batch: memory does not grow with n
            for images, labels in generate_batches(G, cfg, n, seed, self.device, self.batch_size):
                finite = torch.isfinite(images).flatten(1).all(1).cpu()
                nonfinite += int((~finite).sum())
                features, probs = classify(self.model, images, self.batch_size)
                stats.update(features)  # a non-finite image makes the FID nan (and is counted)
                # the class scores of the images that are images: a NaN image is no digit 0
                if infogan:
                    codes.append(labels[finite])
                    predicted.append(probs[finite].argmax(1))
                    labels = None
                scores.update(probs[finite], labels[finite] if labels is not None else None)
        finally:
            G.train(was_training)
        hist = scores.histogram()
        extra = {}
        if infogan:
            accuracy, mapping = code_accuracy(torch.cat(codes), torch.cat(predicted), NUM_CLASSES)
            extra = {"code_accuracy": accuracy, "code_to_digit": mapping}
        return {
            "fid": frechet_distance(*stats.stats(), *self.real_stats),
            "inception_score": scores.inception_score(),
            "class_histogram": hist,
            "class_entropy": entropy_bits(hist) if sum(hist) else math.nan,
            "label_accuracy": scores.label_accuracy() if cfg.conditional() else None,
            "nonfinite_images": nonfinite,  # a diverged G: its fid is nan, not an error
            **extra,
        }

    def _translations(self, G, cfg, n):
        """discogan: its generators on (up to n of) both domains' test images, in order."""
        from fastgan.data.domains import base, load_domain, parse, rotate, rotated

        check_n(n)
        a, b = parse(cfg.domain_spec())
        domains = [load_domain(name, cfg.data_dir, train=False) for name in (a, b)]
        (xa, ya), (xb, yb) = ((to_input(x[:n]).to(self.device), y[:n]) for x, y in domains)
        k = min(len(xa), len(xb))
        was_training = G.training
        G.eval()
        fakes, backs = [], []
        try:
            with torch.no_grad():
                for i in range(0, k, self.batch_size):
                    j = min(k, i + self.batch_size)
                    fake, back = G.cycle(torch.cat([xa[i:j], xb[i:j]], dim=1))
                    fakes.append(fake)
                    backs.append(back)
        finally:
            G.train(was_training)
        fake, back = torch.cat(fakes), torch.cat(backs)
        fake_a, fake_b = fake[:, :1].float(), fake[:, 1:].float()
        xa, xb, ya, yb = xa[:k], xb[:k], ya[:k], yb[:k]
        m = {
            "reconstruction_mse_a": float((back[:, :1].float() - xa).square().mean()),
            "reconstruction_mse_b": float((back[:, 1:].float() - xb).square().mean()),
            "nonfinite_images": int((~torch.isfinite(fake).flatten(1).all(1)).sum()),
            "n": k,  # the test images measured (at most n of each domain)
        }
        # G_BA's images are of domain A: the classifier of --dataset (A's) measures them
        features, probs = classify(self.model, fake_a, self.batch_size)
        stats, scores = RunningStats(), ClassScores(NUM_CLASSES)
        stats.update(features)
        scores.update(probs, None)
        hist = scores.histogram()
        m.update(
            fid=frechet_distance(*stats.stats(), *self.real_stats),
            inception_score=scores.inception_score(),
            class_histogram=hist,
            class_entropy=entropy_bits(hist) if sum(hist) else math.nan,
            label_accuracy=None,
        )
        if rotated(b) and not rotated(a) and base(a) == base(b):  # B is A rotated: the true relation is known
            predicted_ab = classify(self.model, rotate(fake_b, -1), self.batch_size)[1].argmax(1)
            # G_BA's images were classified above, for the FID
            for way, predicted, y in (("ab", predicted_ab, ya), ("ba", probs.argmax(1), yb)):
                y = y.cpu()
                m[f"translation_accuracy_{way}"] = float((predicted == y).double().mean())
                # a G that maps each digit class onto one class, not its own (e.g. 6 <-> 9), is
                # consistent though not the rotation: the best one-to-one source -> translated matching
                consistency, matching = code_accuracy(y, predicted, NUM_CLASSES)
                m[f"translation_consistency_{way}"], m[f"translation_matching_{way}"] = consistency, matching
            # what mapping each image to itself would score (B's digits, rotated back, unrecognizable)
            m["identity_accuracy_ab"] = _accuracy(self.model, rotate(xa, -1), ya, self.batch_size)
        return m

    def fid_real(self, n, seed=0):
        """The FID of n real training images (all of them if there are fewer) against the test
        images: the floor a perfect generator reaches with n samples (FID grows as n shrinks,
        so the floor is measured with the generated images' count)."""
        (train_x, _), (test_x, _) = self.data
        k = min(len(train_x), n)
        pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))[:k]
        train_f, _ = classify(self.model, to_input(train_x[pick]).to(self.device), self.batch_size)
        return fid_from_features(train_f, self.real_features)


def _accuracy(model, images, labels, batch_size):
    """The fraction of images the classifier calls their label."""
    return float((classify(model, images, batch_size)[1].argmax(1) == labels.cpu()).double().mean())


class _Sketches(nn.Module):
    """A stackgan G seen through its stage I: the sketches upsampled (StackGenerator.sketch)."""

    def __init__(self, G):
        super().__init__()
        self.G = G
        self.train(G.training)

    def forward(self, z, labels=None):
        return self.G.sketch(z, labels)


def check_n(n, option="--n"):
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"{option} must be an integer of at least 2 (a covariance needs 2 samples), got {n!r}")


def evaluate(
    checkpoint,
    n=10000,
    device="cpu",
    data_dir=None,
    cache_dir=None,
    seed=0,
    classifier=None,
    batch_size=1000,
    ema=True,
):
    """Sample-quality metrics of the generator in `checkpoint` (a fastgan checkpoint.pt).

    Draws n images (noise from `seed`), and measures them with the classifier of the
    checkpoint's dataset (trained and cached on first use, see get_classifier):

      fid               classifier FID: Fréchet distance between the classifier's penultimate
                        features of the n generated images and of the real test images
      fid_real          the same distance from n real training images (all, if fewer) to the
                        test images: the floor a perfect generator reaches
      inception_score   classifier Inception Score (1 to 10)
      class_histogram   predicted digits of the generated images (10 counts; images with a
                        non-finite pixel are left out of it, and of the scores below)
      class_entropy     entropy of that histogram in bits (max log2 10 = 3.32; low: mode collapse)
      label_accuracy    conditional models: the fraction classified as the requested label
                        (None for unconditional models)
      stage1_fid, stage1_label_accuracy, stage1_inception_score, stage1_class_entropy
                        stackgan only: the same of stage I's 14x14 sketches upsampled (bilinear) to
                        28x28, drawn from the same noise and labels (fid and label_accuracy above
                        are stage II's)
      discogan (instead of the above: its generators translate test images of both domains):
      translation_accuracy_ab / _ba  with --domains X:X-rot90, the fraction of test digits whose
                        translation A -> B, rotated back by -90 degrees, (and B -> A, as it is) the
                        classifier calls the source digit; identity_accuracy_ab: the same for the
                        mapping that leaves each image as it is (the floor);
                        translation_consistency_ab / _ba: the same fraction under the best
                        one-to-one matching of source digits to the translations' classes (a G
                        that draws each digit as one other digit scores 1), and that matching,
                        translation_matching_ab / _ba (source digit -> translated class)
      reconstruction_mse_a / _b  mean squared error (images in [-1, 1]) of G_BA(G_AB(A)) against A
                        and of G_AB(G_BA(B)) against B
      fid, inception_score, class_histogram, class_entropy: of G_BA(B), against A's test images
      code_accuracy     infogan only: the fraction of images classified as the digit that their
                        categorical code is matched to, under the best one-to-one matching of
                        codes to digits (fastgan.metrics.matching); code_to_digit: that matching
      nonfinite_images  generated images with a NaN or infinite pixel (a diverged generator;
                        fid is then nan)
      classifier_accuracy, classifier_cached, classifier_path: the measuring classifier
      model, dataset, step, n, seconds

    classifier: ClassifierSettings (or a dict of its fields) to override the default training.
    data_dir: where the IDX files of mnist / fashion-mnist are (default: the checkpoint's).
    ema: measure the average of G's weights where the run kept one (--ema; False: G itself).
    """
    check_n(n)
    t0 = time.perf_counter()
    device = resolve_device(device)
    G, cfg, state = load_generator(checkpoint, device, ema=ema)
    evaluator = Evaluator(
        cfg.dataset, data_dir if data_dir is not None else cfg.data_dir, device, cache_dir, classifier, batch_size
    )
    metrics = evaluator(G, cfg, n, seed)  # (discogan's "n": the test images it translated)
    info = evaluator.classifier_info
    return {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "ema": bool(ema and state.get("generator_ema") is not None and state["step"] >= cfg.ema_start),
        "step": int(state.get("step", 0)),
        "n": n,
        **metrics,
        "fid_real": evaluator.fid_real(metrics.get("n", n), seed),
        "classifier_accuracy": info["test_accuracy"],
        "classifier_cached": info["cached"],
        "classifier_path": info["path"],
        "seconds": time.perf_counter() - t0,
    }
