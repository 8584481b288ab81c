"""The `fastgan` command: train, sample, info.

    fastgan train                                   # dcgan on the embedded mnist-5k
    fastgan train --model dcgan --dataset fashion-mnist --data-dir ~/data --epochs 20
    fastgan train --out runs/dcgan-mnist-5k --resume  # continue an interrupted run
    torchrun --nproc-per-node 2 -m fastgan train --sync-bn  # data-parallel, one process per rank
    fastgan sample --checkpoint runs/dcgan-mnist-5k/checkpoint.pt --n 64 --out grid.png
    fastgan eval --checkpoint runs/dcgan-mnist-5k/checkpoint.pt --n 10000
    fastgan info

Bad input (unknown names, missing data, impossible options, unreadable checkpoints) prints
one line on stderr and exits with code 2; a run that diverged (non-finite losses), or whose
other ranks died or hung (under torchrun), exits with 1;
Ctrl-C exits with 130 and SIGTERM with 143, both after the write in flight has landed.
"""

import argparse
import dataclasses
import os
import signal
import sys
import threading

from fastgan._argtypes import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    add_objective_options,
    model_or_file,
    output,
    positive_int,
    seed,
    widths,
)
from fastgan._options import CHOICES

S = argparse.SUPPRESS  # train options the user did not give stay out of the namespace (see cmd_train)


