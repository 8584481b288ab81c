"""The GANs fastgan trains, each on fastgan's fused ops or on plain torch.nn.

    from fastgan.models import build, MODELS
    G, D = build("dcgan", backend="fastgan")   # or backend="torch": same state_dict
    x = G(torch.randn(64, G.latent_dim))        # (64, 1, 28, 28) in [-1, 1]
    logits = D(x)                               # (64, 1)
    G, D = build("cgan"); G(z, labels)          # conditional models take labels (N,) in 0-9

    G, D = build("acgan"); D(G(z, labels))      # (N, 1 + 10): the adversarial logit, then class logits
    G, D = build("infogan")                     # G(G.codes.attach(z)): z (N, 62) + codes; D: (N, 1 + 12)
    G, D = build("stackgan")                    # G(z (N, 100 + 32), labels): stage II; G.stages(z, labels)
                                                # D(pair(x), labels): (N, 2), stage II's logit and stage I's
    G, D = build("discogan")                    # G(x (N, 2, 28, 28): domains A, B) -> (G_BA(B), G_AB(A))
    G, D = build("srgan")                       # G(low_res (N, 1, 7, 7)) -> (N, 1, 28, 28); sr_factor=2: 14x14
    G, D = build("lapgan")                      # G(z (N, 1080)) -> 28x28 through the pyramid; D: (N, 3)

Names: mlp, mlp-bn, dcgan, cgan, cdcgan, acgan, infogan, stackgan, discogan, srgan, lapgan (see MODELS).
Options (all models unless noted): latent_dim (100; infogan's noise beside its codes: 62), dropout=0.0
(discriminator), g_widths / d_widths (MLP layer widths or DCGAN channels), g_act="relu"|"leaky"
(mlp, cgan), num_classes=10 (cgan, cdcgan, acgan, stackgan), embed_dim=10
(cgan, cdcgan, acgan; stackgan's digit embedding is 32 wide).
"""

import numbers

from fastgan._options import BACKENDS, CONDITIONAL, G_ACTS, MODELS, NUM_CLASSES
from fastgan.models.codes import LatentCodes
from fastgan.models.dcgan import DCGANDiscriminator, DCGANGenerator
from fastgan.models.discogan import DiscoDiscriminator, DiscoGenerator
from fastgan.models.heads import AuxDiscriminator, InfoGANGenerator
from fastgan.models.lapgan import LapGANDiscriminator, LapGANGenerator
from fastgan.models.layers import Conv2dLeakyReLU, LinearLeakyReLU, init_dcgan
from fastgan.models.mlp import MLPDiscriminator, MLPGenerator
from fastgan.models.srgan import SR_FACTORS, SRGenerator
from fastgan.models.stackgan import StackDiscriminator, StackGenerator


class ModelError(ValueError):
    """An unknown model name or option."""


def check_name(name):
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return name


