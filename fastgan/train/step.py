"""One full GAN training step: the step's math (train_step), and the callable that the trainer
runs and `fastgan bench train` times, with or without a CUDA graph.

    step = make_step("mlp", batch_size=64)      # fastgan models + fused Adam, graph on CUDA
    losses = step()                              # one D step and one G step; (2,) tensor
    step = make_step((G, D), batch_size=64, images=x)   # a user's torch.nn pair, converted

train_step() is a plain function of (models, optimizers, batch, noise) with no host syncs, so
that it can be captured (torch.compile, CUDA graphs).
"""

import contextlib
import functools
from dataclasses import dataclass

import torch

from fastgan import _extension, ops
from fastgan._options import CONDITIONAL, MODELS, NUM_CLASSES, check_choice
from fastgan.data.loader import DeviceLoader
from fastgan.models import build
from fastgan.models.user import forward, image_of, prepare
from fastgan.optim import Adam as FusedAdam
from fastgan.train.auxiliary import ClassHead, DiscoHead, InfoHead, StackHead, head_of
from fastgan.train.graph import GraphedStep
from fastgan.train.head import PLAIN, Head, StepBatch
from fastgan.train.pyramid import PyramidInput
from fastgan.train.superres import ContentLoss

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # the forward passes' autocast dtype


def amp_dtype(precision):
    return AMP_DTYPES[check_choice("precision", precision)]


