"""A small LeNet-like digit classifier, trained on CPU and cached on disk.

The classifier is the measuring instrument of `fastgan.metrics`: its penultimate-layer
features give the "classifier FID", its softmax the classifier Inception Score and the class
histogram. It is trained deterministically (CPU, seeded) on the dataset's training split and
cached under the cache dir (default ~/.cache/fastgan, or $FASTGAN_CACHE), keyed by the sha256
of the dataset's uint8 images and labels and by the training settings. Cache files are
written to a temporary name and renamed, and read with torch.load(weights_only=True); a
damaged cache file is reported in a warning and retrained.
"""

import dataclasses
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fastgan._files import atomic_torch_save
from fastgan._options import NUM_CLASSES
from fastgan.data import dataset_hash, load_dataset

FORMAT = "fastgan-classifier"
VERSION = 1
HOLDOUT_PER_CLASS = 100  # mnist-5k: the last 100 images of each digit (1,000) are the test split


@dataclass(frozen=True)
class ClassifierSettings:
    """How the classifier is trained; every field is part of the cache key."""

    seed: int = 0
    epochs: int = 8
    batch_size: int = 64
    lr: float = 4e-3
    channels: Tuple[int, int] = (16, 32)
    features: int = 128  # width of the penultimate layer (the FID features)
    max_train: int = 0  # use at most this many training images (0: all)
    threads: int = 1  # CPU threads while training: a fixed count makes the weights the
    # same on every machine (0: all of torch's, faster, not portable)

    def __post_init__(self):
        # a list (from JSON, a dict) is the same settings, and must find the same cache file
        object.__setattr__(self, "channels", tuple(self.channels))

    def key(self):
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class LeNet(nn.Module):
    """conv5-relu-pool, conv5-relu-pool, linear-relu (features), linear (10 logits)."""

    def __init__(self, channels=(16, 32), features=128, num_classes=NUM_CLASSES):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)  # 28x28 -> pool 14x14
        self.conv2 = nn.Conv2d(c1, c2, 5)  # 10x10 -> pool 5x5
        self.fc1 = nn.Linear(c2 * 25, features)
        self.fc2 = nn.Linear(features, num_classes)

    def features(self, x):
        """Penultimate-layer features of images x (N, 1, 28, 28) in [-1, 1]."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x):
        return self.fc2(self.features(x))


def to_input(images):
    """uint8 (N, 28, 28) or (N, 1, 28, 28) -> float (N, 1, 28, 28) in [-1, 1], as the GANs emit."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images.float().div(127.5).sub(1.0)


@torch.no_grad()
def classify(model, images, batch_size=1000):
    """(features (N, D) float64 on CPU, probabilities (N, 10) float64 on CPU) of float images
    (N, 1, 28, 28) in [-1, 1]."""
    feats, probs = [], []
    for i in range(0, len(images), batch_size):
        f = model.features(images[i : i + batch_size])
        feats.append(f.double().cpu())
        probs.append(torch.softmax(model.fc2(f).double(), 1).cpu())
    return torch.cat(feats), torch.cat(probs)


def split(name, data_dir=None):
    """((train_images, train_labels), (test_images, test_labels)) for the classifier.

    mnist / fashion-mnist: the official train and t10k files. mnist-5k has one split only: its
    last HOLDOUT_PER_CLASS images of each digit are held out as the test split.
    """
    if name != "mnist-5k":
        return load_dataset(name, data_dir, train=True), load_dataset(name, data_dir, train=False)
    images, labels = load_dataset(name, data_dir)  # (a data_dir is an error there, not ignored)
    test = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(NUM_CLASSES):
        idx = (labels == c).nonzero().flatten()
        test[idx[-HOLDOUT_PER_CLASS:]] = True
    return (images[~test], labels[~test]), (images[test], labels[test])


def cache_dir(path=None):
    """The classifier cache folder: path, else $FASTGAN_CACHE, else ~/.cache/fastgan."""
    path = path or os.environ.get("FASTGAN_CACHE") or os.path.join("~", ".cache", "fastgan")
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


@torch.no_grad()
def accuracy(model, images, labels, batch_size=1000):
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        logits = model(to_input(images[i : i + batch_size]))
        correct += (logits.argmax(1) == labels[i : i + batch_size]).sum().item()
    return correct / max(1, len(labels))


