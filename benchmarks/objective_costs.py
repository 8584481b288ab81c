"""Per-step cost of each objective option on the CPU (issue 17): Trainer's step callable,
mlp and dcgan, batch 64, 5 warm-up steps, median of 5 windows of 10 steps."""

import statistics
import sys
import tempfile
import time

from fastgan.train import TrainConfig, Trainer

OPTIONS = [
    ("default", {}),
    ("--loss hinge", dict(loss="hinge")),
    ("--loss lsgan", dict(loss="lsgan")),
    ("--loss wgan --gp 10", dict(loss="wgan", gp=10.0)),
    ("--r1 10", dict(r1=10.0)),
    ("--n-critic 5 (--loss wgan)", dict(loss="wgan", n_critic=5)),
    ("--spectral-norm", dict(spectral_norm=True)),
    ("--ema 0.999", dict(ema=0.999)),
]
for model in sys.argv[1:]:
    for name, kw in OPTIONS:
        with tempfile.TemporaryDirectory() as d:
            t = Trainer(TrainConfig(model=model, steps=10, batch_size=64, device="cpu", progress=False, out=d, **kw))
            t.loader.new_epoch()
            for _ in range(5):
                t._step()
            w = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(10):
                    t._step()
                w.append((time.perf_counter() - t0) / 10 * 1e3)
            print(f"| {model} | {name} | {statistics.median(w):.2f} |", flush=True)
