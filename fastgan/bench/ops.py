"""Per-op benchmarks: each fastgan op against PyTorch eager and torch.compile of the same
math, forward + backward (Adam: one optimizer step), at GAN shapes. `fastgan bench ops` prints
a markdown table; benchmarks/test_<op>.py time the same cases with pytest-benchmark."""

import argparse
import sys

import torch
import torch.nn.functional as F

from fastgan import ops
from fastgan.bench.timing import (
    add_output_options,
    auto_iters,
    check_device,
    check_output_paths,
    copy_bandwidth_gbs,
    from_json,
    machine_header,
    report,
    time_call,
)

NAME = "fastgan bench ops"

SHAPES = [
    ((64, 1024), "contiguous"),
    ((1024, 1024), "contiguous"),
    ((8192, 4096), "contiguous"),
    ((256, 128, 14, 14), "channels_last"),
]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _eager_bias_leaky_relu(x, b):
    return F.leaky_relu(x + b.view([1, -1] + [1] * (x.dim() - 2)), 0.2)


def _fastgan_bias_leaky_relu(x, b):
    return ops.bias_leaky_relu(x, b, 0.2)


def bias_leaky_relu_case(shape, layout, dtype, device, impl):
    """A callable running one forward + backward of bias_leaky_relu, and its minimum bytes."""
    x = torch.randn(shape, device=device, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    b = torch.randn(shape[1], device=device, dtype=dtype, requires_grad=True)
    g = torch.randn_like(x)
    fn = {
        "eager": _eager_bias_leaky_relu,
        "fastgan": _fastgan_bias_leaky_relu,
        "compile": torch.compile(_eager_bias_leaky_relu),
    }[impl]

    def step():
        y = fn(x, b)
        return torch.autograd.grad(y, (x, b), g)

    # forward reads x and writes y; backward reads g and y and writes grad_x
    return step, 5 * x.numel() * x.element_size()


def _eager_batch_norm(x, w, b, rm, rv, slope):
    y = F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)
    return y if slope is None else F.leaky_relu(y, slope)


def _fastgan_batch_norm(x, w, b, rm, rv, slope):
    return ops.batch_norm(x, w, b, rm, rv, True, 0.1, 1e-5, slope)


def batch_norm_case(shape, layout, dtype, device, impl, act=True):
    """Training-mode batch norm + LeakyReLU 0.2 (act=False: batch norm alone; running stats
    updated), forward + backward; parameters and running stats float32 as under autocast."""
    x = torch.randn(shape, device=device, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    c = shape[1]
    w = torch.ones(c, device=device, requires_grad=True)
    b = torch.zeros(c, device=device, requires_grad=True)
    rm, rv = torch.zeros(c, device=device), torch.ones(c, device=device)
    g = torch.randn_like(x)
    fn = {"eager": _eager_batch_norm, "fastgan": _fastgan_batch_norm, "compile": torch.compile(_eager_batch_norm)}[impl]
    slope = 0.2 if act else None

    def step():
        return torch.autograd.grad(fn(x, w, b, rm, rv, slope), (x, w, b), g)

    # forward reads x twice (statistics, normalize) and writes y; backward reads x and dy
    # twice and writes dx
    return step, 8 * x.numel() * x.element_size()


def _eager_d_loss(real, fake):
    ones, zeros = torch.ones_like(real), torch.zeros_like(fake)
    return F.binary_cross_entropy_with_logits(real, ones) + F.binary_cross_entropy_with_logits(fake, zeros)


def _fastgan_d_loss(real, fake):
    return ops.gan_d_loss(real, fake)


def gan_d_loss_case(shape, layout, dtype, device, impl):
    """The discriminator loss on a real and a fake batch of logits, forward + backward."""
    real = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    fake = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    fn = {"eager": _eager_d_loss, "fastgan": _fastgan_d_loss, "compile": torch.compile(_eager_d_loss)}[impl]

    def step():
        return torch.autograd.grad(fn(real, fake), (real, fake))

    # forward reads both batches; backward reads them again and writes both gradients
    return step, 6 * real.numel() * real.element_size()


def _eager_g_loss(fake):
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def gan_g_loss_case(shape, layout, dtype, device, impl):
    """The generator's non-saturating loss on a batch of logits, forward + backward."""
    fake = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    fn = {"eager": _eager_g_loss, "fastgan": ops.gan_g_loss, "compile": torch.compile(_eager_g_loss)}[impl]

    def step():
        return torch.autograd.grad(fn(fake), fake)

    # forward reads the logits; backward reads them again and writes their gradient
    return step, 3 * fake.numel() * fake.element_size()


def bce_with_logits_case(shape, layout, dtype, device, impl):
    """BCE with logits against a tensor target (mean), forward + backward in the logits."""
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    t = torch.rand(shape, device=device, dtype=dtype)
    fn = {
        "eager": F.binary_cross_entropy_with_logits,
        "fastgan": ops.bce_with_logits,
        "compile": torch.compile(F.binary_cross_entropy_with_logits),
    }[impl]

    def step():
        return torch.autograd.grad(fn(x, t), x)

    # forward reads logits and target; backward reads them again and writes the gradient
    return step, 5 * x.numel() * x.element_size()


def adam_case(shape, layout, dtype, device, impl):
    """One optimizer step over shape[0] parameters of shape[1:] with their gradients: eager is
    torch.optim.Adam (its default for the device: foreach on CUDA), compile is torch.compile of
    its step, fastgan is fastgan.optim.Adam (one adam_ launch)."""
    from fastgan.optim import Adam as FusedAdam

    params = [torch.randn(shape[1:], device=device, dtype=dtype, requires_grad=True) for _ in range(shape[0])]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt = (FusedAdam if impl == "fastgan" else torch.optim.Adam)(params, lr=2e-4, betas=(0.5, 0.999))
    step = torch.compile(opt.step) if impl == "compile" else opt.step
    # reads parameters, gradients and both moments; writes parameters and both moments
    return step, 7 * sum(p.numel() for p in params) * params[0].element_size()


LOSS_SHAPES = [((64, 1), "contiguous"), ((1024, 1), "contiguous"), ((4194304, 1), "contiguous")]
ADAM_SHAPES = [((8, 256, 256), "contiguous"), ((4, 1024, 1024), "contiguous"), ((16, 1024, 1024), "contiguous")]
# op: (case, shapes, dtypes it runs in (None: every one asked for))
CASES = {
    "bias_leaky_relu": (bias_leaky_relu_case, SHAPES, None),
    "batch_norm": (lambda *a: batch_norm_case(*a, act=False), SHAPES, None),
    "batch_norm+leaky_relu": (batch_norm_case, SHAPES, None),
    "gan_d_loss": (gan_d_loss_case, LOSS_SHAPES, None),
    "gan_g_loss": (gan_g_loss_case, LOSS_SHAPES, None),
    "bce_with_logits": (bce_with_logits_case, LOSS_SHAPES, None),
    "adam": (adam_case, ADAM_SHAPES, ("float32",)),
}  # fastgan's Adam: float32/float64 parameters


def run(device, op_names=None, dtypes=("float32", "bfloat16"), impls=("eager", "compile", "fastgan"), graph=False):
    """graph: time each forward+backward captured in a CUDA graph, so the numbers are the
    kernels' own time without the host's per-call overhead (what bandwidth fractions mean)."""
    rows = []
    bw = copy_bandwidth_gbs(device) if torch.device(device).type == "cuda" else None
    # a bandwidth fraction means something only for kernel time (graph replays: no host overhead)
    # over a working set the L2 cache cannot hold between replays (2x its size)
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) if bw else 0
    for name in op_names or CASES:
        case, shapes, only = CASES[name]
        for shape, layout in shapes:
            if torch.device(device).type == "cpu" and torch.Size(shape).numel() >= 1 << 22:
                continue  # the largest shapes are for the GPU
            for dname in dtypes:
                if only is not None and dname not in only:
                    continue
                row = {"op": name, "shape": "x".join(map(str, shape)), "layout": layout, "dtype": dname}
                for impl in impls:
                    torch._dynamo.reset()
                    step, nbytes = case(shape, layout, DTYPES[dname], device, impl)
                    if graph:
                        from fastgan.train.graph import GraphedStep

                        step = GraphedStep(step)
                    ms = time_call(step, device, warmup=5, iters=auto_iters(step, device))
                    row[impl] = ms
                    if impl == "fastgan" and bw and graph and nbytes >= 2 * l2:
                        row["fastgan_bw_frac"] = nbytes / (ms * 1e-3) / 1e9 / bw
                rows.append(row)
    return {
        "benchmark": NAME,
        "machine": machine_header(device),
        "copy_bandwidth_gbs": bw,
        "rows": rows,
        "graph": graph,
        "impls": list(impls),
    }


