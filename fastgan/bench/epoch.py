"""One full training epoch, data loading included (`fastgan bench train --epoch`).

tutorial: the tutorial's loop: a DataLoader over the uint8 images with a per-sample
          transform (to float in [0, 1], then normalize to [-1, 1], as ToTensor + Normalize),
          batch 64, shuffled, each batch copied to the device, the tutorial's eager step.
fastgan:  the dataset on the device, a fresh permutation per epoch, the batch gathered and
          the noise drawn inside fastgan's step (a CUDA graph on CUDA), as `fastgan train`.

The images are real MNIST where `--data-dir` holds it, else a synthetic uint8 set of the
same size (60,000 images): the time does not depend on the pixels. Strict float32 (TF32 off
for matrix products and cuDNN), as `bench train`. The tutorial's per-sample transform is
cheaper than torchvision's (no PIL image per item), so its epoch is if anything too fast.
"""

import time

import torch

from fastgan.bench.timing import machine_header, strict_float32
from fastgan.bench.tutorial import TutorialDataset, sync, tutorial_train_step
from fastgan.train.step import make_step

NAME = "fastgan bench train --epoch"


def dataset(data_dir=None, n=60000, seed=0):
    """(images uint8 (N, 28, 28), labels, source name)."""
    if data_dir:
        from fastgan.data import load_dataset

        images, labels = load_dataset("mnist", data_dir)
        return images, labels, "MNIST train (60,000 images)"
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=gen),
        torch.randint(0, 10, (n,), generator=gen),
        f"synthetic uint8, {n:,} images",
    )


def tutorial_epoch(model, images, labels, device, batch_size=64):
    """Seconds for one epoch of the tutorial's loop (after one warm-up batch)."""
    loader = torch.utils.data.DataLoader(
        TutorialDataset(images, labels), batch_size=batch_size, shuffle=True, drop_last=True
    )
    step = tutorial_train_step(model, device)
    step(next(iter(loader))[0].to(device))  # warm-up: cuBLAS handles, allocator
    sync(device)
    t0 = time.perf_counter()
    for x, _ in loader:
        step(x.to(device))
    sync(device)
    return time.perf_counter() - t0, len(loader)


def fastgan_epoch(model, images, labels, device, batch_size=64):
    """Seconds for one epoch of fastgan's loop, the dataset already on the device; its one-time
    setup (the copy to the device, the warm-up steps and the graph capture) is timed separately
    and returned too."""
    sync(device)
    t0 = time.perf_counter()
    step = make_step(model, batch_size, device, images=images, labels=labels)
    for _ in range(5):
        step()  # warm-up and graph capture
    sync(device)
    setup = time.perf_counter() - t0
    steps = step.batches.steps_per_epoch
    t0 = time.perf_counter()
    step.batches.new_epoch()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - t0, steps, setup


@strict_float32()
def run(device, models=("mlp",), data_dir=None, n=60000):
    images, labels, source = dataset(data_dir, n)
    rows = []
    for model in models:
        t_tut, steps_tut = tutorial_epoch(model, images, labels, device)
        t_fg, steps_fg, setup = fastgan_epoch(model, images, labels, device)
        rows.append(
            {
                "model": model,
                "tutorial_s": t_tut,
                "tutorial_steps": steps_tut,
                "fastgan_s": t_fg,
                "fastgan_steps": steps_fg,
                "fastgan_setup_s": setup,
            }
        )
    return {"benchmark": NAME, "machine": machine_header(device), "data": source, "rows": rows}


def markdown(result):
    lines = [
        f"Machine: {result['machine']}; data: {result['data']}; strict float32 (TF32 off); "
        "fastgan 50 epochs: 50 x its epoch + its one-time setup (device copy, warm-up, graph "
        "capture), the step loop only: `fastgan train` also writes each epoch's outputs",
        "",
        "| model | tutorial epoch s | fastgan epoch s | speed-up | tutorial 50 epochs | fastgan 50 epochs |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['tutorial_s']:.2f} | {r['fastgan_s']:.2f} | "
            f"{r['tutorial_s'] / r['fastgan_s']:.1f}x | {50 * r['tutorial_s']:.0f} s | "
            f"{50 * r['fastgan_s'] + r['fastgan_setup_s']:.1f} s |"
        )
    return "\n".join(lines)
