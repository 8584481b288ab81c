"""The one batch source of training: the whole dataset on the training device, batches drawn
there, graph-capturable.

The uint8 images (47 MB for MNIST) are copied to the device once and scaled to [-1, 1] there,
once (4x the memory: 188 MB for 60,000 MNIST images in float32), so that a batch is one
gather. Two ways to walk an epoch:

- `next()` (the training step): the batch at a device-side counter `index` into this epoch's
  order `perm`; no host sync and no Python per step, so it can live inside a CUDA graph.
  `new_epoch()` draws the next order.
- `epoch()` / `batch(perm, i)` (Python loops): the batches of a permutation in turn.
"""

import math

import torch

from fastgan._argtypes import as_index
from fastgan.data.idx import DatasetError


def scale_images(images, dtype=torch.float32):
    """uint8 images (0-255) -> a new `dtype` tensor in [-1, 1] (x * 2/255 - 1)."""
    return images.to(dtype).mul_(2.0 / 255.0).sub_(1.0)


def _index(name, value):
    return as_index(value, name, DatasetError)


class DeviceLoader:
    """Shuffled batches of (images (B, C, H, W) float in [-1, 1], labels (B,) int64) on `device`.

    images: (N, H, W) or (N, C, H, W) uint8; labels: (N,) integers. Incomplete last batches
    are dropped (every step sees batch_size images). The shuffle uses the loader's own
    generator (seeded with `seed`, or the `generator` given, on the device), whose state is
    part of state_dict() for exact resumes. device None: the images' device. sample_shape:
    each image's shape in the batches when not (C, H, W), e.g. flat (C*H*W,) for an MLP that
    takes flat images (a view: no copy).

    shard=(rank, world_size): data-parallel training (fastgan.train.distributed). Each step's
    global batch is world_size * batch_size rows of the one permutation, the same on every rank
    for a seed; rank r takes rows [r * batch_size, (r + 1) * batch_size) of it, so that
    world_size ranks see exactly the batches of one process with world_size times the batch.
    An epoch is then n // (world_size * batch_size) steps.
    """

    def __init__(
        self,
        images,
        labels,
        batch_size,
        device=None,
        seed=0,
        dtype=torch.float32,
        generator=None,
        sample_shape=None,
        shard=None,
    ):
        if images.dtype != torch.uint8:
            raise DatasetError(f"DeviceLoader: images must be uint8 (0-255), got {images.dtype}")
        if images.dim() == 3:
            images = images.unsqueeze(1)
        labels = torch.as_tensor(labels)
        n = images.shape[0]
        batch_size = _index("batch size", batch_size)
        if batch_size < 1:
            raise DatasetError(f"batch size must be a positive integer, got {batch_size!r}")
        rank, world = (0, 1) if shard is None else (_index("rank", shard[0]), _index("world size", shard[1]))
        if not 0 <= rank < world:
            raise DatasetError(f"DeviceLoader: shard (rank {rank}, world size {world}) needs 0 <= rank < world size")
        if batch_size * world > n:
            what = f"batch size {batch_size}" if world == 1 else f"the global batch ({world} ranks x {batch_size})"
            raise DatasetError(f"{what} is larger than the dataset ({n} images)")
        if images.dim() != 4 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"DeviceLoader: images (N,[C,]H,W) and labels (N,) must match, got "
                f"{tuple(images.shape)} and {tuple(labels.shape)}"
            )
        if sample_shape is not None and math.prod(sample_shape) != math.prod(images.shape[1:]):
            raise DatasetError(
                f"DeviceLoader: sample_shape {tuple(sample_shape)} does not hold images of shape "
                f"{tuple(images.shape[1:])}"
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise DatasetError(f"DeviceLoader: labels must be integers, got {labels.dtype}")
        seed = _index("seed", seed)
        if not -(2**63) <= seed < 2**64:
            raise DatasetError(f"seed must fit in 64 bits, got {seed}")
        self.device = torch.device(device) if device is not None else images.device
        self.images = scale_images(images.to(self.device), dtype).contiguous()
        if sample_shape is not None:
            self.images = self.images.view(n, *sample_shape)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world
        self.num_samples = n
        self.steps_per_epoch = n // (batch_size * world)
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed)
        self.generator = generator
        # the training step's order and position; in dataset order until new_epoch()
        # (constructing draws nothing from the generator)
        self.perm = torch.arange(self.steps_per_epoch * batch_size, device=self.device).view(-1, batch_size)
        self.index = torch.zeros(1, dtype=torch.int64, device=self.device)

    def __len__(self):
        return self.steps_per_epoch

    def permutation(self):
        """A fresh permutation of the dataset (on the device), advancing the generator."""
        return torch.randperm(self.num_samples, generator=self.generator, device=self.device)

    # -- the training step's walk: device-side, capturable ----------------------------
    def new_epoch(self, perm=None, start=0):
        """Starts an epoch in the order `perm` (default: a fresh permutation from the generator)
        at its batch `start`."""
        if perm is None:
            perm = self.permutation()
        used = perm[: self.perm.numel() * self.world_size]  # this rank's part of each global batch
        self.perm.copy_(used.view(self.steps_per_epoch, self.world_size, self.batch_size)[:, self.rank])
        self.index.fill_(start)

    def next(self, labels=True):
        """(images, labels) of the batch at `index`, which advances (wrapping at the end of the
        epoch); labels None when not asked for. Device work only, no host sync."""
        rows = self.perm.index_select(0, self.index).view(-1)
        self.index.add_(1).remainder_(self.steps_per_epoch)
        return self.images.index_select(0, rows), self.labels.index_select(0, rows) if labels else None

    # -- Python loops over an epoch ----------------------------------------------------
    def batch(self, perm, index):
        """Batch `index` of the epoch ordered by `perm` (this rank's part of it, with a shard)."""
        start = (index * self.world_size + self.rank) * self.batch_size
        idx = perm[start : start + self.batch_size]
        return self.images.index_select(0, idx), self.labels.index_select(0, idx)

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
