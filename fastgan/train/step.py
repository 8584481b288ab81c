"""One full GAN training step as a callable: what `fastgan bench train` times and what the
trainer runs, with or without a CUDA graph.

    step = make_step("mlp", batch_size=64)      # fastgan models + fused Adam, graph on CUDA
    losses = step()                              # one D step and one G step; (2,) tensor
"""
import torch

from fastgan import _extension
from fastgan.data.loader import scale_images
from fastgan.models import CONDITIONAL, build
from fastgan.optim import Adam as FusedAdam
from fastgan.train.graph import GraphedStep

PRECISIONS = ("fp32", "bf16")
AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16}   # the forward passes' autocast dtype


def amp_dtype(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return AMP_DTYPES[precision]


class DeviceBatches:
    """Batches gathered on the device by a device-side step counter, so that the gather can
    live inside a CUDA graph: perm holds this epoch's order as (steps, batch_size) rows, and
    each next() takes row `index` and advances index (wrapping at the end of the epoch).

    The uint8 images are scaled to [-1, 1] in `dtype` once, here, so that a step's gather is one
    kernel rather than a gather, a conversion and two arithmetic passes (4x the memory of the
    uint8 images: 188 MB for 60,000 MNIST images in float32).
    """

    def __init__(self, images, labels, batch_size, generator, dtype=torch.float32):
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (0-255), got {images.dtype}")
        images = images if images.dim() == 4 else images.unsqueeze(1)
        self.images = scale_images(images, dtype)
        self.labels = labels
        self.batch_size = int(batch_size)
        self.steps = self.images.shape[0] // self.batch_size
        if self.steps < 1:
            raise ValueError(f"batch size {batch_size} is larger than the dataset "
                             f"({self.images.shape[0]} images)")
        self.generator = generator
        device = self.images.device
        # in dataset order until new_epoch() (constructing draws nothing from the generator)
        self.perm = torch.arange(self.steps * self.batch_size, device=device).view(self.steps, self.batch_size)
        self.index = torch.zeros(1, dtype=torch.int64, device=device)

    def new_epoch(self, perm=None):
        """Starts an epoch in the order `perm` (default: a fresh permutation from the generator)."""
        if perm is None:
            perm = torch.randperm(self.images.shape[0], generator=self.generator, device=self.images.device)
        self.perm.copy_(perm[: self.steps * self.batch_size].view(self.steps, self.batch_size))
        self.index.zero_()

    def next(self, labels=True):
        """(images in [-1, 1], labels) of the next batch (labels None when not asked for);
        device work only, no host sync."""
        rows = self.perm.index_select(0, self.index).view(-1)
        self.index.add_(1).remainder_(self.steps)
        return self.images.index_select(0, rows), self.labels.index_select(0, rows) if labels else None


def build_step(G, D, opt_g, opt_d, batches, noise_fn, conditional, grad_clip=None, cuda_graph=False,
               generators=(), precision="fp32"):
    """A callable running one training step on the next batch: train_step wrapped with the
    batch gather and the noise, captured in a CUDA graph when cuda_graph is True."""
    amp = amp_dtype(precision)
    from fastgan.train.trainer import d_pass_mergeable, train_step

    one_pass = d_pass_mergeable(D)
    grad_seed = torch.ones((), device=batches.images.device)   # the losses are float32

    def step():
        real, labels = batches.next(labels=conditional)
        z = noise_fn()
        return train_step(G, D, opt_g, opt_d, real, labels, z, grad_clip, one_pass, amp_dtype=amp,
                          grad_seed=grad_seed)

    return GraphedStep(step, generators=generators) if cuda_graph else step


def to_layout(G, D, channels_last):
    """G and D with their 4-d weights (convolutions) in channels_last when asked: cuDNN then runs
    its NHWC kernels on them directly instead of transposing every NCHW activation in and out.
    The math is the same; MLPs have no 4-d weights and are unchanged."""
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    return G, D


def make_optimizers(G, D, device, kind="adam", lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), cuda_graph=False,
                    fused_adam=None):
    """(opt_g, opt_d). Adam is fastgan.optim.Adam (one launch over all of a network's parameters,
    step count on the device: capturable), except on the CPU without the compiled kernels, where
    torch.optim.Adam is faster than the reference path; fused_adam=True/False overrides. RMSprop
    is torch's, capturable when the step runs in a CUDA graph."""
    cuda = torch.device(device).type == "cuda"
    if kind == "rmsprop":
        kw = dict(capturable=True) if cuda_graph else {}
        return torch.optim.RMSprop(G.parameters(), lr=lr_g, **kw), torch.optim.RMSprop(D.parameters(), lr=lr_d, **kw)
    fused = (cuda or _extension.available) if fused_adam is None else fused_adam
    cls = FusedAdam if fused else torch.optim.Adam
    return cls(G.parameters(), lr=lr_g, betas=betas), cls(D.parameters(), lr=lr_d, betas=betas)


