"""fastgan.bench.timing, which every benchmark number goes through: warm-up calls that are not
timed, the median (not the best) of the timed windows, and a strict-float32 block that leaves
the TF32 flags as it found them."""
import contextlib

import pytest
import torch

from fastgan.bench import timing


def test_time_call_warms_up_and_returns_the_median_window(monkeypatch):
    clock = iter([0.0, 0.005, 10.0, 10.001, 20.0, 20.009])   # windows of 5, 1 and 9 ms
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    calls = []
    ms = timing.time_call(lambda: calls.append(1), "cpu", warmup=4, iters=1, reps=3)
    assert ms == pytest.approx(5.0) and len(calls) == 4 + 3


def test_time_call_divides_a_window_by_its_calls(monkeypatch):
    clock = iter([1.0, 1.010])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    assert timing.time_call(lambda: None, "cpu", warmup=0, iters=5, reps=1) == pytest.approx(2.0)


@pytest.mark.parametrize("fails", [False, True])
def test_strict_float32_turns_tf32_off_and_restores_the_flags(fails):
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32)
    try:
        matmul.allow_tf32, cudnn.allow_tf32 = True, False
        with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
            with timing.strict_float32():
                assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)
                if fails:
                    raise RuntimeError("a benchmark failed")
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, False)
        matmul.allow_tf32, cudnn.allow_tf32 = False, True

        @timing.strict_float32()
        def timed():
            return matmul.allow_tf32, cudnn.allow_tf32

        assert timed() == (False, False) and (matmul.allow_tf32, cudnn.allow_tf32) == (False, True)
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved

