"""The package itself: build_info, and the reference fallback where _C is missing."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest

import fastgan


def test_build_info_says_what_was_compiled():
    info = fastgan.build_info()
    for key in ("version", "torch_version", "cpu_kernels", "cuda_kernels", "cuda_arch_list", "openmp", "num_threads"):
        assert key in info
    assert info["version"] == fastgan.__version__
    assert isinstance(info["cpu_kernels"], bool) and isinstance(info["cuda_kernels"], bool)
    if info["cuda_kernels"]:
        assert info["cpu_kernels"] and info["cuda_arch_list"]


FALLBACK = r"""
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastgan
    import fastgan.ops, fastgan.nn  # importing more must not warn again
import torch
from fastgan import ops
torch.manual_seed(0)
x = torch.randn(6, 5, requires_grad=True); b = torch.randn(5, requires_grad=True)
y = ops.bias_leaky_relu(x, b, 0.1, 2.0)
gx, gb = torch.autograd.grad(y.sum(), (x, b))
ref = torch.nn.functional.leaky_relu(x + b, 0.1) * 2.0
rx, rb = torch.autograd.grad(ref.sum(), (x, b))
try:
    ops.bias_leaky_relu(x, torch.randn(4))
    bad = "no error"
except ValueError as e:
    bad = str(e)
print(json.dumps({
    "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
    "info": fastgan.build_info(),
    "match": bool(torch.equal(y, ref) and torch.equal(gx, rx) and torch.equal(gb, rb)),
    "bad": bad,
}))
"""


def test_without_extension_warns_once_and_runs_the_reference():
    env = dict(os.environ, FASTGAN_NO_EXTENSION="1")
    out = subprocess.run([sys.executable, "-c", FALLBACK], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["warnings"]) == 1 and "reference" in result["warnings"][0]
    assert result["info"]["cpu_kernels"] is False and result["info"]["cuda_kernels"] is False
    assert "FASTGAN_NO_EXTENSION" in result["info"]["extension_error"]
    assert result["match"]
    assert "bias must have shape (5,)" in result["bad"]


def test_sdist_carries_every_source_the_build_needs(tmp_path):
    # setuptools packs only the sources setup.py lists (no headers, no .cu on a CPU build);
    # MANIFEST.in adds the rest, so that a build from the sdist (pip wheel, a release) compiles.
    root = pathlib.Path(__file__).resolve().parents[1]
    if not (root / "setup.py").is_file() or not (root / "csrc").is_dir():
        pytest.skip("not a source checkout")
    src = tmp_path / "src"
    shutil.copytree(
        root,
        src,
        ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.so", "*.egg-info", "__pycache__", ".venv", "runs", ".benchmarks"
        ),
    )
    env = dict(os.environ, FASTGAN_CUDA="0")
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")],
        cwd=src,
        env=env,
        check=True,
        capture_output=True,
    )
    (sdist,) = (tmp_path / "dist").glob("fastgan-*.tar.gz")
    with tarfile.open(sdist) as tar:
        packed = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    needed = [p.relative_to(root).as_posix() for p in (root / "csrc").rglob("*") if p.is_file()]
    needed += ["tests/op_testing.py", "tests/test_adam.py", "fastgan/data/mnist_5k.csv.gz", "README.md"]
    assert needed and not [n for n in needed if n not in packed]
