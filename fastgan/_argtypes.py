"""argparse types shared by `fastgan` and the benchmark tools (no torch import: the CLI parses
its arguments before loading anything heavy)."""
import argparse
import operator

MAX_SEED = 2**63 - 2  # torch takes 64-bit seeds; the trainer's data order uses seed + 1


def _integer(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text):
    """An integer >= 1 (batch sizes, counts)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def seed(text):
    """A random seed: an integer from 0 to MAX_SEED."""
    value = _integer(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_SEED}, got {value}")
    return value


def as_index(value, option, error=ValueError):
    """value as a Python int when it is an integer of any kind (Python, numpy, a 0-dim tensor:
    operator.index) and not a bool; else error("<option> must be an integer, got ...")."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise error(f"{option} must be an integer, got {value!r}")