def build_parser():
    from fastgan.train.config import DEFAULT_EPOCHS, TrainConfig

    default = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

    def choice(group, name):  # choices and help from the one table (fastgan._options.CHOICES)
        group.add_argument(
            f"--{name.replace('_', '-')}", choices=list(CHOICES[name].names()), default=S, help=CHOICES[name].describe()
        )

    parser = argparse.ArgumentParser(prog="fastgan", description="Train small GANs fast on fused C++/CUDA kernels.")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,eval,info,bench}")
    sub.required = True

    t = sub.add_parser(
        "train",
        help="train a GAN (default: dcgan on the embedded mnist-5k)",
        description="Train a GAN. Writes checkpoint.pt, samples.png, samples/, "
        "history.csv, losses.png and train.log into --out.",
    )
    t.add_argument(
        "--model",
        type=model_or_file(tuple(CHOICES["model"].names())),
        default=S,
        metavar="{" + ",".join(CHOICES["model"].names()) + "} or FILE.py",
        help=CHOICES["model"].describe() + "; or your own GAN: a .py file defining build() -> (G, D), or "
        "classes Generator and Discriminator (plain torch.nn; run on fastgan's fused ops, see --no-convert)",
    )
    choice(t, "dataset")
    t.add_argument(
        "--domains",
        default=S,
        help="discogan: its two unpaired domains A:B, each a dataset, optionally -rot90 (independently shuffled, "
        "rotated 90 degrees); A must be --dataset (default: DATASET:DATASET-rot90)",
    )
    t.add_argument("--data-dir", default=S, help="folder with the IDX files (or torchvision's root)")
    t.add_argument(
        "--download",
        action="store_true",
        default=S,
        help="fetch the IDX files into --data-dir if missing (md5-checked)",
    )
    n = t.add_mutually_exclusive_group()
    n.add_argument("--epochs", type=positive_int, default=S, help=f"epochs (default: {DEFAULT_EPOCHS})")
    n.add_argument("--steps", type=positive_int, default=S, help="total steps instead of epochs")
    t.add_argument("--batch-size", type=positive_int, default=S, help=f"batch size (default: {default['batch_size']})")
    t.add_argument(
        "--lr", type=float, default=S, help=f"Adam learning rate (default: {default['lr']}; RMSprop: --lr-d, --lr-g)"
    )
    t.add_argument("--beta1", type=float, default=S, help=f"Adam beta1 (default: {default['beta1']})")
    choice(t, "optimizer")
    t.add_argument("--lr-d", type=float, default=S, help="discriminator learning rate")
    t.add_argument("--lr-g", type=float, default=S, help="generator learning rate")
    t.add_argument("--grad-clip", type=float, default=S, help="clip gradient norms (0: off)")
    choice(t, "noise")
    t.add_argument("--dropout", type=float, default=S, help=f"discriminator dropout (default: {default['dropout']})")
    choice(t, "g_act")
    t.add_argument(
        "--latent-dim",
        type=positive_int,
        default=S,
        help="latent size (default: 100; infogan: 62, beside its codes; discogan takes none)",
    )
    t.add_argument("--g-widths", type=widths, default=S, help="generator widths, e.g. 256,512,1024")
    t.add_argument("--d-widths", type=widths, default=S, help="discriminator widths, e.g. 1024,512,256")
    choice(t, "backend")
    t.add_argument("--device", default=S, help=f"auto, cpu, cuda or cuda:N (default: {default['device']})")
    t.add_argument("--seed", type=seed, default=S, help=f"random seed (default: {default['seed']})")
    t.add_argument("--out", default=S, help="run folder (default: runs/MODEL-DATASET)")
    again = t.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an --out that holds one (its outputs are removed); without "
        "--resume or --overwrite such a folder is refused",
    )
    t.add_argument(
        "--checkpoint-every", type=int, default=S, help="also checkpoint every N steps (default: each epoch only)"
    )
    t.add_argument(
        "--log-every",
        type=positive_int,
        default=S,
        help=f"steps between loss updates (default: {default['log_every']})",
    )
    # on/off options a resumed run may change have both forms (--x / --no-x)
    t.add_argument(
        "--cuda-graph",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="on CUDA, replay the whole step as one CUDA graph (default); --no-cuda-graph runs it op by op",
    )
    t.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="torch.compile the models (for comparison; turns the CUDA graph off)",
    )
    choice(t, "precision")
    t.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="convolution weights and activations in channels_last (NHWC) memory format, "
        "cuDNN's native layout on GPUs (the same math; MLP models are unchanged)",
    )
    t.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="also log to OUT/tb for TensorBoard (needs the tensorboard package)",
    )
    d = t.add_argument_group("data-parallel (under torchrun: torchrun --nproc-per-node N -m fastgan train ...)")
    d.add_argument(
        "--sync-bn",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="batch norm statistics over the global batch of all ranks (default: each rank's own)",
    )
    d.add_argument(
        "--dist-timeout",
        type=float,
        default=S,
        help=f"seconds a rank waits for the others before failing (default {default['dist_timeout']:g})",
    )
    t.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=S, help="a progress bar on stderr (default)"
    )
    t.add_argument(
        "--eval-every",
        type=int,
        default=S,
        help="measure sample quality (classifier FID, IS, class entropy) every N steps and "
        "at the end, into the log, history.csv and losses.png (default: 0, off)",
    )
    t.add_argument("--eval-n", type=int, default=S, help=f"images per evaluation (default: {default['eval_n']})")
    t.add_argument(
        "--stop-on-nan",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="end the run (exit 1) when the losses stop being finite numbers, keeping the last "
        "finite checkpoint (default); --no-stop-on-nan warns once and trains on",
    )
    o = t.add_argument_group("objective and stabilizers")
    add_objective_options(o)
    o.add_argument(
        "--class-loss",
        choices=("both", "real"),
        default=S,
        help="acgan: D's class cross-entropy on real and fake images (both, Odena et al.; default) or on the "
        "real images only (G still learns from its fakes' class loss)",
    )
    o.add_argument(
        "--info-weight",
        type=float,
        default=S,
        help="infogan: lambda, the weight of the mutual-information loss in D's and G's steps (default 1)",
    )
    o.add_argument(
        "--sr-factor",
        type=int,
        choices=(2, 4),
        default=S,
        help="srgan: the upscaling, 4 (7x7 -> 28x28, default) or 2 (14x14 -> 28x28)",
    )
    o.add_argument(
        "--feature-weight",
        type=float,
        default=S,
        help="srgan: the weight of the classifier-feature MSE in the content loss (default 0.01; 0: pixels only)",
    )
    o.add_argument(
        "--adv-weight",
        type=float,
        default=S,
        help="srgan: the weight of the adversarial loss (default 1e-3, the paper's; 0: the content-loss-only G)",
    )
    o.add_argument(
        "--kl-weight",
        type=float,
        default=S,
        help="stackgan: the weight of the conditioning augmentation's KL term in G's loss (default 1)",
    )
    o.add_argument(
        "--recon-weight",
        type=float,
        default=S,
        help="discogan: the weight of the reconstruction losses (A -> B -> A, B -> A -> B) in G's loss (default 1)",
    )
    o.add_argument(
        "--ema-samples",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="grids and --eval-every draw from the average when there is one (default); --no-ema-samples: G itself",
    )
    t.add_argument(
        "--allow-changed-data",
        action="store_true",
        help="with --resume: go on although the data is not what the checkpoint was trained on",
    )
    t.add_argument(
        "--convert",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="a model file's G and D run as fastgan.convert's copies, on the fused ops (default); "
        "--no-convert trains them as written",
    )
    t.add_argument(
        "--allow-changed-model",
        action="store_true",
        help="with --resume: go on although the model file is not the one the checkpoint was trained with",
    )

    s = sub.add_parser("sample", help="draw a grid of samples from a checkpoint")
    s.add_argument("--checkpoint", required=True, help="a checkpoint.pt written by fastgan train")
    s.add_argument("--n", type=positive_int, default=None, help="number of images (default 64)")
    s.add_argument(
        "--label", type=int, default=None, help="digit 0-9 (conditional models; infogan: its categorical code)"
    )
    s.add_argument(
        "--traverse",
        action="store_true",
        help="infogan: the paper's figure instead, rows = the categorical code, columns = continuous code --code "
        "swept from -2 to 2, one noise vector",
    )
    s.add_argument("--code", type=int, default=None, help="with --traverse: which continuous code (default 0)")
    s.add_argument(
        "--input",
        default=None,
        help="srgan: a low-res PNG to super-resolve (written to --out, --sr-factor times larger); without it, "
        "srgan's grid shows held-out test digits as (bicubic, srgan, original) triplets",
    )
    s.add_argument("--out", type=output(".png"), default="samples.png", help="PNG to write (default samples.png)")
    s.add_argument("--seed", type=seed, default=0, help="noise seed (default 0)")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    s.add_argument(
        "--ema-samples",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw from the average of G's weights where the run kept one (--ema; default); --no-ema-samples: G",
    )

    e = sub.add_parser(
        "eval",
        help="measure sample quality: classifier FID, IS, class entropy",
        description="Draws --n images from a checkpoint and measures them with a small "
        "digit classifier (trained on the checkpoint's dataset on first use, "
        "cached in --cache-dir): classifier FID, Inception Score, class "
        "histogram and entropy, label accuracy for conditional models, for infogan the "
        "categorical code's accuracy as a digit label under the best code-to-digit matching, for stackgan "
        "the FID and label accuracy of stage I's sketches (upsampled) beside stage II's, and for srgan "
        "PSNR, SSIM, accuracy and FID of the super-resolved held-out digits beside bicubic upsampling.",
    )
    e.add_argument("--checkpoint", required=True, help="a checkpoint.pt written by fastgan train")
    e.add_argument("--n", type=int, default=10000, help="generated images (default 10000, at least 2)")
    e.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    e.add_argument("--data-dir", default=None, help="IDX files of mnist / fashion-mnist (default: the run's)")
    e.add_argument(
        "--cache-dir",
        type=output(folder=True),
        default=None,
        help="classifier cache (default $FASTGAN_CACHE or ~/.cache/fastgan)",
    )
    e.add_argument("--seed", type=seed, default=0, help="noise seed (default 0)")
    e.add_argument(
        "--classifier-epochs", type=positive_int, default=None, help="classifier training epochs (default 8)"
    )
    e.add_argument("--json", type=output(), default=None, help="also write the metrics to this JSON file")
    e.add_argument(
        "--ema-samples",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the average of G's weights where the run kept one (--ema; default); --no-ema-samples: G",
    )

    sub.add_parser("info", help="what this fastgan installation was built with")

    b = sub.add_parser(
        "bench",
        help="time fastgan against PyTorch eager and torch.compile",
        description="fastgan bench ops [...]: each fused op, forward+backward; "
        "fastgan bench train [...]: whole training steps; "
        "fastgan bench quality [...]: classifier FID against training "
        "time, the tutorial's recipe vs fastgan. "
        "`fastgan bench ops --help` lists their options.",
    )
    # `what` optional to argparse only so that a bare `fastgan bench` names it alone (REMAINDER
    # positionals are always listed as missing); main() requires it
    b.add_argument("what", nargs="?", choices=["ops", "train", "quality"], help="ops, train or quality")
    b.add_argument("options", nargs=argparse.REMAINDER, help="options of that benchmark")
    parser.bench_parser = b
    return parser


