"""A batch loader that keeps the whole dataset on the training device.

The uint8 images (47 MB for MNIST) are copied to the device once. Each epoch draws a
permutation on the device; each batch is one index_select on the device followed by the
scaling to [-1, 1]: no per-sample Python, no host-to-device copy per step, no sync.
"""
import torch

from fastgan._argtypes import as_index
from fastgan.data.idx import DatasetError


def scale_images(images, dtype=torch.float32):
    """uint8 images (0-255) -> a new `dtype` tensor in [-1, 1] (x * 2/255 - 1)."""
    return images.to(dtype).mul_(2.0 / 255.0).sub_(1.0)


def _index(name, value):
    return as_index(value, name, DatasetError)


class DeviceLoader:
    """Shuffled batches of (images (B,1,28,28) float in [-1,1], labels (B,) int64) on `device`.

    images: (N, H, W) or (N, 1, H, W) uint8; labels: (N,) integers. Incomplete last batches
    are dropped (every step sees batch_size images). The shuffle uses the loader's own
    generator (seeded with `seed`), whose state is part of state_dict() for exact resumes.
    """

    def __init__(self, images, labels, batch_size, device="cpu", seed=0, dtype=torch.float32):
        if images.dtype != torch.uint8:
            raise DatasetError(f"DeviceLoader: images must be uint8, got {images.dtype}")
        if images.dim() == 3:
            images = images.unsqueeze(1)
        labels = torch.as_tensor(labels)
        if (images.dim() != 4 or images.shape[1] != 1 or labels.dim() != 1
                or images.shape[0] != labels.shape[0]):
            raise DatasetError(f"DeviceLoader: images (N,[1,]H,W) and labels (N,) must match, got "
                               f"{tuple(images.shape)} and {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise DatasetError(f"DeviceLoader: labels must be integers, got {labels.dtype}")
        n = images.shape[0]
        batch_size = _index("batch size", batch_size)
        if batch_size < 1:
            raise DatasetError(f"batch size must be a positive integer, got {batch_size!r}")
        seed = _index("seed", seed)
        if not -2 ** 63 <= seed < 2 ** 64:
            raise DatasetError(f"seed must fit in 64 bits, got {seed}")
        if batch_size > n:
            raise DatasetError(f"batch size {batch_size} is larger than the dataset ({n} images)")
        self.device = torch.device(device)
        self.images = images.to(self.device).contiguous()
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.dtype = dtype
        self.num_samples = n
        self.steps_per_epoch = n // batch_size
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self):
        return self.steps_per_epoch

    def permutation(self):
        """A fresh permutation of the dataset (on the device), advancing the generator."""
        return torch.randperm(self.num_samples, generator=self.generator, device=self.device)

    def batch(self, perm, index):
        """Batch `index` of the epoch ordered by `perm`, scaled to [-1, 1] on the device."""
        idx = perm[index * self.batch_size:(index + 1) * self.batch_size]
        return scale_images(self.images.index_select(0, idx), self.dtype), self.labels.index_select(0, idx)

    def epoch(self, start=0):
        """Yields this epoch's batches, from batch `start` on (a resumed epoch skips the rest)."""
        start = _index("start", start)
        if not 0 <= start <= self.steps_per_epoch:
            raise DatasetError(f"start must be a batch index from 0 to {self.steps_per_epoch}, got {start}")
        perm = self.permutation()
        for i in range(start, self.steps_per_epoch):
            yield self.batch(perm, i)

    def __iter__(self):
        return self.epoch()

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
