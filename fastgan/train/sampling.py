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
from fastgan.models.layers import spectral_norm_layers
from fastgan.models.user import file_sha256, forward, image_of, load_file, prepare
from fastgan.train.auxiliary import codes_of
from fastgan.train.checkpoint import load_checkpoint, load_module_state
from fastgan.train.config import USER_MODEL, CheckpointError, ConfigError
from fastgan.train.images import save_grid
from fastgan.train.superres import superres


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


def build_models(cfg, device="cpu", modules=None, image_shape=None, labels_given=True):
    """(G, D) for a TrainConfig; refused (ConfigError) if their weights, gradients and Adam's
    two moments would not fit in the device's memory (counted on the meta device first). A
    user's pair: see user_models."""
    if cfg.user_model():
        G, D = user_models(cfg, device, modules, image_shape, labels_given)
    else:
        G, D = _fastgan_models(cfg, device)
    if cfg.spectral_norm:
        spectral_norm_layers(D)
    if cfg.spectral_norm_g:
        spectral_norm_layers(G)
    return G, D


def _fastgan_models(cfg, device):

    def make():
        return build(
            cfg.model,
            backend=cfg.backend,
            latent_dim=cfg.latent_dim,
            dropout=cfg.dropout,
            g_widths=cfg.g_widths,
            d_widths=cfg.d_widths,
            g_act=cfg.g_act,
            sr_factor=cfg.sr_factor,
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


def user_models(cfg, device, modules=None, image_shape=None, labels_given=True):
    """(G, D) of a user's pair on `device`, as the step runs them (fastgan.models.user.prepare):
    the modules handed over (cfg.model "user"), or those of the .py file cfg.model. A config
    without a pair yet (a new run) gets one, holding what prepare found (and the file's path and
    sha256); one with a pair (a resumed run, a checkpoint) must still fit it."""
    if cfg.model == USER_MODEL:
        if modules is None:
            raise ConfigError(
                "model 'user': the pair was handed to the trainer (fastgan.fit) and is not stored by name; "
                "give it again (fastgan.fit(G, D, ...), Trainer(..., models=(G, D))), or load the "
                "checkpoint's 'generator' state_dict into your G"
            )
        G, D, source = *modules, {}
    else:
        try:
            G, D = load_file(cfg.model)
        except ModelError as exc:
            raise ConfigError(str(exc)) from None
        source = {"file": os.path.abspath(cfg.model), "sha256": file_sha256(cfg.model)}
    if cfg.pair is not None:
        image_shape = tuple(cfg.pair["image_shape"])
    try:
        pair = prepare(G.to(device), D.to(device), image_shape, labels_given, cfg.convert, latent_dim=cfg.latent_dim)
    except ModelError as exc:
        raise ConfigError(str(exc)) from None
    found = dict(pair.config(), image_shape=list(image_shape or image_of(pair.sample_shape)))
    if cfg.pair is None:
        cfg.pair = dict(found, **source)
        cfg.latent_dim = pair.latent_shape[0]
    else:
        changed = [k for k, v in found.items() if cfg.pair.get(k) != v]
        if changed:
            raise ConfigError(
                f"the pair of {cfg.model} no longer fits its run: "
                + ", ".join(f"{k} {found[k]} (was {cfg.pair.get(k)})" for k in changed)
            )
    return pair.G, pair.D


def model_file_changed(cfg):
    """For a run of a .py model file: (path, sha256 now) when the file is no longer the one its
    checkpoint was trained with; else None."""
    if not (cfg.pair and cfg.pair.get("sha256")) or cfg.model == USER_MODEL:
        return None
    path = cfg.pair.get("file") or cfg.model
    now = file_sha256(path) if os.path.isfile(path) else None
    return None if now == cfg.pair["sha256"] else (path, now)


def noise(n, shape, kind, generator, device):
    """n latent vectors of `shape` (an int or a tuple): normal, or uniform in [-1, 1] (kind "uniform")."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if kind == "uniform":
        return torch.rand(n, *shape, generator=generator, device=device).mul_(2).sub_(1)
    return torch.randn(n, *shape, generator=generator, device=device)


def latent(cfg, n, generator, device, categorical=None):
    """n inputs of cfg's generator drawn from `generator` on `device`: the noise, and for infogan
    its codes joined on (categorical (n,) where given, else drawn; see LatentCodes.attach); for
    stackgan the eps of its conditioning augmentation after the noise, from N(0, 1) whatever
    --noise is."""
    z = noise(n, cfg.latent_shape(), cfg.noise, generator, device)
    extra = cfg.latent_extra()
    if extra:
        z = torch.cat([z, torch.randn(n, extra, generator=generator, device=device)], dim=1)
    codes = codes_of(cfg)
    return z if codes is None else codes.attach(z, generator, categorical)


def test_pairs(cfg, n, generator):
    """discogan: n pairs (n, 2, 28, 28) in [-1, 1] of its domains' test images (fastgan.data.domains;
    A's and B's drawn independently from `generator`, with repeats only when n exceeds a split)."""
    from fastgan.data.domains import load_domain
    from fastgan.data.loader import scale_images

    picked = []
    for name in cfg.domain_spec().split(":"):
        images, _ = load_domain(name, cfg.data_dir, train=False)
        index = torch.cat([torch.randperm(len(images), generator=generator) for _ in range(-(-n // len(images)))])
        picked.append(images[index[:n]])
    return scale_images(torch.stack(picked, dim=1))


def translation_grid(G, x):
    """discogan's figure for pairs x (n, 2, 28, 28): six rows of n images: A, G_AB(A),
    G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B))."""
    fake, back = G.cycle(x)
    rows = (x[:, :1], fake[:, 1:], back[:, :1], x[:, 1:], fake[:, :1], back[:, 1:])
    return torch.cat(rows, dim=0)


def run_generator(G, cfg, z, labels=None):
    """G's images (N, C, H, W) for (z, labels): a user's G that makes flat images gets them back
    in the data's shape. discogan: z is pairs of test images, the images translation_grid's."""
    if cfg.discogan():
        return translation_grid(G, z)
    x = forward(G, z, labels)
    shape = cfg.image_shape()
    return x if tuple(x.shape[1:]) == shape else x.reshape(x.shape[0], *shape)


def latent_inputs(cfg, n, generator, device, start=0, label=None):
    """(z, labels) for n images of cfg's model: the noise drawn on the CPU from `generator` (the
    same images on every device), then moved to `device`; labels None for unconditional
    models, else `label` for all or each class in turn from image number `start` on. infogan
    takes no labels: `label`, or each value in turn, is its categorical code, inside z."""
    if cfg.discogan():  # its generators translate test images
        return test_pairs(cfg, n, generator).to(device), None
    if label is not None:
        labels = torch.full((n,), label, dtype=torch.int64)
    else:
        labels = torch.arange(start, start + n) % NUM_CLASSES
    if codes_of(cfg) is not None:
        return latent(cfg, n, generator, "cpu", categorical=labels).to(device), None
    z = latent(cfg, n, generator, "cpu").to(device)
    if not cfg.conditional():
        return z, None
    return z, labels.to(device)


def fixed_inputs(cfg, device, n=None):
    """The fixed noise (and labels) the sample grids are drawn from (same on every device), and
    the grid's columns: (z, labels, columns)."""
    by_class = cfg.conditional() or codes_of(cfg) is not None  # a column per label (infogan: per code)
    n = n or (10 * NUM_CLASSES if by_class else 10 if cfg.discogan() else cfg.num_samples)
    z, labels = latent_inputs(cfg, n, torch.Generator().manual_seed(cfg.seed + 12345), device)
    return z, labels, (NUM_CLASSES if by_class or cfg.discogan() else max(1, int(math.sqrt(n))))


