"""Drawing from a generator: the device, the models of a config, the latent noise and labels,
a checkpoint's generator, and `fastgan sample`. The trainer and fastgan.metrics both build on
this module; it imports neither.

    G, cfg, state = load_generator("runs/dcgan-mnist-5k/checkpoint.pt", "cpu")
    z, labels = latent_inputs(cfg, 16, torch.Generator().manual_seed(0), "cpu")
    images = G(z, labels)                  # labels None for unconditional models
"""

import math
import os

import torch

from fastgan._argtypes import MAX_SEED, as_index
from fastgan._options import CONDITIONAL, NUM_CLASSES
from fastgan.models import ModelError, build
from fastgan.train.checkpoint import load_checkpoint, load_module_state
from fastgan.train.config import CheckpointError, ConfigError
from fastgan.train.images import save_grid


def resolve_device(name):
    """torch.device of a --device value (auto: cuda when there is one); ConfigError otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {name}: CUDA is not available (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}); use --device cpu"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return device


def memory_bytes(device):
    """The memory of `device` (a torch.device): a GPU's total, or the machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX: no estimate
        return None


def check_fits(what, nbytes, device):
    """ConfigError when `nbytes` would not fit in the device's memory, before it is allocated (an
    allocator's traceback otherwise)."""
    total = memory_bytes(torch.device(device))
    if total is not None and nbytes > total:
        raise ConfigError(
            f"{what} needs about {nbytes / 2**30:,.1f} GiB, more than the {total / 2**30:,.1f} GiB "
            f"of {torch.device(device).type} memory here"
        )


def build_models(cfg, device="cpu"):
    """(G, D) for a TrainConfig; refused (ConfigError) if their weights, gradients and Adam's
    two moments would not fit in the device's memory (counted on the meta device first)."""

    def make():
        return build(
            cfg.model,
            backend=cfg.backend,
            latent_dim=cfg.latent_dim,
            dropout=cfg.dropout,
            g_widths=cfg.g_widths,
            d_widths=cfg.d_widths,
            g_act=cfg.g_act,
        )

    try:
        with torch.device("meta"):
            n = sum(p.numel() for net in make() for p in net.parameters())
        widths = {k: ",".join(map(str, v)) if v else "default" for k, v in (("g", cfg.g_widths), ("d", cfg.d_widths))}
        check_fits(
            f"{cfg.model} with --latent-dim {cfg.latent_dim}, --g-widths {widths['g']} and --d-widths "
            f"{widths['d']} ({n:,} parameters: float32 weights, gradients and Adam's two moments)",
            16 * n,
            device,
        )
        G, D = make()
    except ModelError as exc:
        raise ConfigError(str(exc)) from None
    return G.to(device), D.to(device)


def noise(n, latent_dim, kind, generator, device):
    """n latent vectors: normal, or uniform in [-1, 1] (kind "uniform")."""
    if kind == "uniform":
        return torch.rand(n, latent_dim, generator=generator, device=device).mul_(2).sub_(1)
    return torch.randn(n, latent_dim, generator=generator, device=device)


def latent_inputs(cfg, n, generator, device, start=0, label=None):
    """(z, labels) for n images of cfg's model: the noise drawn on the CPU from `generator` (the
    same images on every device), then moved to `device`; labels None for unconditional
    models, else `label` for all or each class in turn from image number `start` on."""
    z = noise(n, cfg.latent_dim, cfg.noise, generator, "cpu").to(device)
    if cfg.model not in CONDITIONAL:
        return z, None
    if label is not None:
        labels = torch.full((n,), label, dtype=torch.int64)
    else:
        labels = torch.arange(start, start + n) % NUM_CLASSES
    return z, labels.to(device)


def fixed_inputs(cfg, device, n=None):
    """The fixed noise (and labels) the sample grids are drawn from (same on every device), and
    the grid's columns: (z, labels, columns)."""
    conditional = cfg.model in CONDITIONAL
    n = n or (10 * NUM_CLASSES if conditional else cfg.num_samples)
    z, labels = latent_inputs(cfg, n, torch.Generator().manual_seed(cfg.seed + 12345), device)
    return z, labels, (NUM_CLASSES if conditional else max(1, int(math.sqrt(n))))


def load_generator(checkpoint, device):
    """(G in eval mode, TrainConfig, checkpoint state) of a fastgan checkpoint: what sample and
    fastgan.metrics draw from."""
    state = load_checkpoint(checkpoint, map_location=device)
    cfg = state["config"]
    try:
        G, _ = build_models(cfg, device)
    except ConfigError as exc:  # the options are the checkpoint's, not the user's
        raise CheckpointError(f"{checkpoint}: its config cannot be built here: {exc}") from None
    load_module_state(G, state["generator"], checkpoint, f"{cfg.model} generator")
    return G.eval(), cfg, state


def _integer(option, value):
    return as_index(value, option, ConfigError)


def sample(checkpoint, n=64, label=None, out="samples.png", seed=0, device="cpu"):
    """Draws n images from a checkpoint's generator and writes them as a PNG grid.

    label: a digit 0-9 for conditional models (None: each row 0-9). Returns the images.
    """
    n = _integer("--n", n)
    if n < 1:
        raise ConfigError(f"--n must be a positive integer, got {n}")
    if label is not None:
        label = _integer("--label", label)
    seed = _integer("--seed", seed)
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed must be an integer from 0 to {MAX_SEED}, got {seed}")
    if not os.fspath(out).lower().endswith(".png"):
        raise ConfigError(f"--out must be a .png file name (the grid is written as PNG), got {out!r}")
    device = resolve_device(device)
    G, cfg, _ = load_generator(checkpoint, device)
    conditional = cfg.model in CONDITIONAL
    if label is not None:
        if not conditional:
            raise ConfigError(
                f"--label needs a conditional model ({', '.join(CONDITIONAL)}); {checkpoint} holds {cfg.model}"
            )
        if not 0 <= label < NUM_CLASSES:
            raise ConfigError(f"--label must be a digit 0-{NUM_CLASSES - 1}, got {label}")
    with torch.no_grad():
        pixels = G(*latent_inputs(cfg, 1, torch.Generator(), device, label=label))[0].numel()
    # the images, their grid in float and in bytes (the grid is drawn on the CPU)
    check_fits(f"--n {n}: the grid of {n:,} images", n * pixels * (4 + 4 + 1), "cpu")
    z, labels = latent_inputs(cfg, n, torch.Generator().manual_seed(seed), device, label=label)
    with torch.no_grad():
        images = G(z, labels)
    ncol = NUM_CLASSES if conditional and label is None else max(1, int(math.ceil(math.sqrt(n))))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_grid(images, out, ncol=ncol)
    return images
