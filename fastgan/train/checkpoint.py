"""Checkpoints: models, optimizers, RNG states, step, history and config in one file.

Written to a temporary name and renamed (an interrupted save never damages the previous
checkpoint); read with torch.load(weights_only=True): tensors, numbers, strings, lists and
dicts only, no pickled code. load_checkpoint checks the content too (a valid torch file with
the wrong things inside is a CheckpointError naming the field, not a traceback later on: see
checkpoint_checks).
"""

import os
from collections.abc import Mapping

import torch

from fastgan._files import atomic_torch_save
from fastgan.train.checkpoint_checks import check_content, compact_load_error, load_config, read_error
from fastgan.train.config import CheckpointError

FORMAT = "fastgan-checkpoint"
VERSION = 1


def save_checkpoint(state, path):
    """Writes `state` (a dict) to path atomically."""
    return atomic_torch_save(dict(state, format=FORMAT, format_version=VERSION), path)


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint dict at path, with its config as a validated TrainConfig; CheckpointError
    if the file is missing, unreadable, not a fastgan checkpoint, or holds a field of the
    wrong kind (config, step, generator, discriminator; opt_g, opt_d, history, rng,
    train_seconds, evals when present)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointError(read_error(path, exc)) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fastgan checkpoint")
    if state.get("format_version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {state.get('format_version')} "
            f"is not supported (this fastgan reads version {VERSION})"
        )
    missing = [k for k in ("config", "step", "generator", "discriminator") if k not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint (missing {', '.join(missing)})")
    state["config"] = load_config(path, state["config"])
    check_content(path, state)
    return state


def load_module_state(module, state_dict, path, what):
    """module.load_state_dict(state_dict) (strict); weights that do not fit the module (missing
    or unexpected keys, size mismatches) are a CheckpointError naming path and `what` (e.g.
    "generator") with torch's whole explanation, compacted to a few lines. Returns module."""
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{path}: the {what} weights are a {type(state_dict).__name__}, not a dict of tensors")
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as exc:
        detail = compact_load_error(str(exc))
        sep = "" if detail.startswith("\n") else " "
        raise CheckpointError(f"{path}: the {what} weights do not fit this model:{sep}{detail}") from None
    return module
