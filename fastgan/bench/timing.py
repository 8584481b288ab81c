"""Timing that can be trusted: warm-up first, then the median of repeated timed windows;
CUDA events on the GPU (no host clock around asynchronous work)."""
import json
import platform
import statistics
import time

import torch

from fastgan._files import atomic_write


def time_call(fn, device, warmup=10, iters=50, reps=7):
    """Median milliseconds per call of fn() over `reps` windows of `iters` calls each."""
    for _ in range(warmup):
        fn()
    cuda = torch.device(device).type == "cuda"
    samples = []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / iters)
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            samples.append((time.perf_counter() - t0) * 1e3 / iters)
    return statistics.median(samples)


def auto_iters(fn, device, target_ms=200.0):
    """How many calls make a timed window of about target_ms (at least 5)."""
    one = time_call(fn, device, warmup=3, iters=3, reps=1)
    return max(5, min(2000, int(target_ms / max(one, 1e-3))))


def copy_bandwidth_gbs(device, nbytes=1 << 28):
    """Measured device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = time_call(lambda: dst.copy_(src), device, warmup=3, iters=10, reps=5)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def machine_header(device):
    """One line on what the numbers were measured on."""
    parts = [f"torch {torch.__version__}", f"Python {platform.python_version()}"]
    if torch.device(device).type == "cuda":
        parts.insert(0, f"GPU {torch.cuda.get_device_name()}")
        parts.append(f"CUDA {torch.version.cuda}")
    else:
        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        n = torch.get_num_threads()
        parts.insert(0, f"CPU {cpu}, {n} thread{'' if n == 1 else 's'}")
    return ", ".join(parts)


def add_output_options(parser):
    """--json and --markdown, the files a benchmark writes its results to (besides stdout), and
    --from-json, which prints (and writes) the table of an earlier run's JSON without running."""
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--markdown", help="also write the printed table (markdown) to this file")
    parser.add_argument("--from-json", help="the table of an earlier --json run, without running anything")


def from_json(args, markdown):
    """With --from-json: prints (and writes to --markdown) that file's table and returns the
    result it holds; None without --from-json."""
    if not args.from_json:
        return None
    with open(args.from_json) as f:
        result = json.load(f)
    report(result, markdown, markdown_path=args.markdown)
    return result


def _write_atomic(path, text):
    with atomic_write(path, "w") as f:
        f.write(text)


def report(result, markdown, json_path=None, markdown_path=None):
    """Prints markdown(result); with json_path / markdown_path, also writes the result as JSON /
    the table as markdown to those files, each atomically (written whole or not at all)."""
    table = markdown(result)
    print(table)
    if json_path:
        _write_atomic(json_path, json.dumps(result, indent=1))
    if markdown_path:
        _write_atomic(markdown_path, table + "\n")
