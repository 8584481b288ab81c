"""Kernels per training step: what a CUDA graph replays, counted with torch.profiler on the
op-by-op step. `python -m fastgan.bench.profile --model mlp --batch-size 64`; `--shapes` lists
the step's ops by input shape instead (which matrix product runs which slow kernel).
Float32 with TF32 off, as `fastgan bench train` times it."""

import argparse
import collections
import sys

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from fastgan._argtypes import OBJECTIVE_OPTIONS, add_objective_options, positive_int
from fastgan.bench.timing import check_device, strict_float32
from fastgan.bench.train import CUDA_ONLY, IMPLS, MODELS, make
from fastgan.models import MODELS as ALL_MODELS
from fastgan.train.step import make_step


class _Counter(TorchDispatchMode):
    """Counts the ops dispatched while active by key(func, args, kwargs), skipping None keys."""

    def __init__(self, key):
        super().__init__()
        self.key = key
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        k = self.key(func, args, kwargs)
        if k is not None:
            self.counts[k] += 1
        return func(*args, **kwargs)


def count_step(model, batch_size, device, key, precision="fp32"):
    """{key: calls} of one op-by-op fastgan step (after a first step has made the optimizer's
    lazy state), with fastgan's Adam as on CUDA."""
    step = make_step(model, batch_size, device, cuda_graph=False, precision=precision, fused_adam=True)
    step()
    with _Counter(key) as counter:
        step()
    return counter.counts


# metadata-only ops and the profiler's own markers (optimizers wrap step() in record_function)
_NOT_KERNELS = {
    torch.ops.aten.detach.default,
    torch.ops.profiler._record_function_enter_new.default,
    torch.ops.profiler._record_function_exit._RecordFunction,
}


def ops_per_step(model, batch_size, device="cpu"):
    """{op name: calls} of one fastgan step, leaving out views: on a GPU each is (at least) one
    kernel, so this counts the step's kernels on any device, except the extra ones a library
    launches inside an op (cuBLAS split-K reductions)."""
    return count_step(
        model,
        batch_size,
        device,
        _kernel_key,
    )


def _kernel_key(func, args, kwargs):
    return None if func.is_view or func in _NOT_KERNELS else str(func)


def ops_per_trainer_step(model, batch_size, device="cpu", **options):
    """ops_per_step of the step `fastgan train` runs (the Trainer's step callable) with
    TrainConfig options such as loss="hinge", gp=10.0, r1=10.0, n_critic=5, spectral_norm=True,
    ema=0.999: what each objective and stabilizer adds to the step's kernels."""
    import dataclasses
    import os
    import tempfile

    from fastgan.train import TrainConfig, Trainer

    with tempfile.TemporaryDirectory(prefix="fastgan-ops-") as out, open(os.devnull, "w") as log:
        cfg = TrainConfig(model=model, batch_size=batch_size, device=device, steps=2, progress=False, out=out)
        cfg = dataclasses.replace(cfg, **options)
        trainer = Trainer(cfg, log=log)
        trainer.loader.new_epoch()
        trainer._step()  # the optimizers' lazy state
        with _Counter(_kernel_key) as counter:
            trainer._step()
    return counter.counts


def _profiled(impl, model, batch_size, **kw):
    step = make(impl, model, batch_size, "cuda")
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    return step, profile(**kw)


PRODUCTS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::cudnn_convolution",
    "aten::cudnn_convolution_transpose",
    "aten::convolution_backward",
)


def _kernels_under(event):
    """The GPU kernels an op launched, its children's included."""
    found = list(event.kernels)
    for child in event.cpu_children:
        found += _kernels_under(child)
    return found


@strict_float32()
def ops_by_shape(impl, model, batch_size, top=30, steps=5):
    """torch.profiler's table of the step's ops grouped by input shape, by GPU time; then each
    matrix product and convolution by input shapes with the kernels it ran (name, us per call),
    which the table cannot say."""
    step, prof = _profiled(
        impl, model, batch_size, record_shapes=True, activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]
    )
    with prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages(group_by_input_shape=True).table(sort_by="cuda_time_total", row_limit=top)
    calls = collections.defaultdict(lambda: [0, collections.defaultdict(lambda: [0, 0.0])])
    for e in prof.events():
        if e.name in PRODUCTS:
            row = calls[(e.name, str(e.input_shapes))]
            row[0] += 1
            for k in _kernels_under(e):
                row[1][k.name][0] += 1
                row[1][k.name][1] += k.duration
    lines = [table, "matrix products and convolutions by input shapes, with their kernels:"]
    for (name, shapes), (n, kernels) in sorted(calls.items(), key=lambda kv: -sum(t for _, t in kv[1][1].values())):
        lines.append(f"  {n / steps:4.1f} x per step  {name} {shapes}")
        for kname, (c, t) in sorted(kernels.items(), key=lambda kv: -kv[1][1]):
            lines.append(f"        {c / n:4.1f} x {t / max(c, 1):7.1f} us  {kname[:100]}")
    return "\n".join(lines)


