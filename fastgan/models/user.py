"""A GAN its user wrote in plain torch.nn, made ready for fastgan's step and trainer: loaded from
a file, converted onto the fused ops, and probed for what the step needs to know.

    G, D = load_file("my_gan.py")             # build() -> (G, D), or classes Generator, Discriminator
    pair = prepare(G, D, image_shape=(1, 28, 28), labels_given=True)
    pair.G, pair.D         # converted copies (the originals untouched); D returns logits
    pair.latent_shape      # z's shape per image: (100,) for a Linear, (100, 1, 1) for a ConvTranspose2d
    pair.sample_shape      # G's output per image: (1, 28, 28), or (784,) for an MLP on flat images
    pair.conditional       # G(z, labels) and D(x, labels)

Nothing here trains: the trainer and make_step run the pair through the same step as fastgan's
own models (fastgan.train.step). The probe runs both networks once on two inputs in eval mode
under no_grad (no running statistics move, no dropout) and puts every mode back.
"""

import copy
import hashlib
import importlib.util
import inspect
import math
import os
import sys
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from fastgan.models import ModelError

_CONV = (nn.Conv2d, nn.ConvTranspose2d)


def forward(net, x, labels):
    """net(x), or net(x, labels) for a conditional pair (labels not None): a user's unconditional
    network takes one input; fastgan's own take labels=None as well."""
    return net(x) if labels is None else net(x, labels)


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_file(path):
    """(G, D) that a user's model file defines: a function build() returning (G, D), or classes
    Generator and Discriminator (made with no arguments). The file runs as a module of its own
    (its folder on sys.path meanwhile, so that it can import its neighbours). ModelError naming
    the problem otherwise."""
    shown = os.fspath(path)
    path = os.path.abspath(shown)
    if not path.endswith(".py"):
        raise ModelError(f"--model {shown}: a model file must be a Python file (.py)")
    if not os.path.isfile(path):
        raise ModelError(f"--model {shown}: no such file")
    name = f"fastgan_user_model_{file_sha256(path)[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(path)
    sys.path.insert(0, folder)
    sys.modules[name] = module  # (dataclasses and pickling look their classes up there)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModelError(f"--model {shown}: running the file failed: {type(exc).__name__}: {exc}") from None
    finally:
        if sys.path and sys.path[0] == folder:
            del sys.path[0]
    try:
        if callable(getattr(module, "build", None)):
            pair, how = module.build(), "build()"
        elif isinstance(getattr(module, "Generator", None), type) and isinstance(
            getattr(module, "Discriminator", None), type
        ):
            pair, how = (module.Generator(), module.Discriminator()), "Generator() and Discriminator()"
        else:
            raise ModelError(
                f"--model {shown} defines neither build() (returning (G, D)) nor the classes Generator "
                "and Discriminator"
            )
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"--model {shown}: building the models failed: {type(exc).__name__}: {exc}") from None
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(m, nn.Module) for m in pair)):
        raise ModelError(f"--model {shown}: {how} must give two torch.nn.Modules (G, D), got {_kind(pair)}")
    return tuple(pair)


def _kind(value):
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: " + ", ".join(type(v).__name__ for v in value)
    return type(value).__name__


@dataclass
class UserPair:
    G: nn.Module
    D: nn.Module
    latent_shape: Tuple[int, ...]
    sample_shape: Tuple[int, ...]
    conditional: bool
    stripped_sigmoid: Optional[str]  # the path of D's nn.Sigmoid now an nn.Identity, or None
    reports: tuple = ()  # convert's reports, (G's, D's), when converted

    def config(self):
        """What a checkpoint keeps of the pair (TrainConfig.pair): enough to draw from G again."""
        return {
            "latent_shape": list(self.latent_shape),
            "sample_shape": list(self.sample_shape),
            "conditional": self.conditional,
        }


def _takes_labels(net):
    """ "required", "optional" or "no": whether net's forward takes a second positional input."""
    try:
        params = list(inspect.signature(net.forward).parameters.values())
    except (TypeError, ValueError):
        return "no"
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return "optional"
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2:
        return "no"
    return "required" if positional[1].default is inspect.Parameter.empty else "optional"


def _conditional(G, D, labels_given):
    """Whether the pair takes labels: G's forward requires a second input (or G says so, as
    fastgan's models do with num_classes); then D must take them too, and the data give them."""
    g, d = _takes_labels(G), _takes_labels(D)
    conditional = g == "required" or (g == "optional" and bool(getattr(G, "num_classes", 0)))
    if not conditional:
        if d == "required":
            raise ModelError(
                "D's forward requires labels (x, labels) but G's does not take them: a pair is both or neither"
            )
        return False
    if d == "no":
        raise ModelError(
            "G takes labels (z, labels) but D's forward takes only x: a conditional pair gives both the labels"
        )
    if not labels_given:
        raise ModelError("G takes labels (z, labels), but the data has none: give labels= with the images")
    return True


