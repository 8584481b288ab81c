"""Checkpoints: models, optimizers, RNG states, step, history and config in one file.

Written to a temporary name and renamed (an interrupted save never damages the previous
checkpoint); read with torch.load(weights_only=True): tensors, numbers, strings, lists and
dicts only, no pickled code.
"""
import os

import torch

from fastgan._files import atomic_write
from fastgan.train.config import CheckpointError, TrainConfig

FORMAT = "fastgan-checkpoint"
VERSION = 1


def atomic_torch_save(obj, path):
    """torch.save to a temporary name beside path, then rename: a reader never sees half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        torch.save(obj, f)
    return path


def save_checkpoint(state, path):
    """Writes `state` (a dict) to path atomically."""
    return atomic_torch_save(dict(state, format=FORMAT, format_version=VERSION), path)


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint dict at path, with its config as a TrainConfig; CheckpointError if the
    file is missing, unreadable or not a fastgan checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path} (damaged, truncated or not written "
                              f"by fastgan train): {type(exc).__name__}: {msg}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fastgan checkpoint")
    if state.get("format_version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {state.get('format_version')} "
                              f"is not supported (this fastgan reads version {VERSION})")
    missing = [k for k in ("config", "step", "generator", "discriminator") if k not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint (missing {', '.join(missing)})")
    try:
        state["config"] = TrainConfig.from_dict(state["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad config in checkpoint ({exc})") from None
    return state
