"""The GAN trainer behind `fastgan train`: the loop around the step, its checkpoints and
resumes, and when the run folder's files are written.

    from fastgan.train import Trainer, TrainConfig
    Trainer(TrainConfig(model="dcgan", epochs=5, out="runs/dcgan")).fit()

The step (fastgan.train.step) has no host syncs; the loop syncs the losses once per
`log_every` steps and hands the epoch's files to a background writer (fastgan.train.outputs).
"""

import dataclasses
import math
import os
import sys
import time

import torch

from fastgan._files import output_problem
from fastgan.data import DeviceLoader, dataset_hash, load_dataset, resolve_data_dir
from fastgan.data.loader import scale_images
from fastgan.nn import convert_sync_batchnorm
from fastgan.train.background import BackgroundWriter, cpu_copy
from fastgan.train.checkpoint import load_checkpoint, load_module_state
from fastgan.train.config import (
    DEFAULT_EPOCHS,
    USER_DATA,
    CheckpointError,
    ConfigError,
    DivergedError,
    TrainConfig,
    field_types,
)
from fastgan.train.distributed import Ranks, launched_rank
from fastgan.train.ema import GeneratorEMA
from fastgan.train.images import make_grid
from fastgan.train.outputs import CHECKPOINT, FolderLock, RunFolder
from fastgan.train.sampling import build_models, fixed_inputs, latent, model_file_changed, resolve_device, run_generator
from fastgan.train.step import Objective, build_step, make_optimizers, to_layout
from fastgan.train.superres import content_of, downsample, superres

DERIVED = ("pair",)  # found by the trainer, not given: never compared on resume


