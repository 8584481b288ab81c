"""Builds fastgan._C, the C++ (CPU) and CUDA kernels, on torch.utils.cpp_extension.

Options (environment variables):
  FASTGAN_CUDA=1       build the CUDA kernels; a missing CUDA torch or toolkit is an error
  FASTGAN_CUDA=0       build the CPU kernels only
  (unset)              build the CUDA kernels when torch has CUDA and nvcc/CUDA_HOME is found
  TORCH_CUDA_ARCH_LIST GPU architectures (default "8.0;9.0+PTX": A100, H100 and newer via PTX)
  MAX_JOBS             parallel compile jobs (ninja)
  FASTGAN_CPU_AVX2=0/1 at::vec with AVX2+FMA+F16C (default: when this machine's CPU has them)
  FASTGAN_DEBUG=1      -O0 -g instead of -O3

A compile error fails the install: there is no silent "kernels missing" package.
"""

import glob
import os
import sys

from setuptools import setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover - the message is the point
    sys.exit(
        "fastgan builds against the installed PyTorch: install torch first, then `pip install --no-build-isolation .`"
    )

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _find_nvcc():
    """A CUDA toolkit folder with bin/nvcc and lib64/libcudart, or None.

    torch guesses CUDA_HOME from `which nvcc`; where nvcc is a wrapper script in
    /usr/local/bin that guess is /usr/local, which has no libcudart, so check each candidate.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), cpp_extension.CUDA_HOME, "/usr/local/cuda"]
    for home in candidates:
        if not home or not os.path.exists(os.path.join(home, "bin", "nvcc")):
            continue
        if any(glob.glob(os.path.join(home, lib, "libcudart.so*")) for lib in ("lib64", "lib")):
            cpp_extension.CUDA_HOME = home  # what cpp_extension compiles and links with
            return home
    return None


def want_cuda():
    flag = os.environ.get("FASTGAN_CUDA", "").strip()
    if flag not in ("", "0", "1"):
        sys.exit(f"FASTGAN_CUDA must be 0 or 1, got {flag!r}")
    torch_cuda = torch.version.cuda is not None
    toolkit = _find_nvcc()
    if flag == "0":
        return False
    if flag == "1":
        if not torch_cuda:
            sys.exit("FASTGAN_CUDA=1, but this torch is a CPU-only build (torch.version.cuda is None)")
        if not toolkit:
            sys.exit("FASTGAN_CUDA=1, but no CUDA toolkit was found: set CUDA_HOME to the folder with bin/nvcc")
        return True
    if torch_cuda and not toolkit:
        print(
            "fastgan: torch has CUDA but no CUDA toolkit was found; building CPU kernels only "
            "(set CUDA_HOME, or FASTGAN_CUDA=1 to make this an error)",
            file=sys.stderr,
        )
    return torch_cuda and toolkit is not None


def want_avx2():
    """The package is built on the machine it runs on: use its AVX2 unless told not to."""
    flag = os.environ.get("FASTGAN_CPU_AVX2", "").strip()
    if flag in ("0", "1"):
        return flag == "1"
    try:
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
    except OSError:
        return False
    return {"avx2", "fma", "f16c"} <= words


def _pip_cuda_include_dirs():
    """Headers that CUDA wheels (nvidia-*-cu13) install beside torch, e.g. nvidia/cu13/include."""
    dirs = []
    for p in sys.path:
        dirs += glob.glob(os.path.join(p, "nvidia", "cu1*", "include"))
    return sorted(set(d for d in dirs if os.path.isdir(d)))


def extension():
    with_cuda = want_cuda()
    debug = os.environ.get("FASTGAN_DEBUG") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp") + glob.glob("csrc/autograd/*.cpp"))
    cxx = opt + ["-fopenmp", "-fvisibility=hidden"]
    define_macros = []
    if want_avx2():  # at::vec picks its AVX2 Vectorized<> specializations on this macro
        cxx += ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    include_dirs = [os.path.join(HERE, "csrc")]
    extra_link = ["-fopenmp"]
    if with_cuda:
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCH_LIST
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        define_macros += [("FASTGAN_WITH_CUDA", "1"), ("FASTGAN_CUDA_ARCH_LIST", f'"{arch}"')]
        include_dirs += _pip_cuda_include_dirs()
        nvcc = opt + ["--expt-relaxed-constexpr", "-lineinfo"]
        return cpp_extension.CUDAExtension(
            "fastgan._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=extra_link,
        )
    return cpp_extension.CppExtension(
        "fastgan._C",
        sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx},
        extra_link_args=extra_link,
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
