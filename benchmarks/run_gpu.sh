#!/usr/bin/env bash
# On a GPU machine: build fastgan, then run the parts named (default: tests ops train).
#   tests    the CUDA tests (pytest -m cuda)
#   profile  kernels per training step (fastgan.bench.profile)
#   ops      python -m fastgan.bench.ops --device cuda
#   train    python -m fastgan.bench.train (all models, batches and implementations)
#   trainq   the same without torch.compile (quicker)
#   targets  only what issue 7's targets name: mlp, mlp-bn, dcgan at batch 64 and 1024, expert vs
#            graph, float32; then dcgan at 1024 under bf16 (a few minutes: the first call to make)
#   bf16     the training step under --precision bf16 (expert, fastgan, graph; DCGAN b1024 target)
#   nhwc     the DCGAN step with --channels-last, float32 and bf16 (expert, fastgan, graph)
#   blas     the MLP steps with every matrix product through cuBLASLt (--blas cublaslt)
#   gemm     each matrix product of the MLP steps on its own, cuBLAS vs cuBLASLt (fastgan.bench.gemm)
#   shapes   the MLP and DCGAN steps' matrix products and convolutions by input shape (profile --shapes)
#   epoch    one 60,000-image epoch with data loading, tutorial loop vs fastgan
#   opsgraph the same, each op replayed from a CUDA graph (kernel time; the % copy BW column)
#   quality  fastgan bench quality: classifier FID vs training time, tutorial recipe vs fastgan,
#            3 seeds, 5,000 steps (mnist-5k; MNIST_DIR=folder of IDX files for full MNIST);
#            quality-mlp / quality-dcgan: one model each
# Outputs under $OUT (or ./gpu_out); each part's log lines (stderr too) go to its .log file.
# The device tool stops a command after 10 minutes and a killed part loses its JSON: give one
# part per call (the build is kept between calls), e.g. "tests", then "trainq", then "epoch".
set -uo pipefail
out="${OUT:-$PWD/gpu_out}"; mkdir -p "$out"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
t0=$(date +%s)
python3 -m pip install --no-build-isolation --no-deps -e . > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
python3 -c "import fastgan, json; print(json.dumps(fastgan.build_info()))" | tee "$out/build_info.json"
for part in "${@:-tests ops train}"; do
  for p in $part; do
    case "$p" in
      tests) python3 -m pytest tests -m cuda -q -p no:cacheprovider 2>&1 | tee "$out/cuda_tests.log" | tail -30 ;;
      profile) for m in mlp mlp-bn dcgan; do python3 -m fastgan.bench.profile --model "$m" --top 12; done 2>&1 | tee "$out/profile.txt"
               python3 -m fastgan.bench.profile --model mlp --impl tutorial --top 5 2>&1 | tee -a "$out/profile.txt" ;;
      ops) python3 -m fastgan.bench.dispatch cuda 2>&1 | tee "$out/dispatch.txt"
           python3 -m fastgan.bench.ops --device cuda --json "$out/ops.json" --markdown "$out/ops.md" 2>&1 \
             | tee "$out/ops.log" ;;
      opsgraph) python3 -m fastgan.bench.ops --device cuda --graph --impl eager --impl fastgan \
                  --json "$out/ops_graph.json" --markdown "$out/ops_graph.md" 2>&1 | tee "$out/ops_graph.log" ;;
      train) python3 -m fastgan.bench.train --json "$out/train_all.json" --markdown "$out/train_all.md" 2>&1 \
               | tee "$out/train_all.log" ;;
      trainq) python3 -m fastgan.bench.train --impl tutorial --impl expert --impl fastgan --impl graph \
                --json "$out/train.json" --markdown "$out/train.md" 2>&1 | tee "$out/train.log" ;;
      targets) python3 -m fastgan.bench.train --model mlp --model mlp-bn --model dcgan --batch-size 64 \
                 --batch-size 1024 --impl expert --impl graph --json "$out/targets.json" \
                 --markdown "$out/targets.md" 2>&1 | tee "$out/targets.log"
               python3 -m fastgan.bench.train --model dcgan --batch-size 1024 --impl expert --impl graph \
                 --precision bf16 --json "$out/targets_bf16.json" --markdown "$out/targets_bf16.md" 2>&1 \
                 | tee "$out/targets_bf16.log" ;;
      bf16) python3 -m fastgan.bench.train --impl expert --impl fastgan --impl graph --precision bf16 \
              --json "$out/train_bf16.json" --markdown "$out/train_bf16.md" 2>&1 | tee "$out/train_bf16.log" ;;
      nhwc) for prec in fp32 bf16; do
              python3 -m fastgan.bench.train --model dcgan --impl expert --impl fastgan --impl graph \
                --channels-last --precision "$prec" --json "$out/train_nhwc_$prec.json" \
                --markdown "$out/train_nhwc_$prec.md" 2>&1 | tee "$out/train_nhwc_$prec.log"
            done ;;
      blas) python3 -m fastgan.bench.train --model mlp --model mlp-bn --impl tutorial --impl expert --impl fastgan \
              --impl graph --blas cublaslt --json "$out/train_cublaslt.json" --markdown "$out/train_cublaslt.md" \
              2>&1 | tee "$out/train_cublaslt.log" ;;
      gemm) python3 -m fastgan.bench.gemm --model mlp --model mlp-bn --json "$out/gemm.json" --markdown "$out/gemm.md" \
              2>&1 | tee "$out/gemm.log" ;;
      shapes) for m in mlp dcgan; do python3 -m fastgan.bench.profile --model "$m" --shapes --top 30; done \
                2>&1 | tee "$out/profile_shapes.txt" ;;
      epoch) python3 -m fastgan.bench.train --epoch --model mlp --model mlp-bn --model dcgan \
               ${MNIST_DIR:+--data-dir "$MNIST_DIR"} --json "$out/epoch.json" --markdown "$out/epoch.md" 2>&1 \
               | tee "$out/epoch.log" ;;
      quality|quality-mlp|quality-dcgan)
        models=""; [ "$p" = quality ] || models="--model ${p#quality-}"
        # shellcheck disable=SC2086
        python3 -m fastgan.bench.quality $models --steps 5000 --eval-every 1000 \
          ${MNIST_DIR:+--dataset mnist --data-dir "$MNIST_DIR"} --json "$out/$p.json" --markdown "$out/$p.md" 2>&1 \
          | tee "$out/$p.log" ;;
      *) echo "unknown part $p" ;;
    esac
  done
done