def load_generator(checkpoint, device, ema=True):
    """(G in eval mode, TrainConfig, checkpoint state) of a fastgan checkpoint: what sample and
    fastgan.metrics draw from. ema: the average of G's weights where the run kept one (--ema;
    False: G itself)."""
    state = load_checkpoint(checkpoint, map_location=device)
    cfg = state["config"]
    try:
        G, _ = build_models(cfg, device)
    except ConfigError as exc:  # the options are the checkpoint's, not the user's
        raise CheckpointError(f"{checkpoint}: its config cannot be built here: {exc}") from None
    averaged = ema and state.get("generator_ema") is not None and state["step"] >= cfg.ema_start
    key = "generator_ema" if averaged else "generator"
    load_module_state(G, state[key], checkpoint, f"{cfg.model} generator{' (EMA)' if averaged else ''}")
    return G.eval(), cfg, state


def _integer(option, value):
    return as_index(value, option, ConfigError)


def sample(checkpoint, n=64, label=None, out="samples.png", seed=0, device="cpu", ema=True):
    """Draws n images from a checkpoint's generator and writes them as a PNG grid.

    label: a digit 0-9 for conditional models (None: each row 0-9). discogan: n pairs of test
    images (drawn by `seed`), translated both ways and back: six rows of n (translation_grid). ema: from the average of
    G's weights where the run kept one (--ema). Returns the images.
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
    G, cfg, _ = load_generator(checkpoint, device, ema=ema)
    if superres(cfg):
        raise ConfigError(
            f"{checkpoint} holds srgan, which super-resolves images rather than draw them: "
            "fastgan.metrics.sample_superres (fastgan sample) or upsample_file (fastgan sample --input)"
        )
    conditional = cfg.conditional() or codes_of(cfg) is not None  # infogan: --label is the categorical code
    if label is not None:
        if not conditional:
            raise ConfigError(
                f"--label needs a conditional model ({', '.join(CONDITIONAL)}) or infogan (its categorical "
                f"code); {checkpoint} holds {cfg.model}"
            )
        if not 0 <= label < NUM_CLASSES:
            raise ConfigError(f"--label must be a digit 0-{NUM_CLASSES - 1}, got {label}")
    with torch.no_grad():
        pixels = math.prod(cfg.image_shape())
    # the images, their grid in float and in bytes (the grid is drawn on the CPU)
    check_fits(f"--n {n}: the grid of {n:,} images", n * pixels * (4 + 4 + 1), "cpu")
    z, labels = latent_inputs(cfg, n, torch.Generator().manual_seed(seed), device, label=label)
    with torch.no_grad():
        images = run_generator(G, cfg, z, labels)
    ncol = NUM_CLASSES if conditional and label is None else max(1, int(math.ceil(math.sqrt(n))))
    if cfg.discogan():  # a column per test pair: A, G_AB(A), back; B, G_BA(B), back
        ncol = n
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_grid(images, out, ncol=ncol)
    return images


def traverse(checkpoint, code=0, out="traverse.png", seed=0, device="cpu", ema=True, columns=10, span=2.0):
    """InfoGAN's figure (Chen et al. 2016, Fig. 2): a grid whose rows are the categorical code's
    values and whose columns sweep continuous code `code` from -span to span (the other
    continuous codes 0), all from one noise vector z (drawn from `seed`), so that each change
    across the grid is a code's. Written as a PNG; returns the images (rows * columns)."""
    code, seed, columns = _integer("--code", code), _integer("--seed", seed), _integer("--columns", columns)
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed must be an integer from 0 to {MAX_SEED}, got {seed}")
    if columns < 2:
        raise ConfigError(f"--columns must be at least 2 (the sweep's two ends), got {columns}")
    if not os.fspath(out).lower().endswith(".png"):
        raise ConfigError(f"--out must be a .png file name (the grid is written as PNG), got {out!r}")
    device = resolve_device(device)
    G, cfg, _ = load_generator(checkpoint, device, ema=ema)
    codes = codes_of(cfg)
    if codes is None:
        raise ConfigError(
            f"--traverse sweeps InfoGAN's codes: it needs an infogan checkpoint; {checkpoint} holds {cfg.model}"
        )
    if not 0 <= code < codes.continuous:
        raise ConfigError(f"--code must be a continuous code from 0 to {codes.continuous - 1}, got {code}")
    rows = codes.categories
    z = noise(1, cfg.latent_shape(), cfg.noise, torch.Generator().manual_seed(seed), "cpu").expand(rows * columns, -1)
    categorical = torch.arange(rows).repeat_interleave(columns)
    continuous = torch.zeros(rows * columns, codes.continuous)
    continuous[:, code] = torch.linspace(-span, span, columns).repeat(rows)
    with torch.no_grad():
        images = run_generator(G, cfg, codes.attach(z, None, categorical, continuous).to(device))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_grid(images, out, ncol=columns)
    return images