def markdown(result):
    impls = result.get("impls", ["eager", "compile", "fastgan"])
    others = [i for i in impls if i != "fastgan"]
    lines = [
        f"Machine: {result['machine']}"
        + (f"; measured copy bandwidth {result['copy_bandwidth_gbs']:.0f} GB/s" if result["copy_bandwidth_gbs"] else "")
        + ("; each call replayed from a CUDA graph (kernel time only)" if result.get("graph") else ""),
        "",
        "| op | shape | layout | dtype | "
        + " | ".join(f"{i} ms" for i in impls)
        + " | "
        + " | ".join(f"vs {i}" for i in others)
        + " | % copy BW |",
        "|---|---|---|---|" + "---|" * (len(impls) + len(others) + 1),
    ]
    for r in result["rows"]:
        frac = f"{100 * r['fastgan_bw_frac']:.0f}%" if r.get("fastgan_bw_frac") else "–"
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['layout']} | {r['dtype']} | "
            + " | ".join(f"{r[i]:.3f}" for i in impls)
            + " | "
            + " | ".join(f"{r[i] / r['fastgan']:.2f}x" for i in others)
            + f" | {frac} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog=NAME, description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--op", action="append", choices=sorted(CASES), help="ops to time (default: all)")
    p.add_argument("--dtype", action="append", choices=sorted(DTYPES), help="default: float32 and bfloat16")
    p.add_argument(
        "--impl",
        action="append",
        choices=["eager", "compile", "fastgan"],
        help="default: all three (fastgan is always timed)",
    )
    p.add_argument(
        "--graph",
        action="store_true",
        help="CUDA: time each call replayed from a CUDA graph (kernel time, no host overhead)",
    )
    add_output_options(p)
    a = p.parse_args(argv)
    check_output_paths(p, a)
    if (
        from_json(
            a,
            markdown,
            p,
            keys=("machine", "copy_bandwidth_gbs", "rows"),
            rows="rows",
            row_keys=("op", "shape", "layout", "dtype", "fastgan"),
        )
        is not None
    ):
        return 0
    device = check_device(p, a.device)
    if a.graph and torch.device(device).type != "cuda":
        p.error(f"--graph: needs a CUDA device (CUDA graphs), not --device {a.device}")
    impls = tuple(dict.fromkeys((a.impl or ["eager", "compile"]) + ["fastgan"]))
    ops_ = list(dict.fromkeys(a.op)) if a.op else None
    result = run(device, ops_, tuple(dict.fromkeys(a.dtype or ("float32", "bfloat16"))), impls, a.graph)
    report(result, markdown, a.json, a.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
