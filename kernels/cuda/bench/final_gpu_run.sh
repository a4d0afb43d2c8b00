#!/usr/bin/env bash
# The measurement behind docs/BENCHMARKS.md "CUDA backend (H100)": GPU tests, memcheck and racecheck,
# the seed shape at batches 64/1024/16384 in every precision (CUDA and, at batch 64, the CPU backend),
# then smaller irreps. Run on the GPU machine from the repository root:
#
#   kernels/cuda/bench/final_gpu_run.sh DIR     # DIR: bin/, libs/, reference/
set -uo pipefail
dir=$(cd "${1:?usage: final_gpu_run.sh DIR (bin/, libs/, reference/)}" && pwd) || exit 1
OUT=${OUT:-/tmp/tp-gpu-out}
STEPS=test,memcheck,bench TEST_TIMEOUT=150 MEMCHECK_TIMEOUT=150 BENCH_TIMEOUT=330 \
  BENCH_ARGS="--runs 100 --warmup 10 --backend both --cpu_max_batch 64" kernels/cuda/bench/run_on_gpu.sh "$dir"
export LD_LIBRARY_PATH=$dir/libs:/usr/local/cuda/lib64
for irreps in "8x0e+8x1e+8x2e" "32x0e+32x1e+32x2e" "64x0e+64x1o+64x2e"; do
  name=$(echo "$irreps" | tr -c 'a-z0-9\n' '_')
  timeout 150 "$dir/bin/tp-bench" --irreps "$irreps" --batches 64,1024 --runs 100 --warmup 10 \
    --json "$OUT/small_$name.json" > "$OUT/small_$name.log" 2>&1
  echo "$irreps: exit $?"; grep -E "cuda  tf32|FAILED" "$OUT/small_$name.log" | cut -c1-110
done
