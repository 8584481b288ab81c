"""The training configuration: every option of `fastgan train`, stored in each checkpoint."""

import dataclasses
import json
import math
import numbers
import operator
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Optional, Tuple

from fastgan._argtypes import MAX_SEED
from fastgan._options import CHOICES, CONDITIONAL, MODELS, check_choice

DEFAULT_EPOCHS = 10  # the default run: dcgan on mnist-5k, a few minutes on a 2-core CPU


def field_types():
    return {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def type_ok(value, kind):
    """Whether value fits a TrainConfig annotation (int, float, bool, str, dict, Optional[...],
    Tuple[int, ...]); an int is a float, a bool is no int."""
    if typing.get_origin(kind) is typing.Union:
        return any(type_ok(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(kind) is tuple:
        return isinstance(value, tuple) and all(type_ok(v, int) for v in value)
    if isinstance(kind, type):
        return isinstance(value, kind)
    return True


def kind_name(kind):
    if typing.get_origin(kind) is typing.Union:
        names = [kind_name(k) for k in typing.get_args(kind) if k is not type(None)]
        return " or ".join(names) + " or None"
    if typing.get_origin(kind) is tuple:
        return "a list of integers"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a dict"}.get(
        kind, getattr(kind, "__name__", str(kind))
    )


def _plain(value):
    """A value from numpy, pathlib or torch as the plain Python value a checkpoint can hold
    (they are read with weights_only=True): np.float64 -> float, Path -> str, a 0-dim tensor ->
    its number, torch.device -> str, a list of widths -> a tuple. Anything else as it is."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value).__module__ == "torch" and type(value).__name__ == "device":
        return str(value)
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0 and not isinstance(value, (bool, int, float)):
        return value.item()  # numpy scalars, 0-dim arrays and tensors
    return value


USER_MODEL = "user"  # cfg.model of a pair handed to the Trainer (fastgan.fit)
USER_DATA = "user"  # cfg.dataset of images handed to the Trainer

_PAIR_KEYS = {"latent_shape": list, "sample_shape": list, "image_shape": list, "conditional": bool}


def _check_pair(pair):
    """ConfigError unless `pair` is a TrainConfig.pair (a crafted checkpoint's too)."""
    if not isinstance(pair, dict):
        raise ConfigError(f"pair must be a dict, got {type(pair).__name__}")
    for key, kind in _PAIR_KEYS.items():
        v = pair.get(key)
        ok = isinstance(v, kind) and (
            kind is bool
            or (0 < len(v) <= 4 and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v))
        )
        if not ok:
            raise ConfigError(
                f"pair[{key!r}] must be {'true or false' if kind is bool else 'a list of sizes'}, got {v!r}"
            )
    if len(pair["image_shape"]) != 3:
        raise ConfigError(f"pair['image_shape'] must be (C, H, W), got {pair['image_shape']!r}")
    if math.prod(pair["sample_shape"]) != math.prod(pair["image_shape"]):
        raise ConfigError(
            f"pair: sample_shape {pair['sample_shape']} does not hold an image_shape {pair['image_shape']}"
        )


class ConfigError(ValueError):
    """An option that cannot be used (unknown name, out of range, unavailable device...)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the run."""


class DivergedError(RuntimeError):
    """Training diverged: its losses (or weights) are no longer finite numbers (--stop-on-nan)."""


@dataclass
class TrainConfig:
    model: str = CHOICES["model"].default
    dataset: str = CHOICES["dataset"].default
    data_dir: Optional[str] = None
    download: bool = False
    epochs: Optional[int] = None  # default DEFAULT_EPOCHS unless steps is given
    steps: Optional[int] = None
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    optimizer: str = CHOICES["optimizer"].default  # (the named choices: fastgan._options.CHOICES)
    lr_d: Optional[float] = None  # per-network learning rates (default: lr, or RMSprop's)
    lr_g: Optional[float] = None
    grad_clip: Optional[float] = None  # gradient-norm clipping (default: 1.0 with rmsprop)
    noise: str = CHOICES["noise"].default
    dropout: float = 0.0  # discriminator dropout (Keras: 0.3 MLP, 0.4 DCGAN)
    g_act: str = CHOICES["g_act"].default
    latent_dim: Optional[int] = None  # None: the model's (100; infogan: 62 beside its codes)
    g_widths: Optional[Tuple[int, ...]] = None
    d_widths: Optional[Tuple[int, ...]] = None
    backend: str = CHOICES["backend"].default
    device: str = "auto"
    seed: int = 0
    out: Optional[str] = None  # default: runs/MODEL-DATASET
    checkpoint_every: int = 0  # steps between extra checkpoints (0: each epoch only)
    log_every: int = 50  # steps between loss syncs (progress bar, history)
    num_samples: int = 64  # images in the sample grids (conditional: 100)
    tensorboard: bool = False
    cuda_graph: bool = True  # on CUDA: capture the whole step in one CUDA graph
    compile: bool = False  # torch.compile the models (for comparison; no graph)
    precision: str = CHOICES["precision"].default
    channels_last: bool = False  # convolution weights and activations in NHWC memory format
    progress: bool = True
    eval_every: int = 0  # steps between sample-quality evaluations (0: never)
    eval_n: int = 2000  # generated images per evaluation
    stop_on_nan: bool = True  # non-finite losses end the run (keeping the last finite checkpoint)
    # the objective and its stabilizers (fastgan.train.step.Objective, fastgan.train.ema)
    loss: str = CHOICES["loss"].default
    gp: float = 0.0  # WGAN-GP: gp * mean((|grad_x D(x_hat)| - 1)^2) on interpolates of real and fake
    r1: float = 0.0  # R1: r1 / 2 * mean |grad_x D(real)|^2
    r1_every: int = 1  # lazy R1: every K steps, scaled by K (StyleGAN2's lazy regularization)
    n_critic: int = 1  # D steps per G step
    class_loss: str = "both"  # acgan: D's class loss on real and fake images ("both", Odena et al.) or "real" only
    info_weight: float = 1.0  # infogan: lambda, the weight of the mutual-information loss in both steps
    kl_weight: float = 1.0  # stackgan: lambda, the weight of the conditioning augmentation's KL term in G's loss
    domains: Optional[str] = None  # discogan: "A:B" (fastgan.data.domains); None: "DATASET:DATASET-rot90"
    recon_weight: float = 1.0  # discogan: the weight of the reconstruction losses in G's loss
    # srgan (fastgan.train.superres): the upscaling (4: 7x7 -> 28x28, 2: 14x14 -> 28x28), the weight of
    # the classifier-feature MSE in the content loss, and of the adversarial loss (0: content loss only)
    sr_factor: int = 4
    feature_weight: float = 0.01
    adv_weight: float = 1e-3
    spectral_norm: bool = False  # D's weight layers spectrally normalized (one power iteration a step)
    spectral_norm_g: bool = False  # ...and G's
    ema: float = 0.0  # decay of an exponential moving average of G's weights (0: none)
    ema_start: int = 0  # the step from which the average runs (before: G itself)
    ema_samples: bool = True  # grids and evaluations draw from the average (when there is one)
    # data-parallel training under torchrun (fastgan.train.distributed): batch_size is each rank's
    sync_bn: bool = False  # batch norm statistics over the global batch of all ranks (fastgan.nn.SyncBatchNorm)
    dist_timeout: float = 600.0  # seconds a collective waits for the other ranks before failing
    convert: bool = True  # a user's pair (model "user" or a .py file) runs as fastgan.convert's copies
    # a user's pair, as the trainer found it (fastgan.models.user.UserPair.config): z's and G's output
    # shapes per image, the data's image shape, labels or not; for a file, its path and sha256
    pair: Optional[dict] = None
    extra: dict = field(default_factory=dict)

    # options that may change when a run is resumed; the rest must match the checkpoint
    RESUMABLE = (
        "epochs",
        "steps",
        "device",
        "data_dir",
        "download",
        "checkpoint_every",
        "log_every",
        "tensorboard",
        "progress",
        "out",
        "cuda_graph",
        "compile",
        "channels_last",
        "eval_every",
        "eval_n",
        "stop_on_nan",
        "convert",  # a user's pair: the same state_dict and math either way
        "ema_samples",
        "sync_bn",  # the same weights and state_dict; one rank computes the same either way
        "dist_timeout",
    )

    def __post_init__(self):
        if self.latent_dim is None:
            self.latent_dim = MODELS[self.model].latent_dim if self.model in MODELS else 100
        if self.out is None:
            name = os.path.splitext(os.path.basename(self.model))[0] if self.user_model() else self.model
            self.out = f"runs/{name}-{self.dataset}"

    # -- the model pair: fastgan's (by name) or a user's (handed to the Trainer, or a .py file)
    def user_model(self):
        """Whether the model is a user's: USER_MODEL (modules handed to the Trainer) or a .py file."""
        return isinstance(self.model, str) and (self.model == USER_MODEL or self.model.endswith(".py"))

    def conditional(self):
        """Whether G and D take labels."""
        return bool(self.pair["conditional"]) if self.pair else self.model in CONDITIONAL

    def latent_shape(self):
        """z's shape per image: (latent_dim,), or a user's G's, e.g. (100, 1, 1)."""
        return tuple(self.pair["latent_shape"]) if self.pair else (self.latent_dim,)

    def discogan(self):
        return not self.user_model() and MODELS[self.model].aux == "discogan"

    def domain_spec(self):
        """discogan's --domains (default: the dataset and its rotated copy); None for the others."""
        if not self.discogan():
            return None
        return self.domains or f"{self.dataset}:{self.dataset}-rot90"

    def latent_extra(self):
        """G's input columns drawn from N(0, 1) after the noise (stackgan's eps; 0 for the others)."""
        return 0 if self.user_model() else MODELS[self.model].latent_extra

    def image_shape(self):
        """(C, H, W) of the images: the data's (fastgan's models make 1x28x28; discogan pairs of
        domains, 2x28x28)."""
        if self.pair:
            return tuple(self.pair["image_shape"])
        return (2, 28, 28) if self.discogan() else (1, 28, 28)

    def sample_shape(self):
        """G's output (and D's input) per image: image_shape(), or flat for a user's MLP."""
        return tuple(self.pair["sample_shape"]) if self.pair else self.image_shape()

    def to_dict(self):
        d = dataclasses.asdict(self)
        for k in ("g_widths", "d_widths"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown training options: {', '.join(sorted(unknown))}")
        cfg = cls(**d)
        for k in ("g_widths", "d_widths"):
            v = getattr(cfg, k)
            setattr(cfg, k, tuple(int(w) for w in v) if v is not None else None)
        return cfg

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def _check_objective(self):
        for name in ("gp", "r1"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"--{name} must be a number >= 0 (0: off), got {v}")
        if isinstance(self.r1_every, bool) or not isinstance(self.r1_every, int) or self.r1_every < 1:
            raise ConfigError(f"--r1-every must be a positive integer, got {self.r1_every}")
        if self.r1_every > 1 and not self.r1:
            raise ConfigError("--r1-every needs --r1 GAMMA")
        if isinstance(self.n_critic, bool) or not isinstance(self.n_critic, int) or self.n_critic < 1:
            raise ConfigError(f"--n-critic must be a positive integer, got {self.n_critic}")
        if not (0.0 <= self.ema < 1.0):
            raise ConfigError(f"--ema must be a decay in [0, 1) (0: off; e.g. 0.999), got {self.ema}")
        if isinstance(self.ema_start, bool) or not isinstance(self.ema_start, int) or self.ema_start < 0:
            raise ConfigError(f"--ema-start must be a step >= 0, got {self.ema_start}")
        if self.ema_start and not self.ema:
            raise ConfigError("--ema-start needs --ema DECAY")
        if self.class_loss not in ("both", "real"):
            raise ConfigError(f"--class-loss must be both or real, got {self.class_loss!r}")
        if self.class_loss != "both" and (self.user_model() or MODELS[self.model].aux != "acgan"):
            raise ConfigError("--class-loss is ACGAN's D class loss: it needs --model acgan")
        if not (math.isfinite(self.info_weight) and self.info_weight >= 0):
            raise ConfigError(f"--info-weight must be a number >= 0, got {self.info_weight}")
        if self.info_weight != 1.0 and (self.user_model() or MODELS[self.model].aux != "infogan"):
            raise ConfigError("--info-weight weighs InfoGAN's mutual-information loss: it needs --model infogan")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ConfigError(f"--kl-weight must be a number >= 0, got {self.kl_weight}")
        if self.kl_weight != 1.0 and (self.user_model() or MODELS[self.model].aux != "stackgan"):
            raise ConfigError("--kl-weight weighs StackGAN's conditioning-augmentation KL: it needs --model stackgan")
        if not (math.isfinite(self.recon_weight) and self.recon_weight >= 0):
            raise ConfigError(f"--recon-weight must be a number >= 0, got {self.recon_weight}")
        if self.recon_weight != 1.0 and not self.discogan():
            raise ConfigError("--recon-weight weighs DiscoGAN's reconstruction losses: it needs --model discogan")
        srgan = not self.user_model() and MODELS[self.model].superres
        if isinstance(self.sr_factor, bool) or self.sr_factor not in (2, 4):
            raise ConfigError(f"--sr-factor must be 2 (14x14 -> 28x28) or 4 (7x7 -> 28x28), got {self.sr_factor}")
        for name, default in (("feature_weight", 0.01), ("adv_weight", 1e-3)):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a number >= 0, got {v}")
            if v != default and not srgan:
                raise ConfigError(f"--{name.replace('_', '-')} weighs a term of srgan's loss: it needs --model srgan")
        if self.sr_factor != 4 and not srgan:
            raise ConfigError("--sr-factor is srgan's upscaling: it needs --model srgan")
        if srgan and self.dataset == USER_DATA:
            raise ConfigError("srgan is trained on 28x28 digits and measured by their classifier: give a named dataset")
        if self.compile and (self.gp or self.r1):
            raise ConfigError("--gp and --r1 differentiate twice, which --compile does not capture here: leave one out")

    def objective_warnings(self):
        """Combinations that run but are known to train badly (the trainer prints them once)."""
        notes = []
        if self.loss == "wgan" and not (self.gp or self.spectral_norm or self.grad_clip):
            notes.append(
                "--loss wgan without --gp, --spectral-norm or --grad-clip: the critic is not kept "
                "Lipschitz and WGAN usually diverges (WGAN-GP: --gp 10 --n-critic 5)"
            )
        if self.gp and self.loss != "wgan":
            notes.append(f"--gp with --loss {self.loss}: the gradient penalty was made for --loss wgan")
        if self.n_critic > 1 and self.loss != "wgan":
            notes.append(
                f"--n-critic {self.n_critic} with --loss {self.loss}: several D steps per G step is WGAN's recipe"
            )
        return notes

    def learning_rates(self):
        """(lr_d, lr_g): explicit ones, else RMSprop's 8e-4 / 4e-4, else lr for both."""
        if self.optimizer == "rmsprop":
            return self.lr_d or 8e-4, self.lr_g or 4e-4
        return self.lr_d or self.lr, self.lr_g or self.lr

    def clip(self):
        if self.grad_clip is not None:
            return self.grad_clip or None
        return 1.0 if self.optimizer == "rmsprop" else None

    def normalize(self):
        """Values from numpy, pathlib or torch (np.float64, Path, torch.device, a list of widths)
        as plain Python ones, in place; then every option must have its field's type (ConfigError
        naming it), so that the checkpoint written after training reads back."""
        for name, kind in field_types().items():
            value = _plain(getattr(self, name))
            if kind is int or kind == Optional[int]:
                if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                    value = operator.index(value)
            elif (
                (kind is float or kind == Optional[float])
                and isinstance(value, numbers.Real)
                and not isinstance(value, bool)
            ):
                value = float(value)
            setattr(self, name, value)
            if not type_ok(value, kind):
                raise ConfigError(f"--{name.replace('_', '-')} must be {kind_name(kind)}, got {value!r}")
        return self

    def validate(self):
        """Raises ConfigError naming the first bad option (after normalize())."""
        self.normalize()
        user = self.user_model()
        if not user and self.model not in CHOICES["model"].names():
            raise ConfigError(
                f"unknown model {self.model!r}; choose one of {', '.join(CHOICES['model'].names())}, "
                "or give a .py file defining build() -> (G, D)"
            )
        if self.dataset not in CHOICES["dataset"].names() and self.dataset != USER_DATA:
            allowed = CHOICES["dataset"].names()
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(allowed)}")
        if self.pair is not None:
            _check_pair(self.pair)
        if self.epochs is not None and self.steps is not None:
            raise ConfigError("give --epochs or --steps, not both")
        for name in ("epochs", "steps"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"--{name} must be a positive integer, got {v}")
        if self.discogan():
            if self.latent_dim != 0:
                raise ConfigError("--latent-dim: discogan takes no noise (its generators' input is the batch)")
            if self.domains is not None:
                from fastgan.data.domains import base, parse

                try:
                    a, _ = parse(self.domains)
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
                if base(a) != self.dataset:
                    raise ConfigError(
                        f"--domains {self.domains}: domain A is drawn from --dataset, which is {self.dataset}; "
                        f"give --dataset {base(a)}"
                    )
        elif self.domains is not None:
            raise ConfigError("--domains names DiscoGAN's two domains: it needs --model discogan")
        for name in ("batch_size", "latent_dim", "log_every", "num_samples"):
            if name == "latent_dim" and self.discogan():
                continue
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ConfigError(f"--eval-every must be an integer >= 0 (0: off), got {self.eval_every}")
        if isinstance(self.eval_n, bool) or not isinstance(self.eval_n, int) or self.eval_n < 2:
            raise ConfigError(
                f"--eval-n must be an integer of at least 2 (a covariance needs 2 samples), got {self.eval_n}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"--seed must be an integer from 0 to {MAX_SEED}, got {self.seed}")
        if not user and MODELS[self.model].g_batch_norm_1d and self.batch_size < 2:
            raise ConfigError(
                f"--batch-size must be at least 2 for {self.model}: its batch norm needs more "
                f"than one value per channel, got {self.batch_size}"
            )
        if not (math.isfinite(self.dist_timeout) and self.dist_timeout > 0):
            raise ConfigError(f"--dist-timeout must be a positive number of seconds, got {self.dist_timeout}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        for name in ("lr", "lr_d", "lr_g"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive number, got {v}")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"--{name} must be in [0, 1), got {v}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ConfigError(f"--grad-clip must be >= 0 (0: off), got {self.grad_clip}")
        for name in CHOICES:
            if name not in ("model", "dataset"):
                check_choice(name, getattr(self, name), ConfigError)
        self._check_objective()
        if user:
            fastgans = {"dropout": 0.0, "g_act": CHOICES["g_act"].default, "backend": CHOICES["backend"].default}
            for name in ("g_widths", "d_widths", *fastgans):
                if getattr(self, name) != fastgans.get(name):
                    raise ConfigError(
                        f"--{name.replace('_', '-')} shapes fastgan's own models; a user's pair (--model "
                        f"{self.model}) is trained as written (--no-convert: without fastgan's fused ops)"
                    )
            return self
        # the models check their own options (dropout, widths): one rule, one message
        from fastgan.models import ModelError, check_options

        try:
            check_options(self.model, dropout=self.dropout, g_widths=self.g_widths, d_widths=self.d_widths)
        except ModelError as exc:
            option, rest = re.match(r"(\w+)(.*)", str(exc), re.S).groups()
            raise ConfigError(f"--{option.replace('_', '-')}{rest}") from None
        return self
