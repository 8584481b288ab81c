"""Training: the GAN step, the trainer loop, checkpoints, sample grids and loss history.

    from fastgan.train import Trainer, TrainConfig, train_step, sample, make_step
"""
from fastgan.train.checkpoint import load_checkpoint, save_checkpoint
from fastgan.train.config import DEFAULT_EPOCHS, CheckpointError, ConfigError, TrainConfig
from fastgan.train.images import make_grid, plot_losses, read_history, save_grid, write_history
from fastgan.train.step import make_step
from fastgan.train.trainer import (CHECKPOINT, Trainer, build_models, fixed_inputs, load_generator, noise,
                                   resolve_device, sample, train_step)

__all__ = ["CHECKPOINT", "DEFAULT_EPOCHS", "CheckpointError", "ConfigError", "TrainConfig",
           "Trainer", "build_models", "fixed_inputs", "load_checkpoint", "load_generator", "make_grid", "make_step", "noise",
           "plot_losses", "read_history", "resolve_device", "sample", "save_checkpoint",
           "save_grid", "train_step", "write_history"]
