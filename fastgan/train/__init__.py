"""Training: the GAN step, the trainer loop, checkpoints, sampling, sample grids and loss history.

    from fastgan.train import Trainer, TrainConfig, train_step, sample, make_step

The modules import one way: config, auxiliary and checkpoint -> sampling -> step -> outputs -> trainer.
Names load on first use, so that fastgan.metrics can import fastgan.train.sampling without
the trainer.
"""

import importlib

_NAMES = {
    "checkpoint": ("load_checkpoint", "save_checkpoint"),
    "config": ("DEFAULT_EPOCHS", "CheckpointError", "ConfigError", "TrainConfig"),
    "images": ("make_grid", "plot_losses", "read_history", "save_grid", "write_history"),
    "outputs": ("CHECKPOINT",),
    "sampling": (
        "build_models",
        "fixed_inputs",
        "latent_inputs",
        "load_generator",
        "noise",
        "resolve_device",
        "sample",
        "traverse",
    ),
    "distributed": ("DistributedError",),
    "step": ("make_step", "train_step"),
    "trainer": ("Trainer",),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'fastgan.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fastgan.train.{module}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
