#!/usr/bin/env bash
# On the GPU machine: the QM9 network on CUDA (nn/cuda/, issue 19 items 1 and 5). Runs
# qm9_cuda_network_test (the CUDA network against the CPU fp64 network), then qm9-bench at the four
# shapes in fp32 (per-species FCTPs), the dense FCTPs at two shapes, tf32 at all four, then
# compute-sanitizer memcheck on the small test. Under 400 s.
#
#   tools/gpu/qm9_gpu.sh BUNDLE_DIR
#
# BUNDLE_DIR holds bin/ (qm9_cuda_network_test, qm9-bench) and libs/ (../shared/tools/bundle-runtime-libs).
# Results in $OUT (default /tmp/qm9-gpu): summary.txt (everything printed), qm9_bench_fp32.json,
# qm9_bench_2x512_fp32.json, qm9_bench_dense_fp32.json, qm9_bench_tf32.json.
set -u
dir=${1:?usage: qm9_gpu.sh BUNDLE_DIR}
OUT=${OUT:-/tmp/qm9-gpu}
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: > "$summary"
log() { echo "$@" | tee -a "$summary"; }
run_in() {  # run_in SECONDS PROGRAM ARGS...
  local seconds=$1 prog=$2; shift 2
  timeout "$seconds" env LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64" "$dir/bin/$prog" "$@"
}
start=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv 2>&1 | tee -a "$summary"

log "== qm9_cuda_network_test"
run_in 90 qm9_cuda_network_test > "$OUT/test.txt" 2>&1
log "qm9_cuda_network_test: exit $?"
grep -E "relative error|^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure|Expected|Which is|error" "$OUT/test.txt" | head -40 | tee -a "$summary"
cat "$OUT/test.txt" >> "$summary.full" ; rm -f "$OUT/test.txt"

log "== qm9-bench fp32 (1x128, 1x256, 2x128)"
run_in 100 qm9-bench --shapes 1x128,1x256,2x128 --iters 30 --warmup 5 --json "$OUT/qm9_bench_fp32.json" 2>&1 | tee -a "$summary"
log "exit ${PIPESTATUS[0]}"

log "== qm9-bench fp32 (2x512)"
run_in 100 qm9-bench --shapes 2x512 --iters 30 --warmup 3 --json "$OUT/qm9_bench_2x512_fp32.json" 2>&1 | tee -a "$summary"
log "exit ${PIPESTATUS[0]}"

log "== qm9-bench fp32, dense FCTPs through the CUDA backend (1x128, 2x128), for comparison"
run_in 60 qm9-bench --fctp dense --shapes 1x128,2x128 --iters 30 --warmup 3 --json "$OUT/qm9_bench_dense_fp32.json" 2>&1 | tee -a "$summary"
log "exit ${PIPESTATUS[0]}"

elapsed=$(( $(date +%s) - start ))
if [ "$elapsed" -lt 260 ]; then
  log "== qm9-bench tf32 (all four; ${elapsed}s used so far)"
  run_in $(( 330 - elapsed )) qm9-bench --precision tf32 --iters 30 --warmup 3 --json "$OUT/qm9_bench_tf32.json" 2>&1 | tee -a "$summary"
  log "exit ${PIPESTATUS[0]}"
else
  log "== tf32 skipped (${elapsed}s used)"
fi

elapsed=$(( $(date +%s) - start ))
if [ "$elapsed" -lt 320 ] && command -v compute-sanitizer > /dev/null; then
  log "== compute-sanitizer memcheck (lmax 1 case; ${elapsed}s used so far)"
  LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64" timeout $(( 385 - elapsed )) compute-sanitizer --tool memcheck \
    --error-exitcode 9 "$dir/bin/qm9_cuda_network_test" --gtest_filter='LmaxAndFctp/*/0:LmaxAndFctp/*/1' > "$OUT/memcheck.txt" 2>&1
  log "memcheck: exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/memcheck.txt") clean summaries)"
  grep -E "Invalid|ERROR SUMMARY|at 0x|by thread" "$OUT/memcheck.txt" | head -12 | tee -a "$summary"
  rm -f "$OUT/memcheck.txt"
fi
if [ -f "$summary.full" ]; then
  { echo; echo "== full test output"; cat "$summary.full"; } >> "$summary"
  rm -f "$summary.full"
fi
log "total $(( $(date +%s) - start )) s"