def cmd_bench(args):
    if args.what == "ops":
        from fastgan.bench.ops import main as bench_main
    elif args.what == "quality":
        from fastgan.bench.quality import main as bench_main
    else:
        from fastgan.bench.train import main as bench_main
    return bench_main(args.options)


def cmd_train(args):
    from fastgan.train import ConfigError, TrainConfig, Trainer

    flags = ("command", "resume", "overwrite", "allow_changed_data", "allow_changed_model")
    given = {k: v for k, v in vars(args).items() if k not in flags}
    if given.get("optimizer") == "rmsprop" and "lr" in given:  # rather than ignore it
        raise ConfigError(
            "--lr is Adam's learning rate; with --optimizer rmsprop give --lr-d and --lr-g "
            "(default 8e-4 and 4e-4, the Keras recipe)"
        )
    cfg = TrainConfig(**given)  # (out default: runs/MODEL-DATASET)
    trainer = Trainer(
        cfg,
        resume=args.resume,
        explicit=set(given) - {"out"},
        overwrite=args.overwrite,
        make_evaluator=_evaluator,
        allow_changed_data=args.allow_changed_data,
        allow_changed_model=args.allow_changed_model,
        make_feature_net=_feature_net,
    )
    ranks = trainer.ranks
    if ranks.main:
        batch = (
            f"{trainer.global_batch} ({ranks.world_size} ranks x {trainer.cfg.batch_size}"
            f"{', synchronized batch norm' if trainer.cfg.sync_bn else ''})"
            if ranks.parallel
            else f"{trainer.cfg.batch_size}"
        )
        where = f"{trainer.device.type} (rank 0: {trainer.device})" if ranks.parallel else f"{trainer.device}"
        print(
            f"fastgan train: {trainer.cfg.model} on {trainer.cfg.dataset} "
            f"({trainer.loader.num_samples} images), {trainer.total_steps} steps of "
            f"{batch} on {where}, backend {trainer.cfg.backend}, "
            f"out {trainer.cfg.out}",
            flush=True,
        )
    trainer.fit()
    return 0