TRAIN_CALLS = 0  # how many classifiers this process has trained (tests check cache hits)


def train_classifier(images, labels, settings=ClassifierSettings()):
    """A LeNet trained on CPU on (images uint8 (N,28,28), labels (N,)), deterministic given
    settings.seed (with settings.threads fixed, on any machine with the same CPU kernels)."""
    global TRAIN_CALLS
    TRAIN_CALLS += 1
    threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        return _train(images, labels, settings)
    finally:
        torch.set_num_threads(threads)


def _train(images, labels, settings):
    gen = torch.Generator().manual_seed(settings.seed)
    if settings.max_train and len(labels) > settings.max_train:
        keep = torch.randperm(len(labels), generator=gen)[: settings.max_train]
        images, labels = images[keep], labels[keep]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = LeNet(settings.channels, settings.features)
    x_all = to_input(images)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    steps = settings.epochs * ((len(labels) + settings.batch_size - 1) // settings.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=max(1, steps))
    model.train()
    for _ in range(settings.epochs):
        perm = torch.randperm(len(labels), generator=gen)
        for i in range(0, len(labels), settings.batch_size):
            idx = perm[i : i + settings.batch_size]
            x = x_all[idx]
            # light augmentation: random shifts of up to 2 pixels
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


def _cache_path(folder, dataset, data_sha, settings):
    return os.path.join(folder, f"classifier-{dataset}-{data_sha[:16]}-{settings.key()}.pt")


def _load_cached(path, settings, data_sha):
    """The cached LeNet and its record, or None (with a warning) if the file is damaged."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
            raise ValueError("not a fastgan classifier cache file")
        if state.get("data_sha256") != data_sha or state.get("settings") != dataclasses.asdict(settings):
            raise ValueError("it was written for other data or settings")
        with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten: leave the
            model = LeNet(settings.channels, settings.features)  # caller's random stream alone
        model.load_state_dict(state["state_dict"])
        float(state["test_accuracy"])
    except Exception as exc:  # torch raises many kinds for a damaged file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        warnings.warn(
            f"fastgan: classifier cache {path} is unreadable ({type(exc).__name__}: {msg}); retraining it",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    model.eval()
    return model, state


def get_classifier(dataset="mnist-5k", data_dir=None, cache=None, settings=ClassifierSettings(), data=None):
    """(model, info) for `dataset`: loaded from the cache, or trained and cached.

    info: dict with path, cached (bool: loaded from disk), test_accuracy, train_seconds,
    data_sha256, dataset. data: the output of split() if already loaded.
    """
    if isinstance(settings, dict):
        settings = ClassifierSettings(**settings)
    (train_x, train_y), (test_x, test_y) = data if data is not None else split(dataset, data_dir)
    data_sha = dataset_hash(train_x, train_y)
    folder = cache_dir(cache)
    path = _cache_path(folder, dataset, data_sha, settings)
    if os.path.exists(path):
        loaded = _load_cached(path, settings, data_sha)
        if loaded is not None:
            model, state = loaded
            return model, dict(
                path=path,
                cached=True,
                dataset=dataset,
                data_sha256=data_sha,
                test_accuracy=float(state["test_accuracy"]),
                train_seconds=float(state.get("train_seconds", 0.0)),
            )
    t0 = time.perf_counter()
    model = train_classifier(train_x, train_y, settings)
    seconds = time.perf_counter() - t0
    acc = accuracy(model, test_x, test_y)
    state = dict(
        format=FORMAT,
        version=VERSION,
        dataset=dataset,
        data_sha256=data_sha,
        settings=dataclasses.asdict(settings),
        state_dict=model.state_dict(),
        test_accuracy=acc,
        train_seconds=seconds,
    )
    try:
        atomic_torch_save(state, path)
    except (OSError, RuntimeError) as exc:  # torch.save's own "open file failed" is a RuntimeError
        warnings.warn(
            f"fastgan: could not cache the classifier in {folder} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]}); using it uncached (it is trained again next time; "
            "--cache-dir or $FASTGAN_CACHE choose another folder)",
            stacklevel=2,
        )
        path = None
    return model, dict(
        path=path, cached=False, dataset=dataset, data_sha256=data_sha, test_accuracy=acc, train_seconds=seconds
    )
