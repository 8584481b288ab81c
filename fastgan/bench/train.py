"""Whole training steps, timed five ways (`fastgan bench train`):

  tutorial  the tutorial's plain PyTorch: D ends in a sigmoid, BCELoss against ones/zeros
            tensors made every step, torch.optim.Adam, one launch per op from Python
  compile   the tutorial's step with G and D under torch.compile
  expert    the best plain PyTorch: the whole step in one CUDA graph, fused Adam, logits with
            BCE-with-logits, D on cat(real, fake) where D has no batch norm
  fastgan   fastgan's models and fused ops, step run op by op (make_step(cuda_graph=False))
  graph     fastgan's step captured in one CUDA graph (make_step(), the trainer's default)

All run the same algorithm: one D step on a real and a fake batch, then one G step on the
same fake batch against the updated D, Adam lr 2e-4, betas (0.5, 0.999).

`--model FILE.py` (a user's GAN in plain torch.nn: build() -> (G, D), or classes Generator and
Discriminator) times that code three ways: tutorial (as written: its D, with BCELoss after a
final Sigmoid or BCE-with-logits without one, torch.optim.Adam, eager), fastgan (converted by
fastgan.convert, op by op) and graph (converted, in one CUDA graph; CUDA only). --impl compile
adds torch.compile of the code as written; expert does not apply (it is fastgan's models).
"""

import argparse
import functools
import os
import sys

import torch
import torch.nn.functional as F

from fastgan._argtypes import model_or_file, positive_int
from fastgan._options import PRECISIONS
from fastgan.bench.timing import (
    add_output_options,
    auto_iters,
    check_device,
    check_output_paths,
    from_json,
    machine_header,
    report,
    strict_float32,
    time_call,
)
from fastgan.bench.tutorial import tutorial_loop, tutorial_train_step
from fastgan.data.loader import DeviceLoader
from fastgan.models import build
from fastgan.train.graph import GraphedStep
from fastgan.train.step import amp_dtype, autocast, d_pass_mergeable, make_step, to_layout

MODELS = ("mlp", "mlp-bn", "dcgan")
BATCH_SIZES = (64, 256, 1024)
IMPLS = ("tutorial", "compile", "expert", "fastgan", "graph")
CUDA_ONLY = ("expert", "graph")  # whole-step CUDA graphs
NAME = "fastgan bench train"


def _real_batch(batch_size, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch_size, 1, 28, 28, generator=gen) * 2 - 1).to(device)


def tutorial_step(model, batch_size, device, compile=False, seed=0):
    """The tutorial's step on a fixed real batch already on the device."""
    step = tutorial_train_step(model, device, compile, seed)
    real = _real_batch(batch_size, device, seed)
    return lambda: step(real)