def _evaluator(cfg, device):
    """--eval-every's evaluator: the default classifier of the run's dataset."""
    from fastgan.metrics import Evaluator

    return Evaluator(cfg.dataset, cfg.data_dir, device)


def _feature_net(cfg):
    """srgan's feature loss: the default classifier of the run's dataset (what fastgan eval measures with)."""
    from fastgan.metrics import feature_net

    return feature_net(cfg.dataset, cfg.data_dir)


def cmd_sample(args):
    import os

    from fastgan.train import ConfigError, load_checkpoint, sample, traverse
    from fastgan.train.superres import superres

    # srgan super-resolves instead (a missing checkpoint is sample()'s to report)
    if args.input is not None or (
        os.path.isfile(args.checkpoint) and superres(load_checkpoint(args.checkpoint)["config"])
    ):
        return _sample_superres(args)
    if args.traverse:
        given = [f"--{k}" for k in ("n", "label") if getattr(args, k) is not None]
        if given:
            raise ConfigError(f"--traverse draws its own 10 x 10 grid: leave out {' and '.join(given)}")
        traverse(
            args.checkpoint, code=args.code or 0, out=args.out, seed=args.seed, device=args.device, ema=args.ema_samples
        )
        print(f"wrote {args.out}")
        return 0
    if args.code is not None:
        raise ConfigError("--code picks the continuous code that --traverse sweeps: give --traverse too")
    sample(
        args.checkpoint,
        n=64 if args.n is None else args.n,
        label=args.label,
        out=args.out,
        seed=args.seed,
        device=args.device,
        ema=args.ema_samples,
    )
    print(f"wrote {args.out}")
    return 0


def _sample_superres(args):
    from fastgan.metrics.superres import sample_superres, upsample_file
    from fastgan.train import ConfigError

    given = [f"--{k}" for k in ("label", "code") if getattr(args, k) is not None] + ["--traverse"] * args.traverse
    if given:
        raise ConfigError(f"srgan super-resolves images and draws no labels or codes: leave out {' and '.join(given)}")
    if args.input is not None:
        if args.n is not None:
            raise ConfigError("--input super-resolves that one image: leave out --n")
        y = upsample_file(args.checkpoint, args.input, args.out, args.device, args.ema_samples)
        print(f"wrote {args.out} ({y.shape[-2]}x{y.shape[-1]})")
        return 0
    sample_superres(args.checkpoint, 16 if args.n is None else args.n, args.out, args.device, args.ema_samples)
    print(f"wrote {args.out}")
    return 0