@strict_float32()
def kernels_per_step(impl, model, batch_size, steps=5):
    """(kernels per step, {kernel name: (count per step, GPU microseconds per step)})."""
    step, prof = _profiled(impl, model, batch_size, activities=[ProfilerActivity.CUDA])
    with prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    per = collections.defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            per[e.name][0] += 1
            per[e.name][1] += e.device_time
    table = {k: (c / steps, t / steps) for k, (c, t) in per.items()}
    return sum(c for c, _ in table.values()), table


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastgan.bench.profile", description=__doc__)
    p.add_argument(
        "--model",
        default="mlp",
        choices=sorted(ALL_MODELS),
        help="default mlp (tutorial and compile: mlp, mlp-bn or dcgan)",
    )
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument(
        "--impl",
        default="fastgan",
        choices=[i for i in IMPLS if i not in CUDA_ONLY],
        help="an op-by-op step (a graph replays the same kernels as 'fastgan')",
    )
    p.add_argument("--top", type=positive_int, default=25)
    p.add_argument("--shapes", action="store_true", help="ops by input shape (profiler table) instead")
    p.add_argument(
        "--ops", action="store_true", help="count the ops of a fastgan step instead (no GPU needed: --device cpu works)"
    )
    p.add_argument("--device", default=None, help="with --ops: the device to run the step on (default cuda)")
    add_objective_options(p.add_argument_group("with --ops: the step of fastgan train with these options"))
    a = p.parse_args(argv)
    objective = {k: v for k, v in vars(a).items() if k in OBJECTIVE_OPTIONS}
    if objective and not a.ops:
        p.error(f"--{next(iter(objective)).replace('_', '-')}: only with --ops (it counts that step's ops)")
    if a.ops:
        if a.shapes:
            p.error("--shapes: not with --ops (give one of them)")
        if a.impl != "fastgan":
            p.error(f"--impl {a.impl}: not with --ops (it counts the ops of a fastgan step)")
        a.device = check_device(p, a.device or "cuda")
    else:
        if a.device is not None and torch.device(check_device(p, a.device)).type != "cuda":
            p.error(f"--device {a.device}: the kernel profile runs on CUDA (--ops counts ops on any device)")
        if not torch.cuda.is_available():
            p.error("no CUDA GPU is available: the kernel profile needs one (--ops --device cpu counts ops)")
        if a.impl != "fastgan" and a.model not in MODELS:
            p.error(f"--model {a.model}: --impl {a.impl} runs only {', '.join(MODELS)}")
    if a.ops:
        if objective:
            from fastgan.train import ConfigError

            try:
                ops = ops_per_trainer_step(a.model, a.batch_size, a.device, **objective)
            except ConfigError as e:
                p.error(str(e))
        else:
            ops = ops_per_step(a.model, a.batch_size, a.device)
        print(f"fastgan {a.model} batch {a.batch_size}: {sum(ops.values())} ops per step (views left out)")
        for name, n in ops.most_common(a.top):
            print(f"  {n:3d} x {name}")
        return 0
    if a.shapes:
        print(f"{a.impl} {a.model} batch {a.batch_size}, 5 steps:")
        print(ops_by_shape(a.impl, a.model, a.batch_size, a.top))
        return 0
    n, table = kernels_per_step(a.impl, a.model, a.batch_size)
    busy = sum(t for _, t in table.values())
    print(f"{a.impl} {a.model} batch {a.batch_size}: {n:.0f} kernels per step, {busy:.0f} us of kernel time")
    for name, (c, t) in sorted(table.items(), key=lambda kv: -kv[1][1])[: a.top]:
        print(f"  {c:5.1f} x {t / max(c, 1e-9):7.1f} us  {name[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
