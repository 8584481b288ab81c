"""The matrix products of one training step, one by one: `python -m fastgan.bench.gemm`.

At batch 64 the MLP step's 30 matrix products take about 190 of its 347 us of kernel time on
an H100 (benchmarks/RESULTS.md): small strict-float32 GEMMs that cannot fill the GPU. This
records the products a fastgan step really runs (op, shapes and strides, so which operand is
a transposed view), then times each on its own (replayed from a CUDA graph on the GPU, so the
time is the kernel's) under torch's default BLAS library and under cuBLASLt: where the
step's GEMM time goes, and which library serves which shape better. For each addmm (a
Linear layer with its bias in the product's epilogue) it also times the same product as a
plain mm, the form fastgan's fused layers use (their bias goes into bias_leaky_relu): cuBLAS
may pick another kernel for it.
"""

import argparse
import sys

import torch

from fastgan._argtypes import positive_int
from fastgan._options import PRECISIONS
from fastgan.bench.profile import count_step
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

PRODUCTS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default)
NAME = "python -m fastgan.bench.gemm"


def _spec(a):
    if isinstance(a, torch.Tensor):
        return ("tensor", tuple(a.shape), tuple(a.stride()), a.dtype)
    return ("value", a)


def _product_key(func, args, kwargs):
    if func not in PRODUCTS:
        return None
    return func, tuple(_spec(a) for a in args), tuple(sorted((k, _spec(v)) for k, v in kwargs.items()))


def step_products(model, batch_size, device, precision="fp32"):
    """{(op, arg specs, kwarg specs): calls per step} of one op-by-op fastgan training step."""
    return count_step(model, batch_size, device, _product_key, precision)


def _make(spec, device):
    if spec[0] == "value":
        return spec[1]
    _, shape, stride, dtype = spec
    return torch.empty_strided(shape, stride, dtype=dtype, device=device).normal_()


def _without_bias(key):
    """An addmm's product as the mm of the same operands (None for anything else)."""
    func, args, kwargs = key
    if func is not torch.ops.aten.addmm.default:
        return None
    return torch.ops.aten.mm.default, args[1:3], ()


def time_product(key, device):
    """Milliseconds per call of one recorded product on fresh operands of the same layout."""
    func, args, kwargs = key
    a = [_make(s, device) for s in args]
    kw = {k: _make(s, device) for k, s in kwargs}
    fn = lambda: func(*a, **kw)  # noqa: E731
    if torch.device(device).type == "cuda":
        from fastgan.train.graph import GraphedStep

        fn = GraphedStep(fn)
    return time_call(fn, device, warmup=5, iters=auto_iters(fn, device, 50.0), reps=5)


def run(device, models=("mlp",), batch_size=64, precision="fp32"):
    cuda = torch.device(device).type == "cuda"
    libraries = ("default", "cublaslt") if cuda else ("default",)
    rows = []
    # the library is set per column below; strict_float32 restores it (and TF32) at the end.
    # Note: torch may run an addmm with a 1-d bias through cuBLASLt's bias epilogue whatever the
    # preferred library (DISABLE_ADDMM_CUDA_LT=1 turns that off): its "default" column may be Lt
    with strict_float32("cublas" if cuda else None):
        for model in models:
            for key, count in step_products(model, batch_size, device, precision).items():
                func, args, _ = key
                tensors = [s for s in args if s[0] == "tensor"]
                row = {
                    "model": model,
                    "op": func.overloadpacket.__name__,
                    "count": count,
                    "shapes": " @ ".join(
                        "x".join(map(str, s[1])) + ("^T" if _transposed(s) else "") for s in tensors[-2:]
                    ),
                    "bias": len(tensors) == 3,
                }
                for lib in libraries:
                    if cuda:
                        torch.backends.cuda.preferred_blas_library("cublas" if lib == "default" else lib)
                    row[lib] = time_product(key, device) * 1e3  # microseconds
                    plain = _without_bias(key)
                    if plain is not None:
                        row[f"{lib} as mm"] = time_product(plain, device) * 1e3
                rows.append(row)
    return {
        "benchmark": NAME,
        "machine": machine_header(device),
        "batch_size": batch_size,
        "precision": precision,
        "libraries": list(libraries),
        "rows": rows,
    }


def _transposed(spec):
    """A 2-d operand stored column-major: a transposed view (t()) of a row-major matrix."""
    _, shape, stride, _ = spec
    return len(shape) == 2 and shape[0] > 1 and shape[1] > 1 and stride[0] == 1


def markdown(result):
    libs = result["libraries"]
    note = "each replayed from a CUDA graph (kernel time)" if "cublaslt" in libs else "each called on its own"
    cols = [c for l in libs for c in (l, f"{l} as mm")]
    lines = [
        f"Machine: {result['machine']}; batch {result['batch_size']}, {result['precision']}; {note}; "
        "'as mm': an addmm's product without its bias",
        "",
        "| model | op | operands (^T: transposed view) | per step | " + " | ".join(f"{c} us" for c in cols) + " |",
        "|---|---|---|---|" + "---|" * len(cols),
    ]
    for r in sorted(result["rows"], key=lambda r: (r["model"], -r["default"] * r["count"])):
        lines.append(
            f"| {r['model']} | {r['op']}{' + bias' if r['bias'] else ''} | {r['shapes']} | {r['count']} | "
            + " | ".join(f"{r[c]:.1f}" if c in r else "–" for c in cols)
            + " |"
        )
    for model in dict.fromkeys(r["model"] for r in result["rows"]):
        mine = [r for r in result["rows"] if r["model"] == model]
        totals = ", ".join(f"{l} {sum(r[l] * r['count'] for r in mine):.0f} us" for l in libs)
        lines.append(f"\n{model}: {sum(r['count'] for r in mine)} products per step; summed one by one: {totals}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog=NAME, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", action="append", choices=("mlp", "mlp-bn", "cgan"), help="default: mlp")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    add_output_options(p)
    a = p.parse_args(argv)
    check_output_paths(p, a)
    if (
        from_json(
            a,
            markdown,
            p,
            keys=("machine", "batch_size", "precision", "libraries", "rows"),
            rows="rows",
            row_keys=("model", "op", "count", "shapes", "bias", "default"),
        )
        is not None
    ):
        return 0
    device = check_device(p, a.device)
    report(
        run(device, tuple(dict.fromkeys(a.model or ("mlp",))), a.batch_size, a.precision), markdown, a.json, a.markdown
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