def cmd_eval(args):
    import dataclasses
    import json

    from fastgan._files import atomic_write
    from fastgan.metrics import ClassifierSettings, evaluate

    settings = ClassifierSettings()
    if args.classifier_epochs is not None:
        settings = dataclasses.replace(settings, epochs=args.classifier_epochs)
    m = evaluate(
        args.checkpoint,
        n=args.n,
        device=args.device,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        seed=args.seed,
        classifier=settings,
        ema=args.ema_samples,
    )
    print(f"fastgan eval: {m['model']} on {m['dataset']}, step {m['step']}, {m['n']} samples")
    print(
        f"classifier       {'cached' if m['classifier_cached'] else 'trained'}, test accuracy "
        f"{100 * m['classifier_accuracy']:.2f}% ({m['classifier_path'] or 'not saved'})"
    )
    if m["nonfinite_images"]:
        print(
            f"warning: {m['nonfinite_images']} of the {m['n']} generated images are not finite "
            "(the generator diverged): no FID",
            file=sys.stderr,
        )
    print(f"fid              {m['fid']:.4f}   (real train vs test: {m['fid_real']:.4f})")
    print(f"inception_score  {m['inception_score']:.4f}")
    print(f"class_entropy    {m['class_entropy']:.4f} bits (max 3.3219)")
    print(f"class_histogram  {' '.join(str(c) for c in m['class_histogram'])}")
    if m["label_accuracy"] is not None:
        print(f"label_accuracy   {100 * m['label_accuracy']:.2f}%")
    for key, about in (
        ("translation_accuracy_ab", "A -> B, rotated back, called the source digit"),
        ("translation_accuracy_ba", "B -> A called the source digit"),
        ("identity_accuracy_ab", "the same for images left as they are: the floor"),
        ("translation_consistency_ab", "A -> B's classes under the best one-to-one digit matching"),
        ("translation_consistency_ba", "B -> A's, the same"),
    ):
        if key in m:
            print(f"{key:<26} {100 * m[key]:.2f}% ({about})")
    for way in ("ab", "ba"):
        if f"translation_matching_{way}" in m:
            matching = m[f"translation_matching_{way}"]
            print(f"translation_matching_{way}    {matching} (source digit -> translated class)")
    if "reconstruction_mse_a" in m:
        print(f"reconstruction_mse         A {m['reconstruction_mse_a']:.4f}, B {m['reconstruction_mse_b']:.4f}")
    if "stage1_fid" in m:
        print(
            f"stage I         fid {m['stage1_fid']:.4f}, label_accuracy {100 * m['stage1_label_accuracy']:.2f}% "
            "(its 14x14 sketches upsampled; fid and label_accuracy above are stage II's)"
        )
    if "code_accuracy" in m:
        print(
            f"code_accuracy    {100 * m['code_accuracy']:.2f}% (categorical code as a digit, best one-to-one "
            f"matching code -> digit: {m['code_to_digit']})"
        )
    if "psnr" in m:
        sr, bic = m["sr"], m["bicubic"]
        print(f"super-resolution x{m['sr_factor']} of {m['n']} held-out images: srgan / bicubic")
        print(f"  psnr           {sr['psnr']:.2f} / {bic['psnr']:.2f} dB")
        print(f"  ssim           {sr['ssim']:.4f} / {bic['ssim']:.4f}")
        print(
            f"  accuracy       {100 * sr['accuracy']:.2f}% / {100 * bic['accuracy']:.2f}% (originals: "
            f"{100 * m['original_accuracy']:.2f}%)"
        )
        print(f"  fid            {sr['fid']:.4f} / {bic['fid']:.4f}")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(m, f, indent=2)
    return 0


def cmd_info(args):
    import fastgan

    info = fastgan.build_info()
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif value is None or value == "":
            value = "-"
        print(f"{key:<{width}}  {value}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a run ends as on Ctrl-C: the write in flight
    lands, and the resume hint is printed."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None):
    try:
        return _main(argv)
    except Terminated:
        return EXIT_TERMINATED
    except KeyboardInterrupt:  # also while the heavy modules load
        return EXIT_INTERRUPTED


def _main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench" and args.what is None:
        parser.bench_parser.error("choose a benchmark: ops, train or quality")
    from fastgan.data import DatasetError
    from fastgan.models import ModelError
    from fastgan.train.config import CheckpointError, ConfigError, DivergedError
    from fastgan.train.distributed import DistributedError

    commands = {"train": cmd_train, "sample": cmd_sample, "info": cmd_info, "bench": cmd_bench, "eval": cmd_eval}
    handler = None
    if args.command == "train" and threading.current_thread() is threading.main_thread():
        handler = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return commands[args.command](args)
    except (ConfigError, CheckpointError, DatasetError, ModelError) as exc:
        print(f"fastgan {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DivergedError as exc:
        print(f"fastgan {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except DistributedError as exc:
        print(f"fastgan {args.command}: error: {exc}", file=sys.stderr)
        # the process group is broken (a peer died or hangs): gloo's threads abort the process
        # in their destructors at interpreter exit (SIGABRT, not this exit code), so leave now;
        # the trainer has already written and closed its files
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_FAILED)
    except OSError as exc:  # e.g. an --out folder that cannot be written, a full disk
        name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"fastgan {args.command}: error:{name} {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
