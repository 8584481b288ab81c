"""Timing that can be trusted: warm-up first, then the median of repeated timed windows;
CUDA events on the GPU (no host clock around asynchronous work)."""

import contextlib
import json
import os
import platform
import statistics
import time

import torch

from fastgan._files import atomic_write, output_problem


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


@contextlib.contextmanager
def strict_float32(blas=None):
    """TF32 off for matrix products and cuDNN (cuDNN allows it by default): the tutorial's and the expert's baseline;
    blas: torch's BLAS library for the block ("cublas", "cublaslt"; None: as it is). Usable as a
    decorator; the flags and the library are restored afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    library = torch.backends.cuda.preferred_blas_library() if blas else None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        if blas:
            torch.backends.cuda.preferred_blas_library(blas)
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        if library is not None:
            torch.backends.cuda.preferred_blas_library(library)


def _cpu_name():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return cpu


def _commit():
    """The fastgan source's git commit (short), or None outside a checkout."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine_header(device):
    """One line on what the numbers were measured on: the device, the host CPU (host overhead
    bounds the small steps), torch, cuDNN, CUDA, Python and the fastgan commit."""
    parts = [f"torch {torch.__version__}", f"Python {platform.python_version()}"]
    n = torch.get_num_threads()
    host = f"CPU {_cpu_name()}, {n} thread{'' if n == 1 else 's'}"
    if torch.device(device).type == "cuda":
        parts[:0] = [f"GPU {torch.cuda.get_device_name()}", f"host {host}"]
        parts += [f"CUDA {torch.version.cuda}", f"cuDNN {torch.backends.cudnn.version()}"]
    else:
        parts.insert(0, host)
    commit = _commit()
    if commit:
        parts.append(f"fastgan {commit}")
    return ", ".join(parts)


def check_device(parser, device, option="--device"):
    """The device a benchmark runs on, checked before anything runs: cpu, cuda or cuda:N, and
    a CUDA GPU there for cuda. Returns its canonical name; parser.error (exit 2) otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        parser.error(f"{option} {device}: not a device (cpu, cuda, cuda:N)")
    if dev.type not in ("cpu", "cuda"):
        parser.error(f"{option} {device}: not a device this benchmark runs on (cpu, cuda, cuda:N)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"{option} {device}: no CUDA GPU is available")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            parser.error(f"{option} {device}: no such GPU ({n} available: cuda:0 to cuda:{n - 1})")
    return str(dev)


def check_output_path(parser, option, path):
    """A file the benchmark will write, checked before it runs (fastgan._files.output_problem:
    not a folder, and no file where its folder should be; atomic_write makes missing folders);
    parser.error (exit 2) naming `option` otherwise."""
    if path is None:
        return
    problem = output_problem(path)
    if problem:
        parser.error(f"{option} {problem}")


def check_output_paths(parser, args, options=("--json", "--markdown")):
    """check_output_path for each of `options` given in args, and no two naming one file."""
    seen = {}
    for option in options:
        path = getattr(args, option.lstrip("-").replace("-", "_"), None)
        check_output_path(parser, option, path)
        if path:
            key = os.path.realpath(path)
            if key in seen:
                parser.error(f"{option} {path}: the same file as {seen[key]}")
            seen[key] = option


def add_output_options(parser):
    """--json and --markdown, the files a benchmark writes its results to (besides stdout), and
    --from-json, which prints (and writes) the table of an earlier run's JSON without running."""
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--markdown", help="also write the printed table (markdown) to this file")
    parser.add_argument("--from-json", help="the table of an earlier --json run, without running anything")


_TABLE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError)


def load_result(parser, path, markdown, name, keys=(), rows=None, row_keys=()):
    """The result in JSON file `path` (--from-json), checked to be one of benchmark `name`
    (e.g. "fastgan bench ops"): a JSON object with `keys`, its list `rows` of objects with
    `row_keys`, and a table markdown() can make. parser.error (exit 2) naming --from-json
    otherwise: a missing or unreadable file, not JSON, or another benchmark's result."""
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except OSError as exc:
        parser.error(f"--from-json {path}: cannot read it ({exc.strerror or exc})")
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        parser.error(f"--from-json {path}: not JSON ({str(exc).splitlines()[0][:120]})")

    def wrong(why):
        other = result.get("benchmark") if isinstance(result, dict) else None
        if isinstance(other, str) and other != name:
            why += f"; it is a `{other}` result"
        parser.error(f"--from-json {path}: not a `{name}` result ({why})")

    if not isinstance(result, dict):
        wrong(f"a JSON {type(result).__name__}, not an object")
    if result.get("benchmark", name) != name:
        wrong("another benchmark")
    missing = [k for k in keys if k not in result]
    if missing:
        wrong("no " + ", ".join(map(repr, missing)))
    if rows is not None:
        if not isinstance(result[rows], list) or not all(isinstance(r, dict) for r in result[rows]):
            wrong(f"{rows!r} is not a list of objects")
        for r in result[rows]:
            missing = [k for k in row_keys if k not in r]
            if missing:
                wrong(f"{rows!r} entries without " + ", ".join(map(repr, missing)))
    try:
        markdown(result)
    except _TABLE_ERRORS as exc:
        wrong(f"its table cannot be made: {type(exc).__name__} {exc}")
    return result


def from_json(args, markdown, parser, name=None, **check):
    """With --from-json: prints (and writes to --markdown) that file's table and returns the
    result it holds, once load_result has checked it (name defaults to parser.prog); None
    without --from-json."""
    if not args.from_json:
        return None
    result = load_result(parser, args.from_json, markdown, name or parser.prog, **check)
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
