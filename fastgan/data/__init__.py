"""Offline MNIST / Fashion-MNIST data and a device-resident batch loader.

from fastgan.data import load_dataset, DeviceLoader
images, labels = load_dataset("mnist-5k")       # embedded, 5,000 real MNIST digits
loader = DeviceLoader(images, labels, batch_size=64, device="cuda", seed=0)
for x, y in loader.epoch():                       # x: (64, 1, 28, 28) in [-1, 1]
    ...
"""

from fastgan.data.datasets import (
    DATASETS,
    MD5,
    MIRRORS,
    check_name,
    dataset_hash,
    fetch,
    find_files,
    load_dataset,
    load_idx_dataset,
    load_mnist_5k,
    resolve_data_dir,
)
from fastgan.data.idx import DatasetError, read_idx, read_images_labels, write_idx
from fastgan.data.loader import DeviceLoader

__all__ = [
    "DATASETS",
    "MD5",
    "MIRRORS",
    "DatasetError",
    "DeviceLoader",
    "check_name",
    "dataset_hash",
    "fetch",
    "find_files",
    "load_dataset",
    "load_idx_dataset",
    "load_mnist_5k",
    "read_idx",
    "read_images_labels",
    "resolve_data_dir",
    "write_idx",
]
