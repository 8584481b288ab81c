"""Kernels per training step: what a CUDA graph replays, counted with torch.profiler on the
op-by-op step. `python -m fastgan.bench.profile --model mlp --batch-size 64`."""
import argparse
import collections
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from fastgan.bench.train import IMPLS, make


def kernels_per_step(impl, model, batch_size, steps=5):
    """(kernels per step, {kernel name: (count per step, GPU microseconds per step)})."""
    step = make(impl, model, batch_size, "cuda")
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
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
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="mlp")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--impl", default="fastgan", choices=[i for i in IMPLS if i not in ("expert", "graph")],
                   help="an op-by-op step (a graph replays the same kernels as 'fastgan')")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    n, table = kernels_per_step(a.impl, a.model, a.batch_size)
    busy = sum(t for _, t in table.values())
    print(f"{a.impl} {a.model} batch {a.batch_size}: {n:.0f} kernels per step, {busy:.0f} us of kernel time")
    for name, (c, t) in sorted(table.items(), key=lambda kv: -kv[1][1])[: a.top]:
        print(f"  {c:5.1f} x {t / max(c, 1e-9):7.1f} us  {name[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
