"""Why fastgan's autograd is in C++: the same kernels behind two autograd front ends.

`cpp`: torch.ops.fastgan.bias_leaky_relu, whose autograd kernel is C++ (csrc/autograd/).
`python`: the same forward/backward kernels wrapped as a torch.library.custom_op with
torch.library.register_autograd, the Python route. At GAN sizes an op costs about as much
as its host overhead, so the front end's cost per call is the number that matters.
"""

import torch

from fastgan.bench.timing import check_device, machine_header, time_call

_python_op = None


def python_autograd_op():
    global _python_op
    if _python_op is not None:
        return _python_op

    @torch.library.custom_op("fastgan_bench::bias_leaky_relu_pyautograd", mutates_args=())
    def op(x: torch.Tensor, bias: torch.Tensor, negative_slope: float, scale: float) -> torch.Tensor:
        return torch.ops.fastgan.bias_leaky_relu.default(x, bias, negative_slope, scale)

    @op.register_fake
    def _(x, bias, negative_slope, scale):
        return torch.empty_like(x)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.slope, ctx.scale, ctx.bias_dtype = inputs[2], inputs[3], inputs[1].dtype

    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        gx, gb = torch.ops.fastgan.bias_leaky_relu_backward.default(grad, y, ctx.slope, ctx.scale, ctx.bias_dtype)
        return gx, gb, None, None

    op.register_autograd(backward, setup_context=setup_context)
    _python_op = op
    return op


def make_step(front_end, shape=(64, 1024), device="cpu"):
    x = torch.randn(shape, device=device, requires_grad=True)
    b = torch.randn(shape[1], device=device, requires_grad=True)
    g = torch.randn(shape, device=device)
    fn = torch.ops.fastgan.bias_leaky_relu.default if front_end == "cpp" else python_autograd_op()

    def step():
        return torch.autograd.grad(fn(x, b, 0.2, 1.0), (x, b), g)

    return step


def run(device, shape=(64, 1024)):
    result = {"machine": machine_header(device), "shape": shape}
    for front_end in ("cpp", "python"):
        result[front_end] = time_call(make_step(front_end, shape, device), device, warmup=20, iters=500)
    return result


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m fastgan.bench.dispatch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "device",
        nargs="?",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda or cuda:N (default: cuda where there is one)",
    )
    a = p.parse_args(argv)
    dev = check_device(p, a.device, option="device")
    r = run(dev)
    print(
        f"{r['machine']}\nbias_leaky_relu {r['shape']} forward+backward, ms per call: "
        f"C++ autograd {r['cpp']:.4f}, Python register_autograd {r['python']:.4f} "
        f"({r['python'] / r['cpp']:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
