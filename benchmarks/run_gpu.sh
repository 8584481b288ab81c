#!/usr/bin/env bash
# One call on a GPU machine: build fastgan, run the CUDA tests, then the op benchmarks.
# Usage: bash benchmarks/run_gpu.sh [pytest -k expression]   (outputs under $OUT, or ./gpu_out)
set -uo pipefail
out="${OUT:-$PWD/gpu_out}"; mkdir -p "$out"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
t0=$(date +%s)
python3 -m pip install --no-build-isolation --no-deps -e . > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
python3 -c "import fastgan, json; print(json.dumps(fastgan.build_info()))" | tee "$out/build_info.json"
python3 -m pytest tests -m cuda -q -x ${1:+-k "$1"} 2>&1 | tee "$out/cuda_tests.log" | tail -25
python3 -m fastgan.bench.dispatch cuda | tee "$out/dispatch.txt"
python3 -m fastgan.bench.ops --device cuda --json "$out/ops.json" | tee "$out/ops.md"