def expert_step(model, batch_size, device, seed=0, precision="fp32", channels_last=False):
    amp = functools.partial(autocast, torch.device(device).type, amp_dtype(precision))
    torch.manual_seed(seed)
    G, D = build(model, backend="torch")
    G, D = to_layout(G.to(device), D.to(device), channels_last)
    kw = dict(lr=2e-4, betas=(0.5, 0.999), fused=True, capturable=True)
    opt_g, opt_d = torch.optim.Adam(G.parameters(), **kw), torch.optim.Adam(D.parameters(), **kw)
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (max(16 * batch_size, 4096), 1, 28, 28), dtype=torch.uint8, generator=gen)
    batches = DeviceLoader(
        images,
        torch.zeros(images.shape[0], dtype=torch.int64),
        batch_size,
        device,
        generator=torch.Generator(device=device).manual_seed(seed + 1),
    )
    noise_gen = torch.Generator(device=device).manual_seed(seed + 2)
    ones = torch.ones(batch_size, 1, device=device)
    zeros = torch.zeros(batch_size, 1, device=device)
    one_pass = d_pass_mergeable(D)

    def step():
        real, _ = batches.next(labels=False)
        with amp():
            fake = G(torch.randn(batch_size, G.latent_dim, generator=noise_gen, device=device))
            if one_pass:  # no batch norm in D: one pass over both batches is the same math
                logits_real, logits_fake = D(torch.cat([real, fake.detach()])).split(batch_size)
            else:
                logits_real, logits_fake = D(real), D(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(logits_real.float(), ones) + F.binary_cross_entropy_with_logits(
            logits_fake.float(), zeros
        )
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        with amp():
            fake_logits = D(fake)
        g_loss = F.binary_cross_entropy_with_logits(fake_logits.float(), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        D.requires_grad_(True)
        opt_g.step()
        return torch.stack([d_loss.detach(), g_loss.detach()])

    return GraphedStep(step, generators=(noise_gen,))


USER_IMPLS = ("tutorial", "fastgan", "graph")  # a model file's default implementations
USER_ONLY_NOT = ("expert",)  # what a model file cannot run: fastgan's models in plain PyTorch


def is_file(model):
    return model.endswith(".py")


def user_tutorial_step(path, batch_size, device, compile=False, seed=0):
    """A model file's pair as written, in the tutorial's loop: its D's output through BCELoss
    (after a final nn.Sigmoid) or BCE-with-logits (without one), fresh ones/zeros and noise each
    step, torch.optim.Adam, eager; on a fixed real batch of G's image size on the device."""
    from fastgan.convert import final_sigmoid
    from fastgan.models.user import load_file, prepare

    torch.manual_seed(seed)
    G, D = (m.to(device) for m in load_file(path))
    shapes = prepare(G, D, convert=False, labels_given=True)  # z's and the images' shapes, read off G
    latent, sample = shapes.latent_shape, shapes.sample_shape
    criterion = torch.nn.BCELoss() if final_sigmoid(D) is not None else torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    real = (torch.rand(batch_size, *sample, generator=gen) * 2 - 1).to(device)
    labels = torch.randint(0, 10, (batch_size,), generator=gen).to(device) if shapes.conditional else None
    loop = tutorial_loop(G, D, latent, device, criterion, compile, labels)

    def step():
        return loop(real)

    step.loop = loop  # the loop itself (its modules, criterion and optimizers)
    return step


def make(impl, model, batch_size, device, precision="fp32", channels_last=False):
    """impl's step; precision and channels_last apply to expert, fastgan and graph (the tutorial
    is float32 and NCHW, as written). model: a fastgan model's name or a user's .py file."""
    if is_file(model):
        if impl in ("tutorial", "compile"):
            return user_tutorial_step(model, batch_size, device, compile=impl == "compile")
        if impl in ("fastgan", "graph"):
            from fastgan.models.user import load_file

            torch.manual_seed(0)
            return make_step(
                load_file(model),
                batch_size,
                device,
                cuda_graph=impl == "graph",
                precision=precision,
                channels_last=channels_last,
            )
        raise ValueError(f"--impl {impl} does not apply to a model file (it runs fastgan's own models)")
    if impl == "tutorial":
        return tutorial_step(model, batch_size, device)
    if impl == "compile":
        return tutorial_step(model, batch_size, device, compile=True)
    if impl == "expert":
        return expert_step(model, batch_size, device, precision=precision, channels_last=channels_last)
    if impl in ("fastgan", "graph"):
        return make_step(
            model, batch_size, device, cuda_graph=impl == "graph", precision=precision, channels_last=channels_last
        )
    raise ValueError(f"unknown implementation {impl!r}; choose from {IMPLS}")


BLAS = ("default", "cublas", "cublaslt")


def run(
    device,
    models=MODELS,
    batch_sizes=BATCH_SIZES,
    impls=IMPLS,
    log=None,
    precision="fp32",
    channels_last=False,
    blas="default",
):
    """blas: torch's BLAS library for every implementation's matrix products on CUDA
    (torch.backends.cuda.preferred_blas_library); "default" leaves torch's choice (cuBLAS)."""
    if blas not in BLAS:
        raise ValueError(f"blas must be one of {', '.join(BLAS)}, got {blas!r}")
    cuda = torch.device(device).type == "cuda"
    impls = [i for i in impls if cuda or i not in CUDA_ONLY]
    with strict_float32(blas if cuda and blas != "default" else None):
        rows = _run(device, models, batch_sizes, impls, log, precision, channels_last)
    return {
        "benchmark": NAME,
        "machine": machine_header(device),
        "rows": rows,
        "precision": precision,
        "channels_last": channels_last,
        "blas": blas if cuda else "default",
        "impls": impls,
    }


def _run(device, models, batch_sizes, impls, log, precision, channels_last):
    rows = []
    for model in models:
        for bs in batch_sizes:
            row = {"model": os.path.basename(model) if is_file(model) else model, "batch_size": bs}
            for impl in impls:
                if is_file(model) and impl in USER_ONLY_NOT:
                    continue
                torch._dynamo.reset()
                try:
                    step = make(impl, model, bs, device, precision, channels_last)
                    for _ in range(5):
                        step()  # warm-up, graph capture, compilation
                    ms = time_call(step, device, warmup=3, iters=auto_iters(step, device, 300.0), reps=5)
                except Exception as exc:  # e.g. a torch.compile failure: report it, time the rest
                    row.setdefault("errors", {})[impl] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    if log:
                        print(f"{model} b{bs} {impl}: failed: {row['errors'][impl]}", file=log, flush=True)
                    continue
                row[impl] = ms
                if log:
                    print(f"{model} b{bs} {impl}: {ms:.3f} ms/step", file=log, flush=True)
            rows.append(row)
    return rows


def markdown(result):
    impls = result["impls"]
    best = "graph" if "graph" in impls else "fastgan"
    others = [i for i in impls if i != best and i != "fastgan"]
    head = (
        "| model | batch | "
        + " | ".join(f"{i} ms" for i in impls)
        + f" | {best} img/s |"
        + "".join(f" {best} vs {i} |" for i in others)
    )
    precision = result.get("precision", "fp32")
    note = "" if precision == "fp32" else f"; {precision} autocast for expert, fastgan and graph (tutorial: fp32)"
    if result.get("blas", "default") != "default":
        note += f"; matrix products through {result['blas']} for every implementation"
    if result.get("channels_last"):
        note += "; channels_last weights for expert, fastgan and graph (tutorial: NCHW)"
    lines = [f"Machine: {result['machine']}{note}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        cells = [f"{r[i]:.3f}" if i in r else ("failed" if i in r.get("errors", {}) else "–") for i in impls]
        ratios = [f"{r[i] / r[best]:.1f}x" if i in r and best in r else "–" for i in others]
        ips = f"{r['batch_size'] / (r[best] * 1e-3):,.0f}" if best in r else "–"
        lines.append(
            f"| {r['model']} | {r['batch_size']} | "
            + " | ".join(cells)
            + f" | {ips} |"
            + "".join(f" {x} |" for x in ratios)
        )
    return "\n".join(lines)


def _check_epoch_options(p, a):
    """--epoch times batch 64, tutorial vs fastgan, float32: the step options do not apply."""
    if not a.epoch:
        for option, given in (("--data-dir", a.data_dir is not None), ("--epoch-size", a.epoch_size is not None)):
            if given:
                p.error(f"{option}: only with --epoch")
        return
    for option, given in (
        ("--batch-size", a.batch_size),
        ("--impl", a.impl),
        ("--precision", a.precision != "fp32"),
        ("--channels-last", a.channels_last),
        ("--blas", a.blas != "default"),
    ):
        if given:
            p.error(f"{option}: not with --epoch (it times the tutorial's and fastgan's loops at batch 64, fp32)")
    if a.data_dir is not None:
        if a.epoch_size is not None:
            p.error("--epoch-size: only without --data-dir (the size of the synthetic data set)")
        if not os.path.isdir(a.data_dir):
            p.error(f"--data-dir {a.data_dir}: no such folder")
    if a.epoch_size is not None and a.epoch_size < 64:
        p.error(f"--epoch-size must be at least 64 (one batch), got {a.epoch_size}")


def main(argv=None):
    p = argparse.ArgumentParser(prog=NAME, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--model",
        action="append",
        type=model_or_file(MODELS),
        metavar="{" + ",".join(MODELS) + "} or FILE.py",
        help="default: all fastgan's; FILE.py: your own GAN in plain torch.nn (build() -> (G, D), or classes "
        "Generator and Discriminator), timed as written, converted, and converted in one CUDA graph",
    )
    p.add_argument("--batch-size", action="append", type=positive_int, help="default: 64, 256, 1024")
    p.add_argument("--impl", action="append", choices=IMPLS, help="default: all (expert and graph only on CUDA)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default) or bf16 (autocast) for expert, fastgan and graph",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="convolution weights in channels_last for expert, fastgan and graph",
    )
    p.add_argument(
        "--blas",
        choices=BLAS,
        default="default",
        help="on CUDA, the BLAS library of every implementation's matrix products (default: torch's)",
    )
    p.add_argument(
        "--epoch",
        action="store_true",
        help="time one full epoch with data loading instead (tutorial DataLoader vs fastgan)",
    )
    p.add_argument("--data-dir", help="with --epoch: a folder with MNIST's IDX files (default: synthetic)")
    p.add_argument(
        "--epoch-size",
        type=positive_int,
        default=None,
        help="with --epoch and no --data-dir: images (default 60000, at least 64)",
    )
    add_output_options(p)
    a = p.parse_args(argv)
    check_output_paths(p, a)
    _check_epoch_options(p, a)
    models = tuple(dict.fromkeys(a.model or MODELS))
    if a.epoch:
        from fastgan.bench import epoch

        if (
            from_json(
                a,
                epoch.markdown,
                p,
                name=epoch.NAME,
                keys=("machine", "data", "rows"),
                rows="rows",
                row_keys=("model", "tutorial_s", "fastgan_s", "fastgan_setup_s"),
            )
            is None
        ):
            device = check_device(p, a.device)
            report(
                epoch.run(device, models if a.model else ("mlp",), a.data_dir, a.epoch_size or 60000),
                epoch.markdown,
                a.json,
                a.markdown,
            )
        return 0
    if (
        from_json(a, markdown, p, keys=("machine", "rows", "impls"), rows="rows", row_keys=("model", "batch_size"))
        is not None
    ):
        return 0
    device = check_device(p, a.device)
    cuda = torch.device(device).type == "cuda"
    files = [m for m in models if is_file(m)]
    for path in files:
        if not os.path.isfile(path):
            p.error(f"--model {path}: no such file")
    if files and a.impl and all(i in USER_ONLY_NOT for i in a.impl) and len(files) == len(models):
        p.error(f"--impl {', '.join(a.impl)}: does not apply to a model file (it runs fastgan's own models)")
    impls = tuple(dict.fromkeys(a.impl or (USER_IMPLS if len(files) == len(models) else IMPLS)))
    if not cuda:
        if a.impl:
            for impl in impls:
                if impl in CUDA_ONLY:
                    p.error(
                        f"--impl {impl}: needs a CUDA device (it runs the step as one CUDA graph), "
                        f"not --device {a.device}"
                    )
        else:  # run() leaves them out
            left = [i for i in impls if i in CUDA_ONLY]
            if left:
                print(f"note: {' and '.join(left)} need a CUDA device: left out on {device}", file=sys.stderr)
        if a.blas != "default":
            p.error(f"--blas {a.blas}: only on a CUDA device, not --device {a.device}")
    report(
        run(
            device,
            models,
            tuple(dict.fromkeys(a.batch_size or BATCH_SIZES)),
            impls,
            log=sys.stderr,
            precision=a.precision,
            channels_last=a.channels_last,
            blas=a.blas,
        ),
        markdown,
        a.json,
        a.markdown,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