class Trainer:
    """Trains one GAN run in cfg.out: checkpoint.pt, samples/, samples.png, history.csv,
    losses.png, train.log, config.json (and tb/ with tensorboard)."""

    def __init__(
        self,
        cfg,
        resume=False,
        explicit=None,
        log=None,
        evaluator=None,
        overwrite=False,
        make_evaluator=None,
        allow_changed_data=False,
        models=None,
        data=None,
        allow_changed_model=False,
        feature_net=None,
        make_feature_net=None,
    ):
        """resume: continue the run in cfg.out from its checkpoint, with the options named in
        `explicit` taken from cfg (only TrainConfig.RESUMABLE ones may differ from the
        checkpoint's); explicit None: every option (cfg is the run's whole configuration).
        Without resume, a folder that already holds a run (checkpoint.pt) is refused unless
        overwrite, which removes that run's outputs when fit() starts. --eval-every measures G
        with `evaluator` (a fastgan.metrics.Evaluator), or with make_evaluator(cfg, device)'s,
        made when fit() starts (the trainer does not import the metrics). A resumed run must
        find the data it was trained on (the checkpoint keeps its sha256) unless
        allow_changed_data. While fit() runs it holds an OS lock on cfg.out: a second run
        there is refused, naming the first one's PID.

        Under torchrun (fastgan.train.distributed) each process is one data-parallel rank: it
        trains on its part of each global batch of (ranks x cfg.batch_size), the gradients are
        averaged over the ranks inside the step, and rank 0 alone prints and writes cfg.out.

        A user's pair (fastgan.fit): cfg.model "user" with models=(G, D) (torch.nn modules, run
        as fastgan.convert's copies unless cfg.convert is False), or cfg.model a .py file
        defining build() -> (G, D), which --resume loads again (refused if the file changed
        since, unless allow_changed_model). data=(images, labels): uint8 (N, [C,] H, W) images
        and (N,) labels or None, for cfg.dataset "user". feature_net: srgan's feature loss reads
        the features of this frozen module (fastgan.metrics.feature_net: the measuring
        classifier's penultimate layer), or make_feature_net(cfg)'s; needed when cfg.feature_weight
        > 0, and the same one on --resume for an exact continuation."""
        self.log_stream = log or sys.stdout
        self.main = launched_rank() == 0  # known before the process group is joined (below)
        cfg.normalize()
        if cfg.user_model() and cfg.model.endswith(".py"):  # kept absolute: --resume finds it from anywhere
            cfg.model = os.path.abspath(cfg.model)
        problem = output_problem(cfg.out, folder=True) if self.main else None  # (it writes a probe)
        if problem:  # before any work: the first output is written after an epoch
            raise ConfigError(f"--out {problem}")
        try:  # config.json, train.log and the messages name it
            cfg.out.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"--out {cfg.out!r} is not valid UTF-8: give a folder name that is") from None
        self.lock = FolderLock(cfg.out)
        if self.main:  # (the other ranks never touch the folder)
            self.lock.check()  # a run in progress there: refused before any work
        checkpoint_path = os.path.join(cfg.out, CHECKPOINT)
        self.overwrite = bool(overwrite) and not resume
        if not resume and not overwrite and os.path.exists(checkpoint_path):
            raise ConfigError(
                f"--out {cfg.out} holds a run already ({checkpoint_path}): --resume "
                f"continues it, --overwrite starts again there, or choose another --out"
            )
        ckpt = None
        if resume:
            if not os.path.isfile(checkpoint_path):
                raise CheckpointError(f"--resume: no checkpoint in {cfg.out} ({checkpoint_path} does not exist)")
            ckpt = load_checkpoint(checkpoint_path)
            cfg = self._merge(ckpt["config"], cfg, self._explicit(cfg, explicit))
            changed = model_file_changed(cfg)
            if changed and not allow_changed_model:
                raise CheckpointError(
                    f"--resume: {changed[0]} is not the model file {checkpoint_path} was trained with "
                    + (
                        "(it is gone)"
                        if changed[1] is None
                        else f"(sha256 {changed[1][:12]}... against {cfg.pair['sha256'][:12]}...)"
                    )
                    + "; --allow-changed-model resumes with it anyway"
                )
            if changed and changed[1] is not None:
                cfg.pair["sha256"] = changed[1]
        cfg.validate()
        if cfg.dataset == USER_DATA and data is None:
            raise ConfigError("dataset 'user': give the images (Trainer(..., data=(images, labels)), fastgan.fit)")
        if cfg.eval_every and cfg.dataset == USER_DATA:
            raise ConfigError("--eval-every measures with a dataset's classifier: it needs a named dataset")
        self.cfg = cfg
        self.ranks, self.device = Ranks.setup(resolve_device(cfg.device), cfg.dist_timeout)
        world = self.ranks.world_size

        if data is not None:
            images, labels = data
            labels_given = labels is not None
            labels = torch.zeros(images.shape[0], dtype=torch.int64) if labels is None else labels
        elif cfg.discogan():  # both domains, as pairs of channels (fastgan.data.domains)
            from fastgan.data.domains import load_pairs

            images, labels = load_pairs(cfg.domain_spec(), cfg.data_dir, cfg.download)
            labels_given = True
        else:
            images, labels = load_dataset(cfg.dataset, cfg.data_dir, train=True, download=cfg.download)
            labels_given = True
        images = images.unsqueeze(1) if images.dim() == 3 else images  # (N, C, H, W)
        self.data_sha256 = dataset_hash(images, labels)
        self.allow_changed_data = bool(allow_changed_data)
        # the folder it read, kept absolute in the checkpoint: eval and --resume find it from anywhere
        if cfg.dataset != USER_DATA:
            cfg.data_dir = resolve_data_dir(cfg.dataset, cfg.data_dir, cfg.download)
        torch.manual_seed(cfg.seed)
        pair = build_models(cfg, self.device, models, tuple(images.shape[1:]), labels_given)
        if cfg.sync_bn:
            pair = tuple(convert_sync_batchnorm(net) for net in pair)
            if self.ranks.parallel and (cfg.r1 or cfg.gp) and _has_batch_norm(pair[1]):
                raise ConfigError(
                    "--sync-bn with --r1/--gp: the penalty differentiates D twice, and a synchronized "
                    "batch norm is differentiable once; train without --sync-bn (each rank's statistics)"
                )
        self.G, self.D = to_layout(*pair, cfg.channels_last)
        self.loader = DeviceLoader(
            images,
            labels,
            cfg.batch_size,
            self.device,
            seed=cfg.seed + 1,
            sample_shape=cfg.sample_shape() if cfg.pair else None,
            shard=(self.ranks.rank, world),
        )
        self.conditional = cfg.conditional()
        self.objective = Objective.of(cfg)
        if superres(cfg):
            if cfg.feature_weight and feature_net is None and make_feature_net is not None:
                feature_net = make_feature_net(cfg)
            if cfg.feature_weight and feature_net is None:
                raise ConfigError(
                    "srgan's feature loss (--feature-weight) reads the measuring classifier's features: give "
                    "Trainer(..., feature_net=fastgan.metrics.feature_net(dataset)), or --feature-weight 0"
                )
            content = content_of(cfg, feature_net, self.device)
            self.objective = dataclasses.replace(self.objective, head=content)
        # an epoch is one pass of D over the data: n_critic batches a step
        self.steps_per_epoch = self.loader.steps_per_epoch // cfg.n_critic
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"--n-critic {cfg.n_critic} takes more batches a step than the data has "
                f"({self.loader.steps_per_epoch} of {cfg.batch_size * world})"
            )
        self.total_steps = cfg.steps or (cfg.epochs or DEFAULT_EPOCHS) * self.steps_per_epoch
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        lr_d, lr_g = cfg.learning_rates()
        # the whole step in one CUDA graph on CUDA (fastgan.train.graph), unless told otherwise
        self.cuda_graph = self.device.type == "cuda" and cfg.cuda_graph and not cfg.compile
        self.opt_g, self.opt_d = make_optimizers(
            self.G, self.D, self.device, cfg.optimizer, lr_g, lr_d, (cfg.beta1, cfg.beta2), self.cuda_graph
        )
        self.grad_clip = cfg.clip()
        self.noise_gen = torch.Generator(device=self.device)
        self.noise_gen.manual_seed(cfg.seed + 2)
        self.ema = GeneratorEMA(self.G, cfg.ema) if cfg.ema else None
        G, D = (torch.compile(self.G), torch.compile(self.D)) if cfg.compile else (self.G, self.D)
        shard = self.ranks.shard  # every rank draws the global batch's noise and keeps its rows

        def step_of(objective):
            return build_step(
                G,
                D,
                self.opt_g,
                self.opt_d,
                self.loader,
                lambda: shard(latent(cfg, cfg.batch_size * world, self.noise_gen, self.device)),
                self.conditional,
                self.grad_clip,
                self.cuda_graph,
                generators=(self.noise_gen,),
                precision=cfg.precision,
                objective=objective,
                ema=self.ema,
                uniform=lambda n: shard(torch.rand(n * world, generator=self.noise_gen, device=self.device)),
                grad_reduce=self.ranks.average_gradients if self.ranks.parallel else None,
            )

        # lazy R1 (--r1-every K): the penalty, K times as strong, on every K-th step only. That
        # step is its own callable (and its own CUDA graph): the others skip R1's double backward.
        lazy = cfg.r1 and cfg.r1_every > 1
        self._step = step_of(dataclasses.replace(self.objective, r1=0.0) if lazy else self.objective)
        self._r1_step = step_of(dataclasses.replace(self.objective, r1=cfg.r1 * cfg.r1_every)) if lazy else None
        self.fixed_z, self.fixed_labels, self.grid_cols = fixed_inputs(cfg, self.device)
        if superres(cfg):  # the grids super-resolve the first training images
            n = cfg.num_samples
            self.fixed_z = downsample(scale_images(images[:n]).to(self.device), cfg.sr_factor)
            self.grid_cols = max(1, int(math.sqrt(len(self.fixed_z))))
        self.folder = RunFolder(cfg.out, self.steps_per_epoch, self.grid_cols, f"{cfg.model} on {cfg.dataset}")
        self.checkpoint_path = self.folder.checkpoint_path
        self.step = 0
        self.history = torch.zeros(0, 2, dtype=torch.float64)
        self.train_seconds = 0.0  # time spent training: steps and loss syncs, not outputs or evals
        self.evals = []  # one dict per --eval-every evaluation (see _evaluate)
        self.evaluator = evaluator
        self.make_evaluator = make_evaluator
        self.epoch_rng = self.loader.generator.get_state()  # shuffle state of the epoch in progress
        self._files = BackgroundWriter()  # writes the outputs while training goes on
        if ckpt is not None:
            self._restore(ckpt)
        self.ranks.broadcast_state(self.G, self.D, *([self.ema.module] if self.ema is not None else []))
        self.writer = None
        if cfg.tensorboard and self.main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "--tensorboard needs the tensorboard package: "
                    "pip install tensorboard  (or: pip install 'fastgan[tensorboard]')"
                ) from None
            self.writer = SummaryWriter(os.path.join(cfg.out, "tb"), purge_step=self.step + 1)

    @property
    def global_batch(self):
        """Images per step over all ranks (cfg.batch_size is each rank's)."""
        return self.cfg.batch_size * self.ranks.world_size

    @property
    def checkpoint_step(self):
        """The step of the last checkpoint written or resumed from (None: none yet)."""
        return self.folder.checkpoint_step

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

    @staticmethod
    def _merge(saved, given, explicit):
        """The checkpoint's config with the options the user may change on resume."""
        explicit = set(explicit or ())
        for name in sorted(explicit, key=lambda n: (n != "model", n)):  # another model: say that first
            new, old = getattr(given, name), getattr(saved, name)
            if name in TrainConfig.RESUMABLE or new == old or name in DERIVED:
                continue
            if name == "latent_dim" and saved.user_model():  # read off the user's G
                continue
            if name == "model":
                raise CheckpointError(
                    f"checkpoint in {given.out} is from model {old!r}, not {new!r}: use another --out, or --model {old}"
                )
            raise CheckpointError(
                f"--{name.replace('_', '-')} {new} differs from the checkpoint's "
                f"{old}; a resumed run keeps its settings (only "
                f"{', '.join('--' + r.replace('_', '-') for r in TrainConfig.RESUMABLE)} may change)"
            )
        for name in TrainConfig.RESUMABLE:
            if name in explicit or name == "out":
                setattr(saved, name, getattr(given, name))
        if "epochs" in explicit and given.epochs is not None:  # one length replaces the other
            saved.steps = None
        if "steps" in explicit and given.steps is not None:
            saved.epochs = None
        return saved

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self):
        rng = {
            "torch": torch.get_rng_state(),
            "noise": self.noise_gen.get_state(),
            "epoch": self.epoch_rng,
            "device": self.device.type,
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            **({"generator_ema": self.ema.state_dict()} if self.ema is not None else {}),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": rng,
            "history": self.history.clone(),
            "train_seconds": self.train_seconds,
            "evals": [dict(e) for e in self.evals],
            "data_sha256": self.data_sha256,
            "world_size": self.ranks.world_size,  # a resume with another rank count recomputes the data order
            "fastgan_version": _version(),
        }

    def save(self):
        """Writes the checkpoint now (waits for it)."""
        self._write_in_background(None, checkpoint=True)
        self._files.wait()

    def _restore(self, ckpt):
        missing = [k for k in ("opt_g", "opt_d", "rng", "history") if k not in ckpt]
        if missing:  # load_checkpoint asks only for what sampling needs
            raise CheckpointError(
                f"{self.checkpoint_path} cannot be resumed: it holds no "
                f"{', '.join(missing)} (fastgan sample can still read it)"
            )
        saved = ckpt.get("data_sha256")
        if saved is not None and saved != self.data_sha256 and not self.allow_changed_data:
            where = f" in {self.cfg.data_dir}" if self.cfg.data_dir else ""
            raise CheckpointError(
                f"--resume: the {self.cfg.dataset} data{where} is not what {self.checkpoint_path} "
                f"was trained on (sha256 {self.data_sha256[:12]}... against {saved[:12]}...); "
                "--allow-changed-data resumes on it anyway"
            )
        load_module_state(self.G, ckpt["generator"], self.checkpoint_path, f"{self.cfg.model} generator")
        load_module_state(self.D, ckpt["discriminator"], self.checkpoint_path, f"{self.cfg.model} discriminator")
        if self.ema is not None:
            if "generator_ema" not in ckpt:
                raise CheckpointError(f"{self.checkpoint_path} holds no generator_ema for --ema {self.cfg.ema}")
            load_module_state(self.ema.module, ckpt["generator_ema"], self.checkpoint_path, "generator EMA")
        try:
            self.opt_g.load_state_dict(ckpt["opt_g"])
            self.opt_d.load_state_dict(ckpt["opt_d"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{self.checkpoint_path} does not fit model {self.cfg.model}: {str(exc).splitlines()[0]}"
            ) from None
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            _check_optimizer_state(
                opt, lambda m, name=name: CheckpointError(f"{self.checkpoint_path}: bad {name} in checkpoint: {m}")
            )
        self.step = int(ckpt["step"])
        history = ckpt["history"].to(torch.float64)[: self.step]
        missing = self.step - len(history)
        if missing > self.cfg.log_every:  # a step no history could reach (1e12: an allocator crash)
            raise CheckpointError(
                f"{self.checkpoint_path}: bad history in checkpoint: {len(history)} losses "
                f"for step {self.step} (a checkpoint lacks at most the {self.cfg.log_every} "
                "since its last loss sync)"
            )
        if missing > 0:  # written between loss syncs: those losses are unknown
            history = torch.cat([history, torch.full((missing, 2), math.nan, dtype=torch.float64)])
        self.history = history
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))
        self.evals = [dict(e) for e in ckpt.get("evals", []) if e["step"] <= self.step]
        rng = ckpt["rng"]
        same_device = rng.get("device") == self.device.type
        for key, device in (("torch", "cpu"), ("noise", self.device), ("epoch", self.device), ("cuda", self.device)):
            if key in rng and (key == "torch" or same_device):  # before any state is set
                try:
                    torch.Generator(device=device).set_state(rng[key])
                except RuntimeError as exc:
                    raise CheckpointError(
                        f"{self.checkpoint_path}: bad rng in checkpoint: rng[{key!r}] is not a "
                        f"{torch.device(device).type} generator's state "
                        f"({str(exc).splitlines()[0]})"
                    ) from None
        torch.set_rng_state(rng["torch"])
        if same_device:
            self.noise_gen.set_state(rng["noise"])
            self.loader.generator.set_state(rng["epoch"])
            self.epoch_rng = rng["epoch"]
            if self.device.type == "cuda" and "cuda" in rng:
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        else:
            self._print(
                f"note: checkpoint was written on {rng.get('device')}, resuming on "
                f"{self.device.type}: the data order and noise continue from new seeds"
            )
        saved_world = ckpt.get("world_size", 1)
        if saved_world != self.ranks.world_size:
            self._recompute_epoch_order()
            self._print(
                f"note: {self.checkpoint_path} was trained on {saved_world} rank{'s' * (saved_world != 1)}, "
                f"resuming on {self.ranks.world_size}: the global batch is now {self.ranks.world_size} x "
                f"{self.cfg.batch_size}, and the data order is recomputed from step {self.step} (epoch "
                f"{self.step // self.steps_per_epoch + 1}, batch {self.step % self.steps_per_epoch + 1} of "
                f"{self.steps_per_epoch})"
            )
        self.folder.checkpoint_step = self.step

    def _recompute_epoch_order(self):
        """The shuffle state of the epoch that self.step falls in, for this run's steps per epoch:
        epoch e's order is the (e+1)-th permutation the loader's seeded generator draws."""
        gen = self.loader.generator
        gen.manual_seed(self.cfg.seed + 1)
        for _ in range(self.step // self.steps_per_epoch):
            self.loader.permutation()
        self.epoch_rng = gen.get_state()

    # -- outputs -----------------------------------------------------------------------
    def _print(self, line, logfile=True):
        if not self.main:  # rank 0 speaks for the run
            return
        from tqdm import tqdm

        tqdm.write(line, file=self.log_stream)
        if logfile:
            self.folder.log(line)

    @torch.no_grad()
    def samples(self, z=None, labels=None):
        """G's images for z (default: the fixed noise and labels), in eval mode."""
        z = self.fixed_z if z is None else z
        labels = self.fixed_labels if z is self.fixed_z else labels
        G = self.sampling_generator()
        was_training = G.training
        G.eval()
        try:
            return run_generator(G, self.cfg, z, labels)
        finally:
            G.train(was_training)

    def sampling_generator(self):
        """The G that grids and evaluations draw from: the average of G's weights (--ema) from
        --ema-start on, unless --no-ema-samples; else G."""
        if self.ema is not None and self.cfg.ema_samples and self.step >= self.cfg.ema_start:
            return self.ema.module
        return self.G

    def write_outputs(self, epoch_label, final=False):
        """The epoch's sample grid (also as samples.png), history.csv and, at most every
        PLOT_EVERY_S seconds and at the end, losses.png, written now (waits for them)."""
        self._write_in_background(epoch_label, final)
        self._files.wait()

    def _write_in_background(self, epoch_label=None, final=False, checkpoint=False):
        """Takes what the files need on this thread, as it is now (G's samples, the losses, the
        checkpoint's state as CPU copies), and has the writer thread write them (RunFolder.write)
        while training goes on: the outputs of write_outputs when epoch_label is given, the
        checkpoint when asked. A failed write is raised here by the next call, or by fit()."""
        if not self.main:  # rank 0 writes the run's files; the others only check what it checks
            if checkpoint and self.cfg.stop_on_nan and not _finite_weights(self._weights()):
                raise DivergedError(f"the weights are not finite at step {self.step}")
            return
        images = history = evals = state = None
        if epoch_label is not None:
            images = self.samples().detach().float().cpu()
            history, evals = self.history, [dict(e) for e in self.evals]  # history is replaced, not changed
            if self.writer is not None:  # tensorboard stays on this thread
                self.writer.add_image("samples", torch.from_numpy(make_grid(images, self.grid_cols))[None], self.step)
                self.writer.flush()
        if checkpoint:
            state = cpu_copy(self.state_dict())
            if self.cfg.stop_on_nan and not _finite_weights(state):  # keep the last finite checkpoint
                raise DivergedError(self._diverged(f"the weights are not finite at step {self.step}"))
        self._files.submit(self.folder.write, epoch_label, final, images, history, evals, state)

    # -- the loop ----------------------------------------------------------------------
    def _weights(self):
        return {"generator": self.G.state_dict(), "discriminator": self.D.state_dict()}

    def fit(self):
        """Trains to total_steps, writing outputs each epoch. Returns self.history. Under torchrun,
        leaves the process group at the end (if the trainer joined it)."""
        try:
            if self.main:
                self.lock.acquire()  # one run per folder; released however fit() ends
            return self._fit()
        finally:
            self.lock.release()
            self.ranks.close()

    def _fit(self):
        if not self._start():
            return self.history
        run = _Stretch(self)
        try:
            while self.step < self.total_steps:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                self._begin_epoch(start)
                for i in range(start, self.steps_per_epoch):
                    run.pending.append(self._train_one())
                    last = self.step == self.total_steps
                    end_of_epoch = i == self.steps_per_epoch - 1
                    checkpoint = self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0
                    # a checkpoint holds every step's losses so far: sync before one is written
                    if self.step % self.cfg.log_every == 0 or end_of_epoch or last or checkpoint:
                        self._sync_losses(run)
                    if end_of_epoch:
                        self.epoch_rng = self.loader.generator.get_state()
                    evaluate = self.cfg.eval_every and (self.step % self.cfg.eval_every == 0 or last)
                    if evaluate or end_of_epoch or last or checkpoint:
                        self._stop_clock(run.started)  # outputs and evaluations are not training time
                        if evaluate:
                            self._evaluate()
                        if end_of_epoch or last:
                            self._end_epoch(epoch + 1, self.train_seconds - run.epoch_start, final=last)
                            run.epoch_start = self.train_seconds
                        elif checkpoint:
                            self._write_in_background(checkpoint=True)
                        run.restart()
                    if last:
                        break
            self._files.wait()  # the last files are written (or their error raised)
        except BaseException as exc:
            run.bar.close()
            self._report_stop(exc)
            raise
        finally:
            run.bar.close()
            if self.writer is not None:
                self.writer.close()
        return self.history

    def _start(self):
        """What fit() does before its first step: --overwrite clears the folder, config.json, the
        resume line, the evaluator. False when there is nothing to train."""
        cfg = self.cfg
        if cfg.eval_every and self.evaluator is None and self.make_evaluator is None:
            raise ConfigError(
                "--eval-every needs an evaluator: Trainer(..., evaluator="
                "fastgan.metrics.Evaluator(dataset, data_dir, device))"
            )
        if self.overwrite and self.step == 0:
            if self.main:
                self.folder.clear()
            self.overwrite = False
        stale = self.folder.remove_stale_temps() if self.main else []
        if stale:
            self._print(
                f"removed {len(stale)} temporary file{'s' * (len(stale) > 1)} that a killed run left in {cfg.out}",
                logfile=False,
            )
        if self.step >= self.total_steps:  # (config.json stays the run's: nothing changes)
            self._print(f"nothing to do: {cfg.out} is at step {self.step} of {self.total_steps}")
            return False
        if self.main:
            self.folder.write_config(cfg)  # makes cfg.out
        for note in cfg.objective_warnings() + self._model_warnings():
            self._print(f"warning: {note}")
        if self.step:
            self._print(
                f"resuming {cfg.out} at step {self.step} (epoch "
                f"{self.step // self.steps_per_epoch + 1}) of {self.total_steps}"
            )
        if cfg.eval_every and self.evaluator is None and self.main:  # rank 0 evaluates
            self._print(
                f"evaluating every {cfg.eval_every} steps on {cfg.eval_n} images: loading "
                f"(or training, once) the {cfg.dataset} classifier",
                logfile=False,
            )
            self.evaluator = self.make_evaluator(cfg, self.device)
            info = self.evaluator.classifier_info
            self._print(f"classifier: {info['path']} (test accuracy {info['test_accuracy']:.2%})")
        self.G.train()
        self.D.train()
        self._first_step = self.step  # img/s of a resumed epoch counts this process's steps only
        self._nonfinite_at = None
        return True

    def _model_warnings(self):
        """Objective options that run but suit this D badly (printed once, with the config's)."""
        norms = [n for n, m in self.D.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if self.cfg.gp and norms:
            return [
                f"--gp with batch norm in D ({norms[0]}): the penalty is per sample, and batch norm "
                "mixes the samples of a batch (WGAN-GP leaves it out of the critic)"
            ]
        return []

    def _begin_epoch(self, start):
        """The epoch's data order (the same after a resume: its shuffle state is checkpointed),
        from batch `start` on."""
        self.loader.generator.set_state(self.epoch_rng)
        self.loader.new_epoch(self.loader.permutation(), start * self.cfg.n_critic)

    def _train_one(self):
        """One step (the batch and the noise are drawn inside it); its losses, not synced."""
        lazy_r1 = self._r1_step is not None and self.step % self.cfg.r1_every == 0
        losses = (self._r1_step if lazy_r1 else self._step)()
        self.step += 1
        if self.ema is not None and self.step == self.cfg.ema_start:
            # the average starts from G as it is after --ema-start steps: what the grids and
            # evaluations of that step see (sampling_generator), and the checkpoint keeps
            self.ema.reset()
        # a graph's outputs are overwritten by its next replay: keep a copy
        return losses.clone() if self.cuda_graph else losses

    def _sync_losses(self, run):
        """The one host sync: the pending losses into history, the progress bar, tensorboard. A
        failed background write stops the run here, not an epoch later."""
        self._files.check()
        # the global batch's losses: each rank's mean loss averaged over the ranks
        values = self.ranks.mean(torch.stack(run.pending)).to("cpu", torch.float64)
        self.history = torch.cat([self.history, values])
        run.pending.clear()
        self._check_finite(values)
        rate = run.images_per_second(len(values) * self.global_batch)
        d, g = values[-1].tolist()
        run.bar.set_postfix_str(f"d_loss={d:.3f} g_loss={g:.3f} {rate:,.0f} img/s")
        run.bar.update(len(values))
        if self.writer is not None:
            self.writer.add_scalar("loss/d", d, self.step)
            self.writer.add_scalar("loss/g", g, self.step)
            self.writer.add_scalar("images_per_s", rate, self.step)

    def _check_finite(self, values):
        """Non-finite losses among the steps just synced: a warning naming the first such step
        (once), and with --stop-on-nan the end of the run (DivergedError)."""
        bad = (~torch.isfinite(values)).any(1).nonzero()
        if not len(bad) or self._nonfinite_at is not None:
            return
        self._nonfinite_at = self.step - len(values) + int(bad[0]) + 1
        d, g = values[int(bad[0])].tolist()
        what = f"the losses are not finite from step {self._nonfinite_at} (d_loss {d}, g_loss {g})"
        if self.cfg.stop_on_nan:
            raise DivergedError(self._diverged(what))
        self._print(f"warning: {what}: training diverged; going on (--no-stop-on-nan)")

    def _diverged(self, what):
        kept = (
            f"the last checkpoint (step {self.checkpoint_step}) is intact in {self.checkpoint_path}"
            if self.checkpoint_step is not None
            else "no checkpoint was written"
        )
        message = f"training diverged: {what}; {kept}. A lower --lr may help; --no-stop-on-nan trains on regardless"
        if self.main:
            self.folder.log(f"error: {message}")
        return message

    def _report_stop(self, exc):
        """fit() is ending on an exception: the files in flight land first; Ctrl-C says where the
        last checkpoint is and how to resume, and a failed write is reported too."""
        failed = self._files.drain()
        if not self.main:
            return
        if isinstance(exc, KeyboardInterrupt):
            if self.checkpoint_step is None:
                where = "no checkpoint was written yet"
            else:
                where = f"the last checkpoint (step {self.checkpoint_step}) is intact in {self.checkpoint_path}"
            if failed is not None:
                where += f"; writing the run's files had failed: {failed}"
            print(
                f"\ninterrupted at step {self.step}; {where}.\nresume with: fastgan train --out "
                f"{self.cfg.out} --resume",
                file=sys.stderr,
            )
        elif failed is not None:
            print(f"fastgan train: writing the run's files failed too: {failed}", file=sys.stderr)

    def _stop_clock(self, since):
        """Adds the training time since `since` (perf_counter) to train_seconds, after the
        device has finished the queued steps."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_seconds += time.perf_counter() - since

    def _evaluate(self):
        """Measures G now (--eval-every): classifier FID, IS and class entropy of eval_n images
        from fixed noise (seed 0, as `fastgan eval`), logged, kept in self.evals, plotted.
        Rank 0's job: the others go on to the next step and wait for it there."""
        if not self.main:
            return
        t0 = time.perf_counter()
        m = self.evaluator(self.sampling_generator(), self.cfg, self.cfg.eval_n, seed=0)
        row = {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "fid": m["fid"],
            "inception_score": m["inception_score"],
            "class_entropy": m["class_entropy"],
            "label_accuracy": m["label_accuracy"],
        }
        self.evals.append(row)
        extra = f"  label accuracy {m['label_accuracy']:.3f}" if m["label_accuracy"] is not None else ""
        if m["nonfinite_images"]:
            extra += f"  ({m['nonfinite_images']} images not finite: G diverged)"
        self._print(
            f"eval step {self.step}: FID {m['fid']:.2f}  IS {m['inception_score']:.2f}  "
            f"class entropy {m['class_entropy']:.2f} bits{extra}  (trained {self.train_seconds:.1f}s, "
            f"eval {time.perf_counter() - t0:.1f}s)"
        )
        if self.writer is not None:
            for name in ("fid", "inception_score", "class_entropy", "label_accuracy"):
                if row[name] is not None:
                    self.writer.add_scalar(f"eval/{name}", row[name], self.step)

    def _end_epoch(self, epoch, seconds, final=False):
        spe = self.steps_per_epoch
        recent = self.history[-(self.step - (epoch - 1) * spe) :]
        d, g = recent.mean(0).tolist()
        steps = self.step - max((epoch - 1) * spe, self._first_step)  # trained in `seconds`
        self._print(
            f"epoch {epoch}/{self.total_epochs}  step {self.step}/{self.total_steps}  "
            f"d_loss {d:.4f}  g_loss {g:.4f}  {steps * self.global_batch / max(seconds, 1e-9):,.0f} img/s  "
            f"{seconds:.1f}s"
        )
        label = f"epoch_{epoch:04d}" if self.step % spe == 0 else f"step_{self.step:07d}"
        self._write_in_background(label, final, checkpoint=True)
        if final:
            self._files.wait()
            self._print(
                f"done: {self.step} steps; samples in {os.path.join(self.cfg.out, 'samples.png')}, "
                f"checkpoint {self.checkpoint_path}"
            )


class _Stretch:
    """fit()'s bookkeeping between two pauses: the steps' unsynced losses, the progress bar, and
    its two clocks (since the last loss sync, for img/s; since training last resumed, for
    train_seconds)."""

    def __init__(self, trainer):
        from tqdm import tqdm

        self.bar = tqdm(
            total=trainer.total_steps,
            initial=trainer.step,
            disable=not trainer.cfg.progress or not trainer.main,
            unit="step",
            dynamic_ncols=True,
            desc=f"{trainer.cfg.model}",
            file=sys.stderr,
        )
        self.pending = []
        self.epoch_start = trainer.train_seconds  # train_seconds when the epoch in progress began
        self.restart()

    def restart(self):
        """Training goes on after outputs or an evaluation: neither clock counts the pause."""
        self.started = self.synced = time.perf_counter()

    def images_per_second(self, images):
        now = time.perf_counter()
        rate = images / max(now - self.synced, 1e-9)
        self.synced = now
        return rate


def _check_optimizer_state(opt, bad):
    """bad(message) unless each parameter's optimizer state has the parameter's shape and dtype
    (load_state_dict checks the counts only; a wrong shape would fail inside the first step)."""
    for group in opt.param_groups:
        for p in group["params"]:
            for key, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and (v.shape != p.shape or v.dtype != p.dtype):
                    raise bad(
                        f"state {key!r} of a parameter of shape {tuple(p.shape)} is a {v.dtype} tensor "
                        f"of shape {tuple(v.shape)}"
                    )


def _has_batch_norm(module):
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _finite_weights(state):
    """Whether the generator's and discriminator's tensors in a (CPU) state are all finite."""
    return all(
        bool(torch.isfinite(t).all())
        for name in ("generator", "discriminator")
        for t in state[name].values()
        if t.is_floating_point()
    )


def _version():
    import fastgan

    return fastgan.__version__


__all__ = ["Trainer", "CHECKPOINT"]