def _latent_sizes(G, latent_dim):
    """z's shapes to try, most likely first: G.latent_dim, else from G's first layer (a Linear's
    in_features: (k,); a ConvTranspose2d's in_channels: (k, 1, 1); for a conditional G it may
    also see the label embedding: k - embedding_dim), then latent_dim."""
    first = next((m for m in G.modules() if isinstance(m, (nn.Linear, *_CONV))), None)
    spatial = isinstance(first, _CONV)
    sizes = []
    if isinstance(getattr(G, "latent_dim", None), int):
        sizes.append(G.latent_dim)
    elif first is not None:
        k = first.in_features if isinstance(first, nn.Linear) else first.in_channels
        sizes += [k] + [k - e.embedding_dim for e in G.modules() if isinstance(e, nn.Embedding) and k > e.embedding_dim]
    if latent_dim is not None:
        sizes.append(latent_dim)
    if not sizes:
        raise ModelError("cannot tell the size of G's input z (no Linear or ConvTranspose2d): give latent_dim")
    sizes = list(dict.fromkeys(sizes))
    shapes = [(s, 1, 1) if spatial else (s,) for s in sizes]
    return list(dict.fromkeys(shapes + [(s,) if spatial else (s, 1, 1) for s in sizes]))


@torch.no_grad()
def _probe(net, *inputs):
    """net(*inputs) in eval mode (no running statistics move, no dropout), every module's mode
    put back after."""
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        return net(*inputs)
    finally:
        for m, training in modes:
            m.training = training


def _device(net):
    p = next(iter(net.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _error(exc):
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def prepare(G, D, image_shape=None, labels_given=False, convert=True, latent_dim=None, num_classes=10):
    """The pair as the step runs it (a UserPair), or ModelError naming what does not fit.

    image_shape: the data's (C, H, W) (None: whatever G makes). G's output per image must hold
    as many values: (C, H, W) itself, or flat (C*H*W,) for an MLP (the real images are then
    handed to D flat too). D must return one logit per image ((N,) or (N, 1)). convert: G and D
    as fastgan.convert's copies (False: themselves). A D whose output comes from an nn.Sigmoid
    (the tutorials') has it replaced by nn.Identity, so that it returns the logits the fused
    losses take (the same math, stable); a D without one is taken to return logits.
    latent_dim: z's size when it cannot be read off G (see _latent_sizes).
    """
    from fastgan.convert import convert as fuse
    from fastgan.convert import final_sigmoid

    for name, net in (("G", G), ("D", D)):
        if not isinstance(net, nn.Module):
            raise ModelError(f"{name} must be a torch.nn.Module, got {type(net).__name__}")
    conditional = _conditional(G, D, labels_given)
    sigmoid = final_sigmoid(D)
    reports = ()
    if convert:
        try:
            (G, g_report), (D, d_report) = (
                fuse(G, report=True),
                fuse(D, strip_sigmoid=sigmoid if sigmoid is not None else False, report=True),
            )
        except ValueError as exc:
            raise ModelError(f"fastgan.convert: {exc}") from None
        reports = (g_report, d_report)
    elif sigmoid is not None:
        D = copy.deepcopy(D)
        if sigmoid == "":
            raise ModelError("D is a bare nn.Sigmoid")
        prefix, _, name = sigmoid.rpartition(".")
        setattr(D.get_submodule(prefix) if prefix else D, name, nn.Identity())
    device = _device(G)
    labels = torch.arange(2, device=device) % num_classes if conditional else None
    tried = []
    for shape in _latent_sizes(G, latent_dim):
        z = torch.zeros(2, *shape, device=device)
        try:
            out = _probe(G, *((z,) if labels is None else (z, labels)))
        except Exception as exc:
            tried.append(f"z of shape {tuple(z.shape)}: {_error(exc)}")
            continue
        break
    else:
        raise ModelError(f"G does not run on the latent noise (tried {'; '.join(tried)}): give latent_dim")
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != 2:
        raise ModelError(f"G must return one image per latent vector, got {_described(out)} for 2 of them")
    sample = tuple(out.shape[1:])
    if image_shape is not None and math.prod(sample) != math.prod(image_shape):
        raise ModelError(
            f"G's images have shape {sample}, the data's {tuple(image_shape)}: G must make images of the "
            "data's size (or flat ones of as many values)"
        )
    if image_shape is not None and len(sample) != 1 and sample != tuple(image_shape):
        raise ModelError(f"G's images have shape {sample}, the data's {tuple(image_shape)}")
    try:
        logits = _probe(D, *((out,) if labels is None else (out, labels)))
    except Exception as exc:
        raise ModelError(f"D does not run on G's images of shape {tuple(out.shape)}: {_error(exc)}") from None
    if not isinstance(logits, torch.Tensor) or logits.numel() != 2 or logits.shape[0] != 2:
        raise ModelError(f"D must return one logit per image ((N,) or (N, 1)), got {_described(logits)} for 2 images")
    return UserPair(G, D, tuple(shape), sample, conditional, sigmoid, reports)


def image_of(sample_shape):
    """(C, H, W) of G's output per image: itself, or for a flat one a square 1-channel image
    (784 -> 1x28x28) if K is a square, else 1x1xK."""
    if len(sample_shape) == 3:
        return tuple(sample_shape)
    k = math.prod(sample_shape)
    side = math.isqrt(k)
    return (1, side, side) if side * side == k else (1, 1, k)


def _described(value):
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


__all__ = ["UserPair", "forward", "file_sha256", "image_of", "load_file", "prepare"]
