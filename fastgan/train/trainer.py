"""The GAN trainer behind `fastgan train`.

    from fastgan.train import Trainer, TrainConfig
    Trainer(TrainConfig(model="dcgan", epochs=5, out="runs/dcgan")).fit()

train_step() is a plain function of (models, optimizers, batch, noise) with no host syncs, so
that it can be captured (torch.compile, CUDA graphs); the loop around it syncs the losses
once per `log_every` steps.
"""
import contextlib
import functools
import math
import os
import shutil
import sys
import time

import torch

from fastgan import ops
from fastgan._argtypes import MAX_SEED, as_index
from fastgan._files import atomic_write, output_problem
from fastgan.data import DeviceLoader, load_dataset, resolve_data_dir
from fastgan.models import CONDITIONAL, ModelError, build
from fastgan.train.background import BackgroundWriter, cpu_copy
from fastgan.train.checkpoint import load_checkpoint, load_module_state, save_checkpoint
from fastgan.train.config import DEFAULT_EPOCHS, CheckpointError, ConfigError, TrainConfig, field_types
from fastgan.train.images import make_grid, plot_losses, save_grid, write_history
from fastgan.train.step import DeviceBatches, build_step, make_optimizers, to_layout

CHECKPOINT = "checkpoint.pt"
PLOT_EVERY_S = 10.0   # losses.png is redrawn at most this often (and at the end of a run)


