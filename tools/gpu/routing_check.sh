#!/usr/bin/env bash
# On the GPU machine: the CUDA backend's auto routing at small batches against the kernels it chooses
# between (kFactoredForwardTf32Bf16MinBatch, kWeightGradWgmma*MinBatch in cuda_backend_options.h):
#   1. cuda_backend_test's factored-forward and wgmma weight-gradient tests;
#   2. tp-bench at BATCHES in every precision with the defaults, verified against the float64 CPU;
#   3. the same with --forward_kernel gemm and with --weight_grad_kernel mma / wgmma (timing only).
# Summary (one line per case: default and each alternative, ms) in $OUT/summary.txt.
#
#   OUT=$OUT tools/gpu/routing_check.sh DIR     # DIR: bin/{tp-bench,cuda_backend_test}, libs/
set -u
dir=$(cd "${1:?usage: routing_check.sh DIR (bin/, libs/)}" && pwd) || exit 1
OUT=${OUT:-/tmp/routing-check}
BATCHES=${BATCHES:-1,8,16,24,32,64}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$dir/libs:/usr/local/cuda/lib64
B=$dir/bin
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/summary.txt"
timeout 200 "$B/cuda_backend_test" --gtest_filter='*FactoredForward*:WgmmaWeightGrad*' > "$OUT/tests.txt" 2>&1
echo "tests: exit $?" | tee -a "$OUT/summary.txt"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]" "$OUT/tests.txt" | tee -a "$OUT/summary.txt"
run() {  # run NAME VERIFY_MAX_BATCH FLAGS...
  local name=$1 verify=$2; shift 2
  timeout 120 "$B/tp-bench" --backend cuda --batches "$BATCHES" --precisions fp32,tf32,bf16 --runs 30 \
    --verify_max_batch "$verify" --json "$OUT/$name.json" "$@" > "$OUT/$name.txt" 2>&1
  echo "tp-bench $name: exit $?" | tee -a "$OUT/summary.txt"
}
run auto 64
run gemm_forward 0 --forward_kernel gemm
run mma_wgrad 0 --weight_grad_kernel mma
run wgmma_wgrad 0 --weight_grad_kernel wgmma
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
out = sys.argv[1]
def load(name):
    try:
        rows = json.load(open(f"{out}/{name}.json"))
    except (OSError, ValueError):
        return {}
    rows = rows["results"] if isinstance(rows, dict) else rows
    return {(r["task"], r["precision"], r["batch"]): r["median_ms"] for r in rows}
names = ["auto", "gemm_forward", "mma_wgrad", "wgmma_wgrad"]
runs = {n: load(n) for n in names}
print("task precision batch " + " ".join(names) + "  (median ms; auto should be the smallest within noise)")
for key in sorted(runs["auto"]):
    cells = [f"{runs[n][key]:.4f}" if key in runs[n] else "-" for n in names]
    print(*key, *cells)
PY