def _positive_int(option, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ModelError(f"{option} must be a positive integer, got {value!r}")
    return int(value)


def _widths(option, widths, count=None):
    """widths as a tuple of positive ints (None: the model's default); count: how many it takes."""
    if widths is None:
        return None
    widths = tuple(_positive_int(option, w) for w in widths) if isinstance(widths, (list, tuple)) else widths
    if not isinstance(widths, tuple) or not widths:
        raise ModelError(f"{option} must be a non-empty list of positive integers, got {widths!r}")
    if count is not None and len(widths) != count:
        raise ModelError(f"{option}: this model takes {count} channel counts, got {len(widths)}")
    return widths


def check_options(name, dropout=0.0, g_widths=None, d_widths=None):
    """(g_widths, d_widths) as tuples (None: the model's default) when model `name` can be built
    with these options; ModelError naming the option otherwise (TrainConfig checks with this too)."""
    check_name(name)
    if not 0.0 <= float(dropout) < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {dropout}")
    count = 2 if MODELS[name].conv else None  # a DCGAN's two channel counts
    return _widths("g_widths", g_widths, count), _widths("d_widths", d_widths, count)


def build(
    name,
    backend="fastgan",
    latent_dim=None,
    dropout=0.0,
    g_widths=None,
    d_widths=None,
    g_act="relu",
    num_classes=NUM_CLASSES,
    embed_dim=10,
    sr_factor=4,
):
    """(generator, discriminator) of model `name`, initialised N(0, 0.02) (DCGAN). latent_dim
    None: the model's default (MODELS[name].latent_dim). sr_factor: srgan's upscaling, 4 (7x7
    -> 28x28) or 2 (14x14 -> 28x28).

    The two backends build the same parameters with the same names, so a state_dict moves
    between them and gives the same outputs.
    """
    check_name(name)
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    g_widths, d_widths = check_options(name, dropout, g_widths, d_widths)
    latent_dim = MODELS[name].latent_dim if latent_dim is None else latent_dim
    if name == "discogan" and latent_dim != 0:  # rather than ignore it
        raise ModelError(f"latent_dim: discogan takes no noise (its generators' input is the batch), got {latent_dim}")
    latent_dim = latent_dim if name == "discogan" else _positive_int("latent_dim", latent_dim)
    if g_act not in G_ACTS:
        raise ModelError(f"g_act must be one of {', '.join(G_ACTS)}, got {g_act!r}")
    classes = num_classes if name in CONDITIONAL else 0
    if name in ("mlp", "cgan"):
        G = MLPGenerator(
            latent_dim,
            tuple(g_widths or (256, 512, 1024)),
            act=g_act,
            num_classes=classes,
            embed_dim=embed_dim,
            backend=backend,
        )
        D = MLPDiscriminator(
            tuple(d_widths or (1024, 512, 256)), dropout, num_classes=classes, embed_dim=embed_dim, backend=backend
        )
    elif name == "mlp-bn":
        G = MLPGenerator(
            latent_dim, tuple(g_widths or (256, 512, 1024)), batch_norm=True, bn_momentum=0.3, backend=backend
        )
        D = MLPDiscriminator(tuple(d_widths or (512, 256)), dropout, backend=backend)
    elif name == "acgan":  # cdcgan's G; D predicts the label instead of taking it
        G = DCGANGenerator(
            latent_dim, tuple(g_widths or (128, 64)), num_classes=num_classes, embed_dim=embed_dim, backend=backend
        )
        D = AuxDiscriminator("classes", tuple(d_widths or (64, 128)), dropout, num_classes, backend=backend)
    elif name == "infogan":
        codes = LatentCodes(latent_dim)
        G = InfoGANGenerator(codes, tuple(g_widths or (128, 64)), backend=backend)
        D = AuxDiscriminator("q", tuple(d_widths or (64, 128)), dropout, codes.q_outputs, hidden=1024, backend=backend)
    elif name == "stackgan":  # g_widths: stage I's 7x7 channels, stage II's channels
        G = StackGenerator(latent_dim, tuple(g_widths or (128, 32)), num_classes, backend=backend)
        D = StackDiscriminator(tuple(d_widths or (64, 128)), dropout, num_classes, backend=backend)
    elif name == "discogan":  # g_widths: each translator's two channel counts
        G = DiscoGenerator(tuple(g_widths or (64, 128)), backend=backend)
        D = DiscoDiscriminator(tuple(d_widths or (64, 128)), dropout, backend=backend)
    elif name == "srgan":
        if sr_factor not in SR_FACTORS:
            raise ModelError(f"sr_factor must be one of {', '.join(map(str, SR_FACTORS))}, got {sr_factor!r}")
        G = SRGenerator(sr_factor, tuple(g_widths or (32, 16)), backend=backend)
        D = DCGANDiscriminator(tuple(d_widths or (64, 128)), dropout, backend=backend)
    elif name == "lapgan":
        try:
            G = LapGANGenerator(latent_dim, tuple(g_widths or (256, 32)), backend=backend)
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        D = LapGANDiscriminator(tuple(d_widths or (32, 64)), dropout, backend=backend)
    else:  # dcgan, cdcgan
        G = DCGANGenerator(
            latent_dim, tuple(g_widths or (128, 64)), num_classes=classes, embed_dim=embed_dim, backend=backend
        )
        D = DCGANDiscriminator(tuple(d_widths or (64, 128)), dropout, num_classes=classes, backend=backend)
    return G, D


__all__ = [
    "MODELS",
    "CONDITIONAL",
    "BACKENDS",
    "G_ACTS",
    "ModelError",
    "build",
    "check_name",
    "check_options",
    "init_dcgan",
    "MLPGenerator",
    "MLPDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "AuxDiscriminator",
    "InfoGANGenerator",
    "SRGenerator",
    "LapGANGenerator",
    "LapGANDiscriminator",
    "LatentCodes",
    "StackGenerator",
    "StackDiscriminator",
    "DiscoGenerator",
    "DiscoDiscriminator",
    "LinearLeakyReLU",
    "Conv2dLeakyReLU",
]