def autocast(device_type, amp_dtype):
    """The forward passes' mixed-precision context (amp_dtype None: a no-op). The cast cache is
    off so that the step can be captured in a CUDA graph."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=amp_dtype, cache_enabled=False)


@dataclass(frozen=True)
class Objective:
    """What a step optimizes beyond the default: the loss (ops.gan_d_loss/gan_g_loss's kind), the
    penalties added to D's loss, D steps per G step, and the model's head (fastgan.train.head:
    what the step makes of the batch, of G's and D's outputs, and the losses it adds; acgan,
    infogan, stackgan, discogan: fastgan.train.auxiliary; srgan: superres.ContentLoss; lapgan:
    pyramid.PyramidInput). Objective() is the non-saturating BCE step, unchanged."""

    loss: str = "bce"
    gp: float = 0.0  # WGAN-GP weight: gp * mean((|grad D(x_hat)| - 1)^2), x_hat between real and fake
    r1: float = 0.0  # R1 gamma: r1 / 2 * mean |grad D(real)|^2
    n_critic: int = 1
    head: Head = PLAIN

    @property
    def penalized(self):
        return self.gp > 0 or self.r1 > 0

    @classmethod
    def of(cls, cfg):
        return cls(cfg.loss, cfg.gp, cfg.r1, cfg.n_critic, head_of(cfg))


DEFAULT_OBJECTIVE = Objective()


@dataclass(frozen=True)
class Settings:
    """How every step of a run goes (train_step's arguments that are not the batch): see train_step.
    amp is the forward passes' autocast context (a callable returning a context manager)."""

    grad_clip: float | None = None
    one_d_pass: bool = False
    amp: object = contextlib.nullcontext
    grad_seed: torch.Tensor | None = None
    objective: Objective = DEFAULT_OBJECTIVE
    uniform: object = None
    grad_reduce: object = None


def _loss_input(logits):
    """Logits as the losses take them: float32 from an autocast (bfloat16) forward, else as they
    are (float32, or float64 in a float64 check; None stays None)."""
    return logits.float() if logits is not None and logits.dtype in (torch.bfloat16, torch.float16) else logits


def _d_loss(real_logits, fake_logits, kind):
    if kind == "bce":  # the existing op's call, as fast as before
        return ops.gan_d_loss(real_logits, fake_logits)
    return ops.gan_d_loss(real_logits, fake_logits, kind=kind)


def _g_loss(fake_logits, kind):
    return ops.gan_g_loss(fake_logits) if kind == "bce" else ops.gan_g_loss(fake_logits, kind=kind)


def _grad_of(out, x):
    """d sum(out) / dx, kept differentiable (create_graph): the penalty's own gradient runs
    through D's backward (fastgan's ops have second-order gradients)."""
    (grad,) = torch.autograd.grad(_loss_input(out).sum(), x, create_graph=True)
    return grad.flatten(1)


def gradient_penalty(D, real, fake, labels, eps, head=PLAIN):
    """WGAN-GP's mean((|grad_x D(x_hat)|_2 - 1)^2), x_hat = eps * real + (1 - eps) * fake per image
    (eps: (N,) uniform in [0, 1)); of the adversarial logit where D has an auxiliary head. Where
    D is two critics, column j of its output judging channel j of its input (stackgan, discogan:
    head.critic_per_channel), each critic's penalty, averaged."""
    eps = eps.view(-1, *[1] * (real.dim() - 1)).to(real.dtype)
    x_hat = torch.lerp(fake.detach(), real, eps).requires_grad_(True)
    grad = _grad_of(head.split(forward(D, x_hat, labels))[0], x_hat)
    if head.critic_per_channel:  # stackgan, discogan: one norm per critic, averaged
        grad = grad.view(grad.shape[0], x_hat.shape[1], -1)
        return (torch.linalg.vector_norm(grad, dim=2) - 1).square().mean()
    return (torch.linalg.vector_norm(grad, dim=1) - 1).square().mean()


def _d_labels(labels, head):
    """The labels D is given: none where its head predicts them (acgan)."""
    return labels if head.d_labels else None


def d_step(D, opt_d, batch, fake, how=Settings()):
    """One D update on the real batch (a StepBatch) and (detached) fake images: real -> 1, fake
    -> 0 (loss how.objective.loss, plus its penalties and its head's loss); returns D's loss
    (detached), no sync. how.grad_reduce(D): data-parallel training's gradient average over the
    ranks, before clipping and the optimizer."""
    objective, amp = how.objective, how.amp
    head = objective.head
    d_labels = _d_labels(batch.labels, head)
    real = head.real_input(batch.real)
    with amp():
        if objective.r1:
            real = real.detach().requires_grad_(True)
        if how.one_d_pass and not objective.penalized:
            both = torch.cat([d_labels, d_labels]) if d_labels is not None else None
            real_out, fake_out = forward(D, torch.cat([real, fake.detach()]), both).split(real.shape[0])
        else:
            real_out, fake_out = forward(D, real, d_labels), forward(D, fake.detach(), d_labels)
    (real_logits, real_aux), (fake_logits, fake_aux) = head.split(real_out), head.split(fake_out)
    total = _d_loss(_loss_input(real_logits), _loss_input(fake_logits), objective.loss)
    head_loss = head.d_loss(_loss_input(real_aux), _loss_input(fake_aux), batch)
    if head_loss is not None:
        total = total + head_loss
    if objective.r1:
        total = total + (objective.r1 / 2) * _grad_of(real_logits, real).square().sum(1).mean()
    if objective.gp:
        with amp():
            eps = how.uniform(real.shape[0])
            total = total + objective.gp * gradient_penalty(D, real, fake, d_labels, eps, head)
    opt_d.zero_grad(set_to_none=True)
    total.backward(how.grad_seed)
    _update(D, opt_d, how)
    return total.detach()


def _update(net, opt, how):
    """net's optimizer step on its gradients: averaged over the ranks (data-parallel), clipped."""
    if how.grad_reduce is not None:
        how.grad_reduce(net)
    if how.grad_clip:
        torch.nn.utils.clip_grad_norm_(net.parameters(), how.grad_clip, foreach=True)
    opt.step()


def g_step(G, D, opt_g, batch, fake, how=Settings()):
    """One G update: make the updated D call the fakes real (loss how.objective.loss), as G's
    loss its head makes of that (acgan, infogan: plus their heads' losses; stackgan, discogan:
    plus the KL / reconstruction term in batch.extra; srgan: weighted with the content loss
    against batch.real). D's weights need no gradient here (only those that had one get it
    back: a parameter the user froze stays frozen). Returns G's loss (detached), no sync."""
    head = how.objective.head
    trainable = [p for p in D.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        with how.amp():
            fake_logits, fake_aux = head.split(forward(D, fake, _d_labels(batch.labels, head)))
        adv_loss = _g_loss(_loss_input(fake_logits), how.objective.loss)
        g_loss = head.g_loss(adv_loss, _loss_input(fake_aux), _loss_input(fake), batch)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward(how.grad_seed)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    _update(G, opt_g, how)
    return g_loss.detach()


def step_on(G, D, opt_g, opt_d, real, labels, z, how):
    """train_step with its settings made (build_step makes them once): D's step then G's on the
    fakes G made of z (head.generate), one generator forward for both."""
    with how.amp():
        fake, extra = how.objective.head.generate(G, z, labels, real)
    batch = StepBatch(real, labels, z, extra)
    d_loss = d_step(D, opt_d, batch, fake, how)
    return torch.stack([d_loss, g_step(G, D, opt_g, batch, fake, how)])


def train_step(
    G,
    D,
    opt_g,
    opt_d,
    real,
    labels,
    z,
    grad_clip=None,
    one_d_pass=False,
    amp_dtype=None,
    grad_seed=None,
    objective=DEFAULT_OBJECTIVE,
    uniform=None,
    grad_reduce=None,
):
    """One D step then one G step (d_step, g_step; the non-saturating loss unless `objective`
    says otherwise). Returns the detached losses as a
    (2,) tensor [d_loss, g_loss] without synchronizing. labels: None for unconditional models.
    real and z are the batch and G's input as the objective's head takes them (Head.batch).

    one_d_pass: run D once on cat(real, fake) instead of twice; the same math where every
    sample's logit depends on that sample alone (no batch norm, no dropout in D:
    see d_pass_mergeable), with half the D kernels.
    amp_dtype: torch.bfloat16 runs G's and D's forward passes under autocast (matrix products
    and activations in bfloat16); the parameters, their gradients and the optimizer stay
    float32, batch-norm statistics are accumulated in float32, and the losses are computed
    in float32 from the logits.
    grad_seed: a 0-dim tensor of 1 in the losses' dtype, made once by the caller: each backward
    pass starts from it instead of from a fresh ones_like (one fill kernel per pass).
    objective: the loss kind, D's penalties and the model's head (Objective; D's loss returned
    includes them); uniform(n): n uniform numbers on the device, for --gp's interpolates.
    grad_reduce(module): averages module's gradients over data-parallel ranks (None: one rank).
    """
    amp = functools.partial(autocast, real.device.type, amp_dtype)
    how = Settings(grad_clip, one_d_pass, amp, grad_seed, objective, uniform, grad_reduce)
    return step_on(G, D, opt_g, opt_d, real, labels, z, how)


def d_pass_mergeable(D):
    """True when D treats each sample on its own (no batch norm, no active dropout), so one
    pass over cat(real, fake) computes exactly what two passes do. Only D's made of known
    modules qualify: a user's forward code could mix the samples (a minibatch standard
    deviation) in ways no module list shows."""
    known = all(type(m).__module__.startswith(("torch.nn.", "fastgan.")) for m in D.modules())
    return known and not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        or (isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0)
        for m in D.modules()
    )


def build_step(
    G,
    D,
    opt_g,
    opt_d,
    batches,
    noise_fn,
    conditional,
    grad_clip=None,
    cuda_graph=False,
    generators=(),
    precision="fp32",
    objective=DEFAULT_OBJECTIVE,
    ema=None,
    uniform=None,
    grad_reduce=None,
):
    """A callable running one training step on the next batch: train_step wrapped with the
    batch gather and the noise, captured in a CUDA graph when cuda_graph is True. objective:
    see Objective (n_critic > 1: that many D steps, each on its own batch and noise, the last
    one followed by the G step); ema: a GeneratorEMA updated after G's step; uniform and
    grad_reduce: see train_step."""
    amp = functools.partial(autocast, batches.images.device.type, amp_dtype(precision))
    grad_seed = torch.ones((), device=batches.images.device)  # the losses are float32
    how = Settings(grad_clip, d_pass_mergeable(D), amp, grad_seed, objective, uniform, grad_reduce)
    head = objective.head

    def critic():
        real, labels = batches.next(labels=conditional)
        real, z = head.batch(real, noise_fn)
        with torch.no_grad(), amp():
            fake = head.generate(G, z, labels, real)[0]
        d_step(D, opt_d, StepBatch(real, labels, z), fake, how)

    def step():
        for _ in range(objective.n_critic - 1):
            critic()
        real, labels = batches.next(labels=conditional)
        real, z = head.batch(real, noise_fn)
        losses = step_on(G, D, opt_g, opt_d, real, labels, z, how)
        if ema is not None:
            ema.update()
        return losses

    return GraphedStep(step, generators=generators) if cuda_graph else step


def to_layout(G, D, channels_last):
    """G and D with their 4-d weights (convolutions) in channels_last when asked: cuDNN then runs
    its NHWC kernels on them directly instead of transposing every NCHW activation in and out.
    The math is the same; MLPs have no 4-d weights and are unchanged."""
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    return G, D


def make_optimizers(
    G, D, device, kind="adam", lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), cuda_graph=False, fused_adam=None
):
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


def make_step(
    model,
    batch_size,
    device="cuda",
    cuda_graph=None,
    precision="fp32",
    backend="fastgan",
    seed=0,
    images=None,
    labels=None,
    channels_last=False,
    fused_adam=None,
    convert=True,
):
    """Builds a model pair with its optimizers on device and returns a callable that runs one
    full training step (D step then G step) on the next batch of a device-resident dataset.

    model: a fastgan model name, or a user's (G, D) pair of torch.nn modules, run as
    fastgan.convert's copies (convert=False: as they are; see fastgan.models.user.prepare:
    a D ending in nn.Sigmoid is trained on its logits). images/labels: a uint8 (N, [C,] H, W)
    dataset and its (N,) labels (labels may be left out for an unconditional model); default,
    a random synthetic one of G's image size (the step's cost does not depend on the pixels).
    cuda_graph: None means "on CUDA, yes". precision: "fp32", or "bf16" for the forward passes
    under bfloat16 autocast (see train_step). channels_last: convolution weights (and so the
    DCGAN's activations) in channels_last memory format (see to_layout). fused_adam:
    fastgan.optim.Adam or torch.optim.Adam (default: see make_optimizers). The callable has
    .G, .D, .opt_g, .opt_d and .batches (the DeviceLoader) attributes (.pair for a user's).
    """
    device = torch.device(device)
    amp_dtype(precision)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"make_step: device {str(device)!r} needs a CUDA GPU, and torch sees none "
            "(torch.cuda.is_available() is False); pass device='cpu'"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"make_step: batch_size must be a positive integer, got {batch_size!r}")
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    if cuda_graph and device.type != "cuda":
        raise ValueError("cuda_graph=True needs a CUDA device")
    if images is not None and images.dim() == 3:
        images = images.unsqueeze(1)
    pair, codes, objective = None, None, DEFAULT_OBJECTIVE
    if isinstance(model, str):
        torch.manual_seed(seed)
        G, D = build(model, backend=backend)
        G, D = G.to(device), D.to(device)
        conditional, image_shape = model in CONDITIONAL, (1, 28, 28)
        latent_shape = G.input_shape if MODELS[model].superres else (G.latent_dim,)
        codes = getattr(G, "codes", None)  # infogan: noise + codes
        if codes is not None:
            latent_shape, objective = (codes.noise_dim,), Objective(head=InfoHead(codes))
        elif MODELS[model].aux == "acgan":
            objective = Objective(head=ClassHead())
        elif MODELS[model].aux == "stackgan":
            objective = Objective(head=StackHead())
        elif MODELS[model].aux == "discogan":  # the batch: pairs of domains
            objective, image_shape = Objective(head=DiscoHead()), (2, 28, 28)
        elif MODELS[model].superres:  # G's input: the batch downsampled; pixel content loss (no classifier here)
            objective = Objective(head=ContentLoss(G.factor, 0.0))
        elif MODELS[model].pyramid:
            objective = Objective(head=PyramidInput())
    else:
        if not (isinstance(model, (tuple, list)) and len(model) == 2):
            raise ValueError(f"make_step: model must be a model name or a (G, D) pair, got {type(model).__name__}")
        pair = prepare(
            model[0].to(device),
            model[1].to(device),
            None if images is None else tuple(images.shape[1:]),
            labels_given=images is None or labels is not None,
            convert=convert,
        )
        G, D, conditional, latent_shape = pair.G, pair.D, pair.conditional, pair.latent_shape
        image_shape = image_of(pair.sample_shape) if images is None else tuple(images.shape[1:])
    G, D = to_layout(G.train(), D.train(), channels_last)
    opt_g, opt_d = make_optimizers(G, D, device, cuda_graph=cuda_graph, fused_adam=fused_adam)
    if images is None:
        gen = torch.Generator().manual_seed(seed)
        n = max(16 * batch_size, 4096)
        images = torch.randint(0, 256, (n, *image_shape), dtype=torch.uint8, generator=gen)
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    elif labels is None:
        if conditional:
            raise ValueError(
                f"make_step: {model if pair is None else 'the pair'} is conditional: give labels with images"
            )
        labels = torch.zeros(images.shape[0], dtype=torch.int64)  # never read by an unconditional step
    data_gen = torch.Generator(device=device).manual_seed(seed + 1)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 2)
    sample_shape = pair.sample_shape if pair is not None else None
    batches = DeviceLoader(images, labels, batch_size, device, generator=data_gen, sample_shape=sample_shape)
    batches.new_epoch()

    def noise():
        z = torch.randn(batch_size, *latent_shape, generator=noise_gen, device=device)
        return z if codes is None else codes.attach(z, noise_gen)

    step = build_step(
        G,
        D,
        opt_g,
        opt_d,
        batches,
        noise,
        conditional,
        cuda_graph=cuda_graph,
        generators=(noise_gen,) if cuda_graph else (),
        precision=precision,
        objective=objective,
    )
    return _Step(step, G=G, D=D, opt_g=opt_g, opt_d=opt_d, batches=batches, noise_generator=noise_gen, pair=pair)


class _Step:
    """The step callable plus the objects it trains (for benchmarks and tests)."""

    def __init__(self, fn, **parts):
        self.fn = fn
        self.__dict__.update(parts)

    def __call__(self):
        return self.fn()
