"""fastgan.bench.timing, which every benchmark number goes through: warm-up calls that are not
timed, the median (not the best) of the timed windows, and a strict-float32 block that leaves
the TF32 flags as it found them."""

import contextlib
import os

import pytest
import torch

from fastgan.bench import timing


def test_time_call_warms_up_and_returns_the_median_window(monkeypatch):
    clock = iter([0.0, 0.001, 10.0, 10.002, 20.0, 20.009])  # windows of 1, 2 and 9 ms: best 1, mean 4
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    calls = []
    ms = timing.time_call(lambda: calls.append(1), "cpu", warmup=4, iters=1, reps=3)
    assert ms == pytest.approx(2.0) and len(calls) == 4 + 3


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


def test_copy_bandwidth_counts_bytes_read_and_written(monkeypatch):
    monkeypatch.setattr(timing, "time_call", lambda *a, **k: 1.0)  # 1 ms per copy
    # 1 MiB read + 1 MiB written in 1 ms
    assert timing.copy_bandwidth_gbs("cpu", nbytes=1 << 20) == pytest.approx(2 * (1 << 20) / 1e-3 / 1e9)


def test_machine_header_names_torchs_thread_count():
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads((os.cpu_count() or 1) + 1)
        n = torch.get_num_threads()
        header = timing.machine_header("cpu")
        assert f", {n} threads," in header and header.startswith("CPU ")
        torch.set_num_threads(1)
        assert ", 1 thread," in timing.machine_header("cpu")
    finally:
        torch.set_num_threads(saved)
