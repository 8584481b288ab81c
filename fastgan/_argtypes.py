"""argparse types shared by `fastgan` and the benchmark tools (no torch import: the CLI parses
its arguments before loading anything heavy)."""

import argparse
import operator

MAX_SEED = 2**63 - 2  # torch takes 64-bit seeds; the trainer's data order uses seed + 1
EXIT_FAILED = 1  # the work failed (training diverged)
EXIT_USAGE = 2  # bad input: a one-line message on stderr
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM


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


def widths(text):
    """Comma-separated positive integers (layer widths, channel counts)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return values


def model_or_file(names):
    """An argparse type for --model: one of `names`, or a user's .py model file (read when the
    command starts)."""

    def model(value):
        if value in names or value.endswith(".py"):
            return value
        raise argparse.ArgumentTypeError(
            f"invalid choice: {value!r} (choose from {', '.join(names)}, or give a FILE.py)"
        )

    return model


def output(suffix=None, folder=False):
    """An argparse type for a path fastgan will write: checked before the work that fills it."""

    def check(text):
        from fastgan._files import output_problem

        if suffix and not text.lower().endswith(suffix):
            raise argparse.ArgumentTypeError(f"must be a {suffix} file name, got {text!r}")
        problem = output_problem(text, folder=folder)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return text

    return check


def add_objective_options(group):
    """The objective and its stabilizers (TrainConfig's loss, gp, r1, r1_every, n_critic,
    spectral_norm, spectral_norm_g, ema, ema_start), for `fastgan train` and `fastgan bench
    quality`. Options not given stay out of the namespace (argparse.SUPPRESS)."""
    from fastgan._options import CHOICES

    s = argparse.SUPPRESS
    group.add_argument("--loss", choices=list(CHOICES["loss"].names()), default=s, help=CHOICES["loss"].describe())
    group.add_argument("--gp", type=float, default=s, help="WGAN-GP weight (e.g. 10; default 0: off)")
    group.add_argument("--r1", type=float, default=s, help="R1 penalty gamma on D's real images (e.g. 10; default 0)")
    group.add_argument(
        "--r1-every", type=positive_int, default=s, help="lazy R1: every K steps, K times as strong (default 1)"
    )
    group.add_argument("--n-critic", type=positive_int, default=s, help="D steps per G step (WGAN-GP: 5; default 1)")
    group.add_argument(
        "--spectral-norm", action="store_true", default=s, help="spectral normalization of D's weight layers"
    )
    group.add_argument("--spectral-norm-g", action="store_true", default=s, help="...and of G's")
    group.add_argument(
        "--ema",
        type=float,
        default=s,
        help="keep an exponential moving average of G's weights with this decay (e.g. 0.999)",
    )
    group.add_argument("--ema-start", type=int, default=s, help="the step from which the average runs (default 0)")


OBJECTIVE_OPTIONS = ("loss", "gp", "r1", "r1_every", "n_critic", "spectral_norm", "spectral_norm_g", "ema", "ema_start")
