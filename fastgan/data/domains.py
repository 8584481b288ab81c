"""DiscoGAN's two unpaired image domains (`--domains A:B`): each a dataset name, optionally with
"-rot90": that dataset independently shuffled and rotated by 90 degrees (counter-clockwise), a
second domain whose relation to the first is known (a digit's translation, rotated back, should
be the same digit).

For training the two are packed into one uint8 tensor (N, 2, 28, 28), channel 0 domain A, channel
1 domain B: A's i-th image beside B's i-th image of an independent shuffle (fixed, seed
SHUFFLE_SEED), so that the one DeviceLoader batches both; nothing relates the two images of a
pair (no loss reads the pairing). N is the smaller domain's size; the labels are A's.
"""

import torch

from fastgan.data.datasets import DatasetError, check_name, load_dataset

ROTATED = "-rot90"
SHUFFLE_SEED = 90


def parse(spec):
    """(A, B) of a --domains value "A:B"; DatasetError naming the option otherwise."""
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) != 2 or not all(parts):
        raise DatasetError(f"--domains must be two domains A:B (e.g. mnist:mnist{ROTATED}), got {spec!r}")
    for name in parts:
        try:
            check_name(base(name))
        except DatasetError as exc:
            raise DatasetError(f"--domains {spec}: {exc} (optionally with {ROTATED})") from None
    return tuple(parts)


def base(name):
    """The dataset a domain is drawn from."""
    return name[: -len(ROTATED)] if name.endswith(ROTATED) else name


def rotated(name):
    return name.endswith(ROTATED)


def rotate(images, k=1):
    """uint8 (N, 28, 28) or float (N, 1, 28, 28) images rotated by k x 90 degrees (counter-clockwise)."""
    return torch.rot90(images, k, dims=(-2, -1))


def load_domain(name, data_dir=None, train=True, download=False):
    """(images (N, 28, 28) uint8, labels (N,)) of one domain (train=False: its measuring split,
    fastgan.metrics.split's test images, not shuffled)."""
    dataset = base(name)
    data_dir = None if dataset == "mnist-5k" else data_dir
    if train:
        images, labels = load_dataset(dataset, data_dir, train=True, download=download)
    else:
        from fastgan.metrics.classifier import split

        _, (images, labels) = split(dataset, data_dir)
    if rotated(name):
        if train:
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SHUFFLE_SEED))
            images, labels = images[order], labels[order]
        images = rotate(images)
    return images, labels


def load_pairs(spec, data_dir=None, download=False):
    """The training data of --domains spec: (images (N, 2, 28, 28) uint8, A's labels (N,))."""
    a, b = parse(spec)
    (xa, ya), (xb, _) = load_domain(a, data_dir, True, download), load_domain(b, data_dir, True, download)
    if not rotated(b):  # a rotated domain is shuffled already
        xb = xb[torch.randperm(len(xb), generator=torch.Generator().manual_seed(SHUFFLE_SEED + 1))]
    n = min(len(xa), len(xb))
    return torch.stack([xa[:n], xb[:n]], dim=1), ya[:n]