def autocast(device_type, amp_dtype):
    """The forward passes' mixed-precision context (amp_dtype None: a no-op). The cast cache is
    off so that the step can be captured in a CUDA graph."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=amp_dtype, cache_enabled=False)


def train_step(G, D, opt_g, opt_d, real, labels, z, grad_clip=None, one_d_pass=False, amp_dtype=None,
               grad_seed=None):
    """One D step then one G step (non-saturating loss). Returns the detached losses as a
    (2,) tensor [d_loss, g_loss] without synchronizing. labels: None for unconditional models.

    one_d_pass: run D once on cat(real, fake) instead of twice; the same math where every
    sample's logit depends on that sample alone (no batch norm, no dropout in D:
    see d_pass_mergeable), with half the D kernels.
    amp_dtype: torch.bfloat16 runs G's and D's forward passes under autocast (matrix products
    and activations in bfloat16); the parameters, their gradients and the optimizer stay
    float32, batch-norm statistics are accumulated in float32, and the losses are computed
    in float32 from the logits.
    grad_seed: a 0-dim tensor of 1 in the losses' dtype, made once by the caller: each backward
    pass starts from it instead of from a fresh ones_like (one fill kernel per pass).
    """
    amp = functools.partial(autocast, real.device.type, amp_dtype)
    with amp():
        fake = G(z, labels) if labels is not None else G(z)
    args = (labels,) if labels is not None else ()
    # discriminator: real -> 1, fake -> 0
    with amp():
        if one_d_pass:
            both = (torch.cat([labels, labels]),) if labels is not None else ()
            real_logits, fake_logits = D(torch.cat([real, fake.detach()]), *both).split(real.shape[0])
        else:
            real_logits, fake_logits = D(real, *args), D(fake.detach(), *args)
    d_loss = ops.gan_d_loss(real_logits.float(), fake_logits.float())
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward(grad_seed)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(D.parameters(), grad_clip, foreach=True)
    opt_d.step()
    # generator: make the updated D call the fakes real; D's weights need no gradient here
    # (only those that had one get it back: a parameter the user froze stays frozen)
    trainable = [p for p in D.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        with amp():
            fake_logits = D(fake, *args)
        g_loss = ops.gan_g_loss(fake_logits.float())
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward(grad_seed)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(G.parameters(), grad_clip, foreach=True)
    opt_g.step()
    return torch.stack([d_loss.detach(), g_loss.detach()])


def d_pass_mergeable(D):
    """True when D treats each sample on its own (no batch norm, no active dropout), so one
    pass over cat(real, fake) computes exactly what two passes do."""
    return not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                   or (isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0)
                   for m in D.modules())


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available (torch {torch.__version__}, "
                          f"built with CUDA {torch.version.cuda}); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return device


def build_models(cfg, device="cpu"):
    """(G, D) for a TrainConfig."""
    try:
        G, D = build(cfg.model, backend=cfg.backend, latent_dim=cfg.latent_dim, dropout=cfg.dropout,
                     g_widths=cfg.g_widths, d_widths=cfg.d_widths, g_act=cfg.g_act)
    except ModelError as exc:
        raise ConfigError(str(exc)) from None
    return G.to(device), D.to(device)


def fixed_inputs(cfg, device, n=None):
    """The fixed noise (and labels) the sample grids are drawn from: same on every device."""
    conditional = cfg.model in CONDITIONAL
    n = n or (100 if conditional else cfg.num_samples)
    gen = torch.Generator().manual_seed(cfg.seed + 12345)
    z = noise(n, cfg.latent_dim, cfg.noise, gen, "cpu").to(device)
    labels = (torch.arange(n) % 10).to(device) if conditional else None
    return z, labels, (10 if conditional else max(1, int(math.sqrt(n))))


def noise(n, latent_dim, kind, generator, device):
    if kind == "uniform":
        return torch.rand(n, latent_dim, generator=generator, device=device).mul_(2).sub_(1)
    return torch.randn(n, latent_dim, generator=generator, device=device)


class Trainer:
    """Trains one GAN run in cfg.out: checkpoint.pt, samples/, samples.png, history.csv,
    losses.png, train.log, config.json (and tb/ with tensorboard)."""

    def __init__(self, cfg, resume=False, explicit=None, log=None, evaluator=None, overwrite=False):
        """resume: continue the run in cfg.out from its checkpoint, with the options named in
        `explicit` taken from cfg (only TrainConfig.RESUMABLE ones may differ from the
        checkpoint's); explicit None: every option (cfg is the run's whole configuration).
        Without resume, a folder that already holds a run (checkpoint.pt) is refused unless
        overwrite, which removes that run's outputs when fit() starts. evaluator: the
        fastgan.metrics.Evaluator that --eval-every uses (default: one with the default
        classifier, made when fit() starts)."""
        self.log_stream = log or sys.stdout
        cfg.normalize()
        problem = output_problem(cfg.out, folder=True)
        if problem:   # before any work: the first output is written after an epoch
            raise ConfigError(f"--out {problem}")
        self.checkpoint_path = os.path.join(cfg.out, CHECKPOINT)
        self.overwrite = bool(overwrite) and not resume
        if not resume and not overwrite and os.path.exists(self.checkpoint_path):
            raise ConfigError(f"--out {cfg.out} holds a run already ({self.checkpoint_path}): --resume "
                              f"continues it, --overwrite starts again there, or choose another --out")
        ckpt = None
        if resume:
            if not os.path.isfile(self.checkpoint_path):
                raise CheckpointError(f"--resume: no checkpoint in {cfg.out} ({self.checkpoint_path} "
                                      "does not exist)")
            ckpt = load_checkpoint(self.checkpoint_path)
            cfg = self._merge(ckpt["config"], cfg, self._explicit(cfg, explicit))
        cfg.validate()
        self.cfg = cfg
        self.device = resolve_device(cfg.device)

        images, labels = load_dataset(cfg.dataset, cfg.data_dir, train=True, download=cfg.download)
        # the folder it read, kept absolute in the checkpoint: eval and --resume find it from anywhere
        cfg.data_dir = resolve_data_dir(cfg.dataset, cfg.data_dir, cfg.download)
        torch.manual_seed(cfg.seed)
        self.G, self.D = to_layout(*build_models(cfg, self.device), cfg.channels_last)
        self.loader = DeviceLoader(images, labels, cfg.batch_size, self.device, seed=cfg.seed + 1)
        self.conditional = cfg.model in CONDITIONAL
        self.steps_per_epoch = self.loader.steps_per_epoch
        self.total_steps = cfg.steps or (cfg.epochs or DEFAULT_EPOCHS) * self.steps_per_epoch
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        lr_d, lr_g = cfg.learning_rates()
        # the whole step in one CUDA graph on CUDA (fastgan.train.graph), unless told otherwise
        self.cuda_graph = self.device.type == "cuda" and cfg.cuda_graph and not cfg.compile
        self.opt_g, self.opt_d = make_optimizers(self.G, self.D, self.device, cfg.optimizer, lr_g, lr_d,
                                                 (cfg.beta1, cfg.beta2), self.cuda_graph)
        self.grad_clip = cfg.clip()
        self.noise_gen = torch.Generator(device=self.device)
        self.noise_gen.manual_seed(cfg.seed + 2)
        self.batches = DeviceBatches(self.loader.images, self.loader.labels, cfg.batch_size,
                                     self.loader.generator)
        G, D = (torch.compile(self.G), torch.compile(self.D)) if cfg.compile else (self.G, self.D)
        self._step = build_step(G, D, self.opt_g, self.opt_d, self.batches,
                                lambda: noise(cfg.batch_size, cfg.latent_dim, cfg.noise, self.noise_gen, self.device),
                                self.conditional, self.grad_clip, self.cuda_graph, generators=(self.noise_gen,),
                                precision=cfg.precision)
        self.fixed_z, self.fixed_labels, self.grid_cols = fixed_inputs(cfg, self.device)
        self.step = 0
        self.history = torch.zeros(0, 2, dtype=torch.float64)
        self.train_seconds = 0.0   # time spent training: steps and loss syncs, not outputs or evals
        self.evals = []            # one dict per --eval-every evaluation (see _evaluate)
        self.evaluator = evaluator
        self.epoch_rng = self.loader.generator.get_state()  # shuffle state of the epoch in progress
        self.checkpoint_step = None
        self._csv_written = (0, 0)   # (rows, evaluations) history.csv holds from this process
        self._plotted = None         # when losses.png was last drawn (perf_counter)
        self._files = BackgroundWriter()   # writes the outputs while training goes on
        if ckpt is not None:
            self._restore(ckpt)
        self.writer = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("--tensorboard needs the tensorboard package: "
                                  "pip install tensorboard  (or: pip install 'fastgan[tensorboard]')") from None
            self.writer = SummaryWriter(os.path.join(cfg.out, "tb"), purge_step=self.step + 1)

    @staticmethod
    def _explicit(cfg, explicit):
        """The option names the user set: `explicit`, checked; None: all of them (cfg is the run's
        configuration: its resumable options are taken, any other that differs from the
        checkpoint's is refused, as the CLI refuses a changed option)."""
        names = set(field_types())
        if explicit is None:
            return names
        unknown = set(explicit) - names
        if unknown:
            raise ConfigError(f"explicit: unknown training options {', '.join(sorted(unknown))}")
        return set(explicit)

    def _clear_run(self):
        """--overwrite: removes the outputs of the run that was in cfg.out (only what a run writes)."""
        out = self.cfg.out
        for name in (CHECKPOINT, "config.json", "train.log", "history.csv", "losses.png", "samples.png"):
            path = os.path.join(out, name)
            if os.path.isfile(path):
                os.remove(path)
        grids = os.path.join(out, "samples")
        if os.path.isdir(grids):
            for name in os.listdir(grids):
                if name.endswith(".png") and name.startswith(("epoch_", "step_")):
                    os.remove(os.path.join(grids, name))
        shutil.rmtree(os.path.join(out, "tb"), ignore_errors=True)

    @staticmethod
    def _merge(saved, given, explicit):
        """The checkpoint's config with the options the user may change on resume."""
        explicit = set(explicit or ())
        for name in sorted(explicit, key=lambda n: (n != "model", n)):   # another model: say that first
            new, old = getattr(given, name), getattr(saved, name)
            if name in TrainConfig.RESUMABLE or new == old:
                continue
            if name == "model":
                raise CheckpointError(f"checkpoint in {given.out} is from model {old!r}, not {new!r}: "
                                      f"use another --out, or --model {old}")
            raise CheckpointError(f"--{name.replace('_', '-')} {new} differs from the checkpoint's "
                                  f"{old}; a resumed run keeps its settings (only "
                                  f"{', '.join('--' + r.replace('_', '-') for r in TrainConfig.RESUMABLE)} may change)")
        for name in TrainConfig.RESUMABLE:
            if name in explicit or name == "out":
                setattr(saved, name, getattr(given, name))
        if "epochs" in explicit and given.epochs is not None:   # one length replaces the other
            saved.steps = None
        if "steps" in explicit and given.steps is not None:
            saved.epochs = None
        return saved

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self):
        rng = {"torch": torch.get_rng_state(), "noise": self.noise_gen.get_state(),
               "epoch": self.epoch_rng, "device": self.device.type}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"config": self.cfg.to_dict(), "step": self.step,
                "generator": self.G.state_dict(), "discriminator": self.D.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "rng": rng, "history": self.history.clone(),
                "train_seconds": self.train_seconds, "evals": [dict(e) for e in self.evals],
                "fastgan_version": _version()}

    def save(self):
        """Writes the checkpoint now (waits for it)."""
        self._write_in_background(None, checkpoint=True)
        self._files.wait()

    def _restore(self, ckpt):
        missing = [k for k in ("opt_g", "opt_d", "rng", "history") if k not in ckpt]
        if missing:   # load_checkpoint asks only for what sampling needs
            raise CheckpointError(f"{self.checkpoint_path} cannot be resumed: it holds no "
                                  f"{', '.join(missing)} (fastgan sample can still read it)")
        load_module_state(self.G, ckpt["generator"], self.checkpoint_path, f"{self.cfg.model} generator")
        load_module_state(self.D, ckpt["discriminator"], self.checkpoint_path, f"{self.cfg.model} discriminator")
        try:
            self.opt_g.load_state_dict(ckpt["opt_g"])
            self.opt_d.load_state_dict(ckpt["opt_d"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{self.checkpoint_path} does not fit model {self.cfg.model}: "
                                  f"{str(exc).splitlines()[0]}") from None
        self.step = int(ckpt["step"])
        history = ckpt["history"].to(torch.float64)[: self.step]
        if len(history) < self.step:  # written by fastgan <= 0.1.0 between loss syncs: unknown losses
            history = torch.cat([history, torch.full((self.step - len(history), 2), math.nan,
                                                     dtype=torch.float64)])
        self.history = history
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))
        self.evals = [dict(e) for e in ckpt.get("evals", []) if e["step"] <= self.step]
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("device") == self.device.type:
            self.noise_gen.set_state(rng["noise"])
            self.loader.generator.set_state(rng["epoch"])
            self.epoch_rng = rng["epoch"]
            if self.device.type == "cuda" and "cuda" in rng:
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        else:
            self._print(f"note: checkpoint was written on {rng.get('device')}, resuming on "
                        f"{self.device.type}: the data order and noise continue from new seeds")
        self.checkpoint_step = self.step

    # -- outputs -----------------------------------------------------------------------
    def _print(self, line, logfile=True):
        from tqdm import tqdm

        tqdm.write(line, file=self.log_stream)
        if logfile:
            with open(os.path.join(self.cfg.out, "train.log"), "a") as f:
                f.write(line + "\n")

    @torch.no_grad()
    def samples(self, z=None, labels=None):
        """G's images for z (default: the fixed noise and labels), in eval mode."""
        z = self.fixed_z if z is None else z
        labels = self.fixed_labels if z is self.fixed_z else labels
        was_training = self.G.training
        self.G.eval()
        try:
            return self.G(z, labels) if self.conditional else self.G(z)
        finally:
            self.G.train(was_training)

    def write_outputs(self, epoch_label, final=False):
        """The epoch's sample grid (also as samples.png), history.csv and, at most every
        PLOT_EVERY_S seconds and at the end, losses.png, written now (waits for them)."""
        self._write_in_background(epoch_label, final)
        self._files.wait()

    def _write_in_background(self, epoch_label=None, final=False, checkpoint=False):
        """Takes what the files need on this thread, as it is now (G's samples, the losses, the
        checkpoint's state as CPU copies), and has the writer thread write them while training
        goes on: the outputs of write_outputs when epoch_label is given, the checkpoint when
        asked. A failed write is raised here by the next call, or by fit() at its end."""
        images = history = evals = state = None
        if epoch_label is not None:
            images = self.samples().detach().float().cpu()
            history, evals = self.history, [dict(e) for e in self.evals]   # history is replaced, not changed
            if self.writer is not None:   # tensorboard stays on this thread
                self.writer.add_image("samples", torch.from_numpy(make_grid(images, self.grid_cols))[None], self.step)
                self.writer.flush()
        if checkpoint:
            state = cpu_copy(self.state_dict())
        title = f"{self.cfg.model} on {self.cfg.dataset}"
        self._files.submit(self._write_files, self.cfg.out, title, epoch_label, final, images, history, evals,
                           state)

    def _write_files(self, out, title, epoch_label, final, images, history, evals, state):
        """The writer thread's job (see _write_in_background); the only code that touches
        _csv_written, _plotted and checkpoint_step while a run trains. The checkpoint first: a
        sample grid that cannot be written must not cost the run its checkpoint. losses.png is
        redrawn at most every PLOT_EVERY_S seconds: a short epoch must not spend as long again
        redrawing its curves."""
        if state is not None:
            save_checkpoint(state, self.checkpoint_path)
            self.checkpoint_step = state["step"]
        if epoch_label is not None:
            os.makedirs(os.path.join(out, "samples"), exist_ok=True)
            grid = os.path.join(out, "samples", f"{epoch_label}.png")
            save_grid(images, grid, ncol=self.grid_cols)
            with atomic_write(os.path.join(out, "samples.png")) as f, open(grid, "rb") as src:
                shutil.copyfileobj(src, f)   # the same PNG: encoded once
            # history.csv: the whole file once (and when an evaluation adds columns or values),
            # then each epoch's new rows appended
            path = os.path.join(out, "history.csv")
            rows, n_evals = self._csv_written
            first = rows if n_evals == len(evals) and 0 < rows <= len(history) and os.path.isfile(path) else 0
            write_history(history, path, self.steps_per_epoch, evals, first_row=first)
            self._csv_written = (len(history), len(evals))
            now = time.perf_counter()
            if final or self._plotted is None or now - self._plotted >= PLOT_EVERY_S:
                plot_losses(history, os.path.join(out, "losses.png"), self.steps_per_epoch, title=title,
                            evals=evals)
                self._plotted = now

    # -- the loop ----------------------------------------------------------------------
    def fit(self):
        """Trains to total_steps, writing outputs each epoch. Returns self.history."""
        from tqdm import tqdm

        cfg = self.cfg
        if self.overwrite and self.step == 0:
            self._clear_run()
            self.overwrite = False
        with atomic_write(os.path.join(cfg.out, "config.json"), "w") as f:   # makes cfg.out
            f.write(cfg.to_json())
        if self.step >= self.total_steps:
            self._print(f"nothing to do: {cfg.out} is at step {self.step} of {self.total_steps}")
            return self.history
        if self.step:
            self._print(f"resuming {cfg.out} at step {self.step} (epoch "
                        f"{self.step // self.steps_per_epoch + 1}) of {self.total_steps}")
        if cfg.eval_every and self.evaluator is None:
            self._print(f"evaluating every {cfg.eval_every} steps on {cfg.eval_n} images: loading "
                        f"(or training, once) the {cfg.dataset} classifier", logfile=False)
            from fastgan.metrics import Evaluator

            self.evaluator = Evaluator(cfg.dataset, cfg.data_dir, self.device)
            self._print(f"classifier: {self.evaluator.classifier_info['path']} (test accuracy "
                        f"{self.evaluator.classifier_info['test_accuracy']:.2%})")
        B = cfg.batch_size
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not cfg.progress,
                   unit="step", dynamic_ncols=True, desc=f"{cfg.model}", file=sys.stderr)
        pending, t_sync, steps_since = [], time.perf_counter(), 0
        t_run = time.perf_counter()           # start of the current stretch of training
        epoch_start = self.train_seconds      # train_seconds when the epoch in progress began
        self.G.train()
        self.D.train()
        try:
            while self.step < self.total_steps:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                self.loader.generator.set_state(self.epoch_rng)
                self.batches.new_epoch(self.loader.permutation())
                if start:
                    self.batches.index.fill_(start)
                for i in range(start, self.steps_per_epoch):
                    losses = self._step()  # the batch and the noise are drawn inside the step
                    # a graph's outputs are overwritten by its next replay: keep a copy
                    pending.append(losses.clone() if self.cuda_graph else losses)
                    self.step += 1
                    steps_since += 1
                    last = self.step == self.total_steps
                    end_of_epoch = i == self.steps_per_epoch - 1
                    checkpoint = cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0
                    # a checkpoint holds every step's losses so far: sync before one is written
                    if self.step % cfg.log_every == 0 or end_of_epoch or last or checkpoint:
                        self._files.check()   # a failed write stops the run now, not an epoch later
                        values = torch.stack(pending).to("cpu", torch.float64)  # the one sync
                        self.history = torch.cat([self.history, values])
                        pending.clear()
                        now = time.perf_counter()
                        rate = steps_since * B / max(now - t_sync, 1e-9)
                        t_sync, steps_since = now, 0
                        d, g = values[-1].tolist()
                        bar.set_postfix_str(f"d_loss={d:.3f} g_loss={g:.3f} {rate:,.0f} img/s")
                        bar.update(len(values))
                        if self.writer is not None:
                            self.writer.add_scalar("loss/d", d, self.step)
                            self.writer.add_scalar("loss/g", g, self.step)
                            self.writer.add_scalar("images_per_s", rate, self.step)
                    if end_of_epoch:
                        self.epoch_rng = self.loader.generator.get_state()
                    evaluate = cfg.eval_every and (self.step % cfg.eval_every == 0 or last)
                    if evaluate or end_of_epoch or last or checkpoint:
                        self._stop_clock(t_run)  # outputs and evaluations are not training time
                        if evaluate:
                            self._evaluate()
                        if end_of_epoch or last:
                            self._end_epoch(epoch + 1, self.train_seconds - epoch_start, final=last)
                            epoch_start = self.train_seconds
                        elif checkpoint:
                            self._write_in_background(checkpoint=True)
                        t_run = t_sync = time.perf_counter()
                    if last:
                        break
            self._files.wait()   # the last files are written (or their error raised)
        except BaseException as exc:
            bar.close()
            failed = self._files.drain()   # the files in flight land; exc is the error raised
            if isinstance(exc, KeyboardInterrupt):
                if self.checkpoint_step is None:
                    where = "no checkpoint was written yet"
                else:
                    where = f"the last checkpoint (step {self.checkpoint_step}) is intact in {self.checkpoint_path}"
                if failed is not None:
                    where += f"; writing the run's files had failed: {failed}"
                print(f"\ninterrupted at step {self.step}; {where}.\nresume with: fastgan train --out "
                      f"{cfg.out} --resume", file=sys.stderr)
            elif failed is not None:
                print(f"fastgan train: writing the run's files failed too: {failed}", file=sys.stderr)
            raise
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        return self.history

    def _stop_clock(self, since):
        """Adds the training time since `since` (perf_counter) to train_seconds, after the
        device has finished the queued steps."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_seconds += time.perf_counter() - since

    def _evaluate(self):
        """Measures G now (--eval-every): classifier FID, IS and class entropy of eval_n images
        from fixed noise (seed 0, as `fastgan eval`), logged, kept in self.evals, plotted."""
        t0 = time.perf_counter()
        m = self.evaluator(self.G, self.cfg, self.cfg.eval_n, seed=0)
        row = {"step": self.step, "train_seconds": self.train_seconds, "fid": m["fid"],
               "inception_score": m["inception_score"], "class_entropy": m["class_entropy"],
               "label_accuracy": m["label_accuracy"]}
        self.evals.append(row)
        extra = f"  label accuracy {m['label_accuracy']:.3f}" if m["label_accuracy"] is not None else ""
        if m["nonfinite_images"]:
            extra += f"  ({m['nonfinite_images']} images not finite: G diverged)"
        self._print(f"eval step {self.step}: FID {m['fid']:.2f}  IS {m['inception_score']:.2f}  "
                    f"class entropy {m['class_entropy']:.2f} bits{extra}  (trained {self.train_seconds:.1f}s, "
                    f"eval {time.perf_counter() - t0:.1f}s)")
        if self.writer is not None:
            for name in ("fid", "inception_score", "class_entropy", "label_accuracy"):
                if row[name] is not None:
                    self.writer.add_scalar(f"eval/{name}", row[name], self.step)

    def _end_epoch(self, epoch, seconds, final=False):
        spe = self.steps_per_epoch
        recent = self.history[-(self.step - (epoch - 1) * spe):]
        d, g = recent.mean(0).tolist()
        steps = self.step - (epoch - 1) * spe
        self._print(f"epoch {epoch}/{self.total_epochs}  step {self.step}/{self.total_steps}  "
                    f"d_loss {d:.4f}  g_loss {g:.4f}  {steps * self.cfg.batch_size / max(seconds, 1e-9):,.0f} img/s  "
                    f"{seconds:.1f}s")
        label = f"epoch_{epoch:04d}" if self.step % spe == 0 else f"step_{self.step:07d}"
        self._write_in_background(label, final, checkpoint=True)
        if final:
            self._files.wait()
            self._print(f"done: {self.step} steps; samples in {os.path.join(self.cfg.out, 'samples.png')}, "
                        f"checkpoint {self.checkpoint_path}")


def _version():
    import fastgan

    return fastgan.__version__


def load_generator(checkpoint, device):
    """(G in eval mode, TrainConfig, checkpoint state) of a fastgan checkpoint: what sample and
    fastgan.metrics draw from."""
    state = load_checkpoint(checkpoint, map_location=device)
    cfg = state["config"]
    G, _ = build_models(cfg, device)
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
        label = _integer("--label", label)   # 3.5 was drawn as 3
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
            raise ConfigError(f"--label needs a conditional model (cgan, cdcgan); {checkpoint} "
                              f"holds {cfg.model}")
        if not 0 <= label <= 9:
            raise ConfigError(f"--label must be a digit 0-9, got {label}")
    gen = torch.Generator().manual_seed(seed)
    z = noise(n, cfg.latent_dim, cfg.noise, gen, "cpu").to(device)
    labels = None
    if conditional:
        labels = torch.full((n,), label, dtype=torch.int64) if label is not None else torch.arange(n) % 10
        labels = labels.to(device)
    with torch.no_grad():
        images = G(z, labels) if conditional else G(z)
    ncol = 10 if conditional and label is None else max(1, int(math.ceil(math.sqrt(n))))
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    save_grid(images, out, ncol=ncol)
    return images


__all__ = ["Trainer", "train_step", "sample", "load_generator", "build_models", "resolve_device", "fixed_inputs",
           "noise", "CHECKPOINT"]
