#!/usr/bin/env bash
# On the GPU machine: the weight gradient on wgmma (tp-bench / tpserve option weight_grad_kernel=wgmma)
# against the mma.sync kernel (weight_grad_kernel=mma, the default), in one call:
#   1. cuda_backend_test: the wgmma weight-gradient tests first (each dW check prints its error, and
#      per path the error and first bad element when it fails), then the rest of the suite;
#   2. tp-bench of the seed task (dw_sum_tanh = LossGradient sum tanh, grad_weight only), the forward
#      and Backward with grad_weight only (backward_dw) at BATCHES in fp32 and tf32, the two kernels
#      alternated, ROUNDS rounds (round 1 verifies every batch <= 1024 against the float64 CPU; later
#      rounds only batch 64, and larger batches against the CUDA fp32 result);
#   3. optional: NCU=1 an ncu profile of both kernels (seed task, batch 64, fp32 and tf32);
#      SANITIZE=1 compute-sanitizer memcheck and racecheck on the small-plan test.
#
#   OUT=$OUT tools/gpu/wgrad_check.sh DIR
#
# DIR holds bin/ (tp-bench, cuda_backend_test of an sm_90a build), libs/ (from
# ../shared/tools/bundle-runtime-libs) and reference/ (the e3nn reference cases), as kernel_ab.sh's.
# Environment: OUT (default /tmp/wgrad-check), BATCHES (64,256,1024,4096), ROUNDS (2), RUNS (40),
# TESTS=wgmma (only the wgmma tests; default: all of cuda_backend_test).
set -u
dir=${1:?usage: wgrad_check.sh DIR}
OUT=${OUT:-/tmp/wgrad-check}
BATCHES=${BATCHES:-64,256,1024,4096}
ROUNDS=${ROUNDS:-2}
RUNS=${RUNS:-40}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
export TPSERVE_REFERENCE_DIR="$dir/reference"

run_in() {  # run_in SECONDS PROGRAM ARGS...: a program of DIR with DIR's libraries, time-limited
  local seconds=$1 prog=$2; shift 2
  timeout "$seconds" env LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64" "$dir/bin/$prog" "$@"
}
summarize_test() {  # the verdict lines, then every failure with its message (per-path report included)
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|usable|NOT usable" "$1" | head -30
  grep -E -A14 "Failure$" "$1" | head -120
}

t0=$(date +%s)
run_in 240 cuda_backend_test --gtest_filter='WgmmaWeightGrad*' > "$OUT/test_wgmma.txt" 2>&1
echo "cuda_backend_test (wgmma weight gradient): exit $? in $(( $(date +%s) - t0 )) s" | tee "$OUT/summary.txt"
summarize_test "$OUT/test_wgmma.txt" | tee -a "$OUT/summary.txt"
grep -E "^  batch " "$OUT/test_wgmma.txt" | tee -a "$OUT/summary.txt"
if [ "${TESTS:-all}" != wgmma ]; then
  t0=$(date +%s)
  run_in 300 cuda_backend_test --gtest_brief=1 --gtest_filter='-WgmmaWeightGrad*' > "$OUT/test_rest.txt" 2>&1
  echo "cuda_backend_test (the rest): exit $? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
  summarize_test "$OUT/test_rest.txt" | tee -a "$OUT/summary.txt"
fi
if [ "${SANITIZE:-0}" = 1 ]; then
  for tool in memcheck racecheck; do
    LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64" timeout 300 compute-sanitizer --tool $tool --error-exitcode 9 \
      "$dir/bin/cuda_backend_test" --gtest_filter='WgmmaWeightGradTest.SmallPlan*' > "$OUT/sanitize_$tool.txt" 2>&1
    echo "compute-sanitizer $tool: exit $? ($(grep -c "ERROR SUMMARY: 0 errors" "$OUT/sanitize_$tool.txt") clean summaries)" \
      | tee -a "$OUT/summary.txt"
  done
fi

for round in $(seq "$ROUNDS"); do
  verify=1024; [ "$round" = 1 ] || verify=64
  for k in wgmma mma; do
    t0=$(date +%s)
    run_in 150 tp-bench --weight_grad_kernel $k --backward --batches "$BATCHES" --precisions fp32,tf32 \
      --runs "$RUNS" --verify_max_batch $verify --json "$OUT/bench_${k}_$round.json" > "$OUT/bench_${k}_$round.txt" 2>&1
    echo "tp-bench $k round $round: exit $? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
    grep -E "FAILED|dW by path|^    path" "$OUT/bench_${k}_$round.txt" | head -40 | tee -a "$OUT/summary.txt"
  done
done
# One table: task, precision, batch, then median (min) ms per kernel and round, and wgmma / mma.
python3 - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt"
import glob, json, os, sys
out = sys.argv[1]
rows = {}
for path in sorted(glob.glob(os.path.join(out, "bench_*_*.json"))):
    name = os.path.basename(path)[len("bench_"):-len(".json")]
    try:
        records = json.load(open(path))["results"]
    except Exception as e:
        print(f"{path}: {e}"); continue
    for r in records:
        if r.get("backend") != "cuda":
            continue
        rows.setdefault((r["task"], r["precision"], r["batch"]), {})[name] = r
cols = sorted({c for v in rows.values() for c in v})
print("task precision batch | " + " | ".join(cols) + " | wgmma/mma (mean of medians) | floor | rel_err wgmma_1 / mma_1")
for key in sorted(rows):
    v = rows[key]
    cells = [f"{v[c]['median_ms']:.4f} ({v[c]['min_ms']:.4f})" if c in v else "-" for c in cols]
    med = lambda k: [v[c]["median_ms"] for c in cols if c.startswith(k + "_") and c in v]
    ratio = sum(med("wgmma")) / len(med("wgmma")) / (sum(med("mma")) / len(med("mma"))) if med("wgmma") and med("mma") else float("nan")
    any_v = next(iter(v.values()))
    errs = " / ".join(f"{v[c]['rel_error']}" if c in v else "-" for c in ("wgmma_1", "mma_1"))
    print(f"{key[0]} {key[1]} {key[2]} | " + " | ".join(cells) + f" | {ratio:.3f} | {any_v.get('floor_ms')} | {errs}")
EOF

if [ "${NCU:-0}" = 1 ]; then
  for k in wgmma mma; do
    LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64" timeout 150 ncu --clock-control none -k regex:WeightGrad \
      --launch-skip 2 --launch-count 8 --section SpeedOfLight --section Occupancy --section WarpStateStats \
      --section LaunchStats --section MemoryWorkloadAnalysis "$dir/bin/tp-bench" --weight_grad_kernel $k \
      --batches 64 --precisions fp32,tf32 --runs 3 --warmup 1 --verify_max_batch 0 > "$OUT/ncu_$k.txt" 2>&1
    echo "ncu $k: exit $?" | tee -a "$OUT/summary.txt"
  done
fi
