"""`fastgan bench ops`: every case times the same math for eager, torch.compile and fastgan."""

import pytest
import torch

from fastgan.bench import ops as bench_ops

from op_testing import requires_kernels


def _outputs(step):
    out = step()
    if out is None:  # an optimizer step: the parameters it updated
        return [p.detach() for g in step.__self__.param_groups for p in g["params"]]
    return out


@requires_kernels
@pytest.mark.parametrize("op", sorted(bench_ops.CASES))
def test_each_case_runs_the_same_math_for_eager_and_fastgan(op):
    case, shapes, _ = bench_ops.CASES[op]
    shape, layout = shapes[0]
    results, sizes = [], []
    for impl in ("eager", "fastgan"):
        torch.manual_seed(0)  # the same inputs for both
        step, nbytes = case(shape, layout, torch.float32, "cpu", impl)
        results.append(_outputs(step))
        sizes.append(nbytes)
    assert sizes[0] == sizes[1] > 0
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@requires_kernels
def test_every_op_has_a_case():
    """Issue 7: `bench ops` times every op; the optimizer counts as one."""
    assert set(bench_ops.CASES) >= {
        "bias_leaky_relu",
        "batch_norm",
        "batch_norm+leaky_relu",
        "gan_d_loss",
        "gan_g_loss",
        "bce_with_logits",
        "adam",
    }
    result = bench_ops.run("cpu", ["adam", "gan_g_loss"], ("float32", "bfloat16"), ("eager", "fastgan"))
    assert {r["op"] for r in result["rows"]} == {"adam", "gan_g_loss"}
    assert all(r["dtype"] == "float32" for r in result["rows"] if r["op"] == "adam")  # Adam: float32 only
    assert all(r["fastgan"] > 0 and r["eager"] > 0 for r in result["rows"])
