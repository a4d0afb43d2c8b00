#!/usr/bin/env bash
# On the GPU machine: the QM9 network on CUDA (nn/cuda/, issue 19 items 1 and 5). Runs
# qm9_cuda_network_test (the CUDA network against the CPU fp64 network), then qm9-bench at the four
# shapes on the batch shape (27 molecules, 486 atoms, 918 directed edges): fp32 with the
# per-species FCTPs launched and as a CUDA graph, the dense FCTPs launched and as a graph, tf32 as a
# graph; then compute-sanitizer memcheck on two small test cases if time is left. Under 120 s.
#
#   tools/gpu/qm9_gpu.sh BUNDLE_DIR
#
# BUNDLE_DIR holds bin/ (qm9_cuda_network_test, qm9-bench) and libs/ (../shared/tools/bundle-runtime-libs).
# Results in $OUT (default /tmp/qm9-gpu): summary.txt (everything printed) and five JSON files.
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
run_in 25 qm9_cuda_network_test > "$OUT/test.txt" 2>&1
log "qm9_cuda_network_test: exit $?"
grep -E "relative error|SGD step|^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure|Expected|Which is|error" "$OUT/test.txt" | head -40 | tee -a "$summary"
mv "$OUT/test.txt" "/tmp/qm9_test_full.txt"

bench() {  # bench SECONDS JSON_NAME TITLE ARGS...
  local seconds=$1 name=$2 title=$3; shift 3
  log "== qm9-bench $title ($(( $(date +%s) - start )) s used so far)"
  run_in "$seconds" qm9-bench --iters 30 --warmup 3 --json "$OUT/$name.json" "$@" 2>&1 | tee -a "$summary"
  log "exit ${PIPESTATUS[0]}"
}
bench 15 species_fp32 "fp32, per-species FCTPs, launched" --fctp species
bench 15 species_graph_fp32 "fp32, per-species FCTPs, CUDA graph" --fctp species --graph
bench 20 dense_fp32 "fp32, dense FCTPs, launched" --fctp dense
bench 20 dense_graph_fp32 "fp32, dense FCTPs, CUDA graph" --fctp dense --graph
bench 15 species_graph_tf32 "tf32, per-species FCTPs, CUDA graph" --fctp species --graph --precision tf32

elapsed=$(( $(date +%s) - start ))
if [ "$elapsed" -lt 95 ] && command -v compute-sanitizer > /dev/null; then
  log "== compute-sanitizer memcheck (lmax 1, both FCTP modes; ${elapsed}s used so far)"
  LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64" timeout $(( 115 - elapsed )) compute-sanitizer --tool memcheck \
    --error-exitcode 9 "$dir/bin/qm9_cuda_network_test" --gtest_filter='LmaxAndFctp/*/0:LmaxAndFctp/*/1' \
    > /tmp/qm9_memcheck.txt 2>&1
  log "memcheck: exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' /tmp/qm9_memcheck.txt) clean summaries)"
  grep -E "Invalid|ERROR SUMMARY|at 0x|by thread" /tmp/qm9_memcheck.txt | head -12 | tee -a "$summary"
fi
{ echo; echo "== full test output"; cat /tmp/qm9_test_full.txt; } >> "$summary"
log "total $(( $(date +%s) - start )) s"
