"""The one table of fastgan's named choices (models, datasets, optimizers, noise, precision...)
and their defaults. The CLI's choices and help texts, TrainConfig's checks, the models, the data
and the benchmarks all read it, so that a new choice is added in one place.

No torch import: the CLI builds its parser from this table before loading anything heavy.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Model:
    about: str
    conditional: bool = False  # G and D take labels (N,) in 0..NUM_CLASSES-1
    conv: bool = False  # a DCGAN: g_widths / d_widths are its two channel counts
    g_batch_norm_1d: bool = False  # G's batch norm sees one value per channel per sample
    # an auxiliary head on D's body, trained in the same step (fastgan.train.auxiliary): "acgan"
    # (10 class logits; D takes no labels), "infogan" (Q: the latent codes' logits and means);
    # "stackgan": the two stages' fakes and D's two logits (fastgan.train.auxiliary.StackHead);
    # "discogan": both translations of the batch and D's two logits (fastgan.train.auxiliary.DiscoHead)
    aux: str = ""
    latent_dim: int = 100  # z's size by default (infogan: the noise beside its codes; discogan: none)
    # G's input columns drawn from N(0, 1) after the latent_dim noise (stackgan: the eps of its two
    # stages' conditioning augmentation, 2 x fastgan.models.stackgan.CONDITION_DIM)
    latent_extra: int = 0
    # G's input is the real batch's images downsampled (fastgan.train.superres), not noise (srgan)
    superres: bool = False
    # a Laplacian pyramid of GANs (fastgan.models.lapgan): D sees each level of the real batch (lapgan)
    pyramid: bool = False

    @property
    def d_conditional(self):
        """Whether D takes labels (N,) too (an ACGAN's D predicts them instead)."""
        return self.conditional and self.aux != "acgan"


MODELS = {
    "mlp": Model("PyTorch-tutorial MLP GAN: G 100-256-512-1024-784 (ReLU), D 784-1024-512-256-1"),
    "mlp-bn": Model("Keras MLP GAN: G Dense-LeakyReLU-BatchNorm x3, D 784-512-256-1", g_batch_norm_1d=True),
    "dcgan": Model("28x28 DCGAN: G linear to 7x7, two stride-2 transposed convs; D two stride-2 convs", conv=True),
    "cgan": Model("class-conditional mlp (label embedding into G and D)", conditional=True),
    "cdcgan": Model("class-conditional dcgan (label embedding into G and D)", conditional=True, conv=True),
    "acgan": Model(
        "auxiliary-classifier GAN (Odena et al.): dcgan with a label embedding into G and a 10-class head on D",
        conditional=True,
        conv=True,
        aux="acgan",
    ),
    "infogan": Model(
        "InfoGAN (Chen et al.'s MNIST networks): z (62) + a 10-way categorical and 2 continuous codes into a "
        "dcgan-like G with an FC 1024 layer first; D's body (two convs, FC 1024) shared with a Q head",
        conv=True,
        g_batch_norm_1d=True,
        aux="infogan",
        latent_dim=62,
    ),
    "stackgan": Model(
        "StackGAN (Zhang et al.) at MNIST scale: the digit's embedding through conditioning augmentation "
        "(mu, log-variance, a KL term) into stage I (a 14x14 sketch) and stage II (refined to 28x28), "
        "one label-conditional D per stage",
        conditional=True,
        conv=True,
        aux="stackgan",
        latent_extra=32,
    ),
    "discogan": Model(
        "DiscoGAN (Kim et al.): two generators (conv encoder-decoders) between two unpaired domains "
        "(--domains A:B) and a dcgan D per domain, with reconstruction losses both ways",
        conv=True,
        aux="discogan",
        latent_dim=0,
    ),
    "srgan": Model(
        "SRGAN (Ledig et al.) at MNIST scale: 7x7 -> 28x28 (--sr-factor 2: 14x14 -> 28x28); a residual-block "
        "G, dcgan's D, content loss = pixel MSE + the classifier-feature MSE, adversarial weight 1e-3",
        conv=True,
        superres=True,
    ),
    "lapgan": Model(
        "LAPGAN (Denton et al.): a 3-level Laplacian pyramid, a 7x7 GAN and two conditional GANs drawing the "
        "14x14 and 28x28 band-pass residuals from the upsampled coarser image, trained jointly in one step",
        conv=True,
        pyramid=True,
        latent_dim=100 + 14 * 14 + 28 * 28,
    ),
}
CONDITIONAL = tuple(name for name, m in MODELS.items() if m.conditional)
NUM_CLASSES = 10  # digits / Fashion-MNIST classes: the labels of the conditional models


@dataclass(frozen=True)
class Choice:
    """A TrainConfig option with named values: `values` maps each to what it means."""

    default: str
    values: dict
    help: str

    def names(self):
        return tuple(self.values)

    def describe(self):
        """The help text: what the option is, each value, and the default."""
        listed = "; ".join(f"{v}: {about}" for v, about in self.values.items() if about)
        return f"{self.help}{': ' + listed if listed else ''} (default: {self.default})"


CHOICES = {
    "model": Choice("dcgan", {name: "" for name in MODELS}, "model"),
    "dataset": Choice(
        "mnist-5k",
        {
            "mnist-5k": "5,000 real MNIST digits embedded in the package",
            "mnist": "IDX files",
            "fashion-mnist": "IDX files",
        },
        "dataset",
    ),
    "optimizer": Choice(
        "adam",
        {"adam": "fastgan's fused Adam", "rmsprop": "the Keras recipe, lr 8e-4 D / 4e-4 G, gradient clipping 1.0"},
        "optimizer",
    ),
    "noise": Choice("normal", {"normal": "", "uniform": "in [-1, 1]"}, "latent noise"),
    "g_act": Choice("relu", {"relu": "", "leaky": "LeakyReLU 0.2"}, "mlp/cgan generator activation"),
    "backend": Choice("fastgan", {"fastgan": "fastgan's fused ops", "torch": "plain torch.nn layers"}, "layers"),
    "loss": Choice(
        "bce",
        {
            "bce": "non-saturating BCE with logits (Goodfellow et al.)",
            "hinge": "SNGAN/BigGAN: D relu(1 - real) + relu(1 + fake), G -fake",
            "lsgan": "least squares: D (real - 1)^2/2 + fake^2/2, G (fake - 1)^2/2",
            "wgan": "Wasserstein: D fake - real, G -fake (with --gp, spectral norm or clipping)",
        },
        "GAN objective",
    ),
    "precision": Choice(
        "fp32",
        {
            "fp32": "",
            "bf16": "forward passes under bfloat16 autocast; weights, optimizer, "
            "batch-norm statistics and losses stay float32",
        },
        "precision",
    ),
}

DATASETS = CHOICES["dataset"].names()
BACKENDS = CHOICES["backend"].names()
G_ACTS = CHOICES["g_act"].names()
PRECISIONS = CHOICES["precision"].names()
LOSSES = CHOICES["loss"].names()


def check_choice(option, value, error=ValueError):
    """value when it is one of CHOICES[option]'s names, else error naming the option."""
    allowed = CHOICES[option].names()
    if value not in allowed:
        raise error(f"--{option.replace('_', '-')} must be one of {', '.join(allowed)}, got {value!r}")
    return value