def make_step(model, batch_size, device="cuda", cuda_graph=None, precision="fp32", backend="fastgan",
              seed=0, images=None, labels=None, channels_last=False, fused_adam=None):
    """Builds a model pair with its optimizers on device and returns a callable that runs one
    full training step (D step then G step) on the next batch of a device-resident dataset.

    images/labels: a uint8 (N, [1,] 28, 28) dataset and its (N,) labels (labels may be left out
    for an unconditional model); default, a random synthetic one (the step's cost does not depend on the pixels). cuda_graph: None means
    "on CUDA, yes". precision: "fp32", or "bf16" for the forward passes under bfloat16
    autocast (see train_step). channels_last: convolution weights (and so the DCGAN's
    activations) in channels_last memory format (see to_layout). fused_adam: fastgan.optim.Adam
    or torch.optim.Adam (default: see make_optimizers). The callable has .G, .D, .opt_g, .opt_d and .batches attributes.
    """
    device = torch.device(device)
    amp_dtype(precision)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"make_step: device {str(device)!r} needs a CUDA GPU, and torch sees none "
                         "(torch.cuda.is_available() is False); pass device='cpu'")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"make_step: batch_size must be a positive integer, got {batch_size!r}")
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    if cuda_graph and device.type != "cuda":
        raise ValueError("cuda_graph=True needs a CUDA device")
    torch.manual_seed(seed)
    G, D = build(model, backend=backend)
    G, D = to_layout(G.to(device).train(), D.to(device).train(), channels_last)
    opt_g, opt_d = make_optimizers(G, D, device, cuda_graph=cuda_graph, fused_adam=fused_adam)
    if images is None:
        gen = torch.Generator().manual_seed(seed)
        n = max(16 * batch_size, 4096)
        images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
        labels = torch.randint(0, 10, (n,), generator=gen)
    elif labels is None:
        if model in CONDITIONAL:
            raise ValueError(f"make_step: {model} is conditional: give labels with images")
        labels = torch.zeros(images.shape[0], dtype=torch.int64)   # never read by an unconditional step
    data_gen = torch.Generator(device=device).manual_seed(seed + 1)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 2)
    batches = DeviceBatches(images.to(device), labels.to(device), batch_size, data_gen)
    batches.new_epoch()
    latent = G.latent_dim

    def noise():
        return torch.randn(batch_size, latent, generator=noise_gen, device=device)

    step = build_step(G, D, opt_g, opt_d, batches, noise, model in CONDITIONAL, cuda_graph=cuda_graph,
                      generators=(noise_gen,) if cuda_graph else (), precision=precision)
    holder = _Step(step, G=G, D=D, opt_g=opt_g, opt_d=opt_d, batches=batches, noise_generator=noise_gen)
    return holder


class _Step:
    """The step callable plus the objects it trains (for benchmarks and tests)."""

    def __init__(self, fn, **parts):
        self.fn = fn
        self.__dict__.update(parts)

    def __call__(self):
        return self.fn()
