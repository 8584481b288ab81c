"""fastgan.fit: train a user's own torch.nn GAN with everything `fastgan train` has.

    G, D = fastgan.fit(Generator(), Discriminator(), "mnist-5k", epochs=5, out="runs/mine")
    G, D = fastgan.fit(G, D, images, labels=labels, steps=2000)   # uint8 (N, [C,] H, W) images

The pair runs through the same Trainer as fastgan's own models (fastgan.train.Trainer: the
graph-captured step on CUDA, fastgan's Adam, the data on the device, checkpoints and exact
resume, grids, history, --eval-every), as fastgan.convert's copies of G and D unless
convert=False. A D ending in nn.Sigmoid (the tutorials') is trained on its logits; a D without
one is taken to return logits.
"""

import torch

_OPTIONS = "resume, overwrite, allow_changed_data"


def fit(G, D, data, *, labels=None, convert=True, resume=False, overwrite=False, allow_changed_data=False, **options):
    """Trains the pair (G, D) on `data` and returns the trained (G, D): fastgan.convert's copies
    (the modules given are left as they are) unless convert=False; D returns logits (where it
    had a final nn.Sigmoid, that slot is an nn.Identity now: torch.sigmoid(D(x)) is what the
    original returned).

    data: a uint8 image tensor (N, [C,] H, W) with its (N,) `labels` for a conditional pair,
    a dataset name ("mnist-5k", "mnist", "fashion-mnist", with data_dir=...), or a
    torch.utils.data.Dataset whose items are images or (image, label) (uint8 tensors or PIL
    images as they are; float tensors in [0, 1] as ToTensor makes them, or in [-1, 1] after
    Normalize((0.5,), (0.5,)): any negative value says which). G takes (z) or (z, labels), D
    (x) or (x, labels); the image size and channels come from the data and G's output.
    options: TrainConfig's fields (steps, epochs, batch_size, lr, device, out, progress,
    eval_every, ...). resume/overwrite/allow_changed_data: as Trainer's (resume continues the
    run in `out` with this pair again).
    """
    from fastgan.train import ConfigError, TrainConfig, Trainer
    from fastgan.train.config import USER_DATA, USER_MODEL, field_types

    unknown = sorted(set(options) - set(field_types()))
    if unknown or "model" in options or "dataset" in options or "pair" in options:
        bad = unknown or [k for k in ("model", "dataset", "pair") if k in options]
        raise ConfigError(
            f"fastgan.fit: unknown option {', '.join(bad)} (the options are TrainConfig's fields, and {_OPTIONS}; "
            "the models and data are fit's first three arguments)"
        )
    if isinstance(data, str):
        dataset, given = data, None
        if labels is not None:
            raise ConfigError("fastgan.fit: labels= goes with an image tensor, not a dataset name")
    else:
        dataset, given = USER_DATA, _images_and_labels(data, labels)
    cfg = TrainConfig(model=USER_MODEL, dataset=dataset, convert=bool(convert), **options)
    explicit = set(options) | {"model", "dataset", "convert"} if resume else None
    trainer = Trainer(
        cfg,
        resume=resume,
        explicit=explicit,
        overwrite=overwrite,
        allow_changed_data=allow_changed_data,
        models=(G, D),
        data=given,
        make_evaluator=_evaluator,
    )
    trainer.fit()
    return trainer.G, trainer.D


def _evaluator(cfg, device):
    from fastgan.metrics import Evaluator

    return Evaluator(cfg.dataset, cfg.data_dir, device)


def _images_and_labels(data, labels):
    """(uint8 images (N, C, H, W), (N,) labels or None) of fit's `data`."""
    from fastgan.train import ConfigError

    if isinstance(data, torch.Tensor):
        images = data
    elif isinstance(data, torch.utils.data.Dataset):
        if labels is not None:
            raise ConfigError("fastgan.fit: labels= goes with an image tensor; a Dataset's items carry theirs")
        images, labels = _from_dataset(data)
    else:
        raise ConfigError(
            f"fastgan.fit: data must be a uint8 image tensor, a dataset name or a torch.utils.data.Dataset, "
            f"got {type(data).__name__}"
        )
    if images.dtype != torch.uint8:
        raise ConfigError(f"fastgan.fit: image tensors must be uint8 (0-255), got {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[0] < 1:
        raise ConfigError(f"fastgan.fit: images must be (N, [C,] H, W), got shape {tuple(images.shape)}")
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.shape != (images.shape[0],) or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ConfigError(
                f"fastgan.fit: labels must be {images.shape[0]} integers, one per image, got "
                f"{labels.dtype} of shape {tuple(labels.shape)}"
            )
    return images.cpu(), (labels.cpu().long() if labels is not None else None)


def _from_dataset(dataset):
    """A Dataset's items as a uint8 image tensor and labels (None if its items have none)."""
    from fastgan.train import ConfigError

    images, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        x, y = item if isinstance(item, (tuple, list)) else (item, None)
        images.append(_as_tensor(x, i))
        labels.append(y)
    if not images:
        raise ConfigError("fastgan.fit: the dataset is empty")
    if any(y is None for y in labels):
        labels = None
    else:
        try:
            labels = torch.tensor([int(y) for y in labels])
        except (TypeError, ValueError):
            raise ConfigError("fastgan.fit: a dataset's labels must be integers") from None
    shapes = {tuple(x.shape) for x in images}
    kinds = {x.dtype for x in images}
    if len(shapes) > 1 or len(kinds) > 1:
        raise ConfigError(f"fastgan.fit: the dataset's images differ in shape or type: {sorted(shapes)[:3]}, {kinds}")
    images = torch.stack(images)
    if images.dtype == torch.uint8:
        return images, labels
    if not bool(torch.isfinite(images).all()):
        raise ConfigError("fastgan.fit: the dataset has non-finite pixels")
    # ToTensor's [0, 1], or [-1, 1] after Normalize((0.5,), (0.5,)): a negative pixel tells them apart
    images = (images + 1) * 127.5 if float(images.min()) < 0 else images * 255
    return images.round().clamp(0, 255).to(torch.uint8), labels


def _as_tensor(x, i):
    """A dataset item's image as a (C, H, W) uint8 or float32 tensor."""
    from fastgan.train import ConfigError

    if not isinstance(x, torch.Tensor):
        try:
            import numpy as np

            x = torch.from_numpy(np.array(x))  # a PIL image: (H, W) or (H, W, C) uint8
        except Exception:
            raise ConfigError(f"fastgan.fit: dataset item {i} is a {type(x).__name__}, not an image") from None
        if x.dim() == 3:
            x = x.permute(2, 0, 1)
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ConfigError(f"fastgan.fit: dataset item {i} is a {x.dtype} tensor; give uint8 or float images")
    x = x if x.dtype == torch.uint8 else x.float()
    return x if x.dim() == 3 else x.unsqueeze(0)


__all__ = ["fit"]
