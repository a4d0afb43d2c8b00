#!/usr/bin/env bash
# On the GPU machine: compute-sanitizer memcheck and racecheck over the CUDA backend's tests, then an
# ncu summary per kernel of the seed-shape tasks (forward, backward, d/dw sum tanh) at the given
# batches and precisions: where each case's time goes.
#
#   tools/gpu/kernels_profile.sh DIR
#
# DIR holds bin/ (tp-bench, cuda_backend_test), libs/ (../shared/tools/bundle-runtime-libs) and
# reference/ (the e3nn reference cases). Environment: OUT (results; default /tmp/kernels-profile),
# BATCHES (default 64,1024), PRECISIONS (default fp32,tf32), SANITIZE_FILTER (gtest filter for
# racecheck, which is slow; memcheck runs every test), RACECHECK_SECONDS, SKIP_MEMCHECK=1,
# SKIP_SANITIZE=1 (both), SKIP_NCU=1.
set -u
dir=${1:?usage: kernels_profile.sh DIR}
OUT=${OUT:-/tmp/kernels-profile}
BATCHES=${BATCHES:-64,1024}
PRECISIONS=${PRECISIONS:-fp32,tf32}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64"
export TPSERVE_REFERENCE_DIR="$dir/reference"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1

if [ "${SKIP_SANITIZE:-0}" != 1 ]; then
  [ "${SKIP_MEMCHECK:-0}" = 1 ] || timeout 280 compute-sanitizer --tool memcheck --error-exitcode 9 "$dir/bin/cuda_backend_test" --gtest_brief=1 \
    > "$OUT/sanitize_memcheck.txt" 2>&1
  [ "${SKIP_MEMCHECK:-0}" = 1 ] || echo "memcheck (every test): exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/sanitize_memcheck.txt" | tail -1)"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$OUT/sanitize_memcheck.txt" 2>/dev/null
  timeout ${RACECHECK_SECONDS:-250} compute-sanitizer --tool racecheck --error-exitcode 9 "$dir/bin/cuda_backend_test" --gtest_brief=1 \
    --gtest_filter="${SANITIZE_FILTER:-*OnReferenceCaseIrreps*:*SmallFastPath*}" \
    > "$OUT/sanitize_racecheck.txt" 2>&1
  echo "racecheck (${SANITIZE_FILTER:-default filter}): exit $?; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitize_racecheck.txt" | tail -1)"
fi

if [ "${SKIP_NCU:-0}" != 1 ]; then
  IFS=, read -r -a batches <<< "$BATCHES"
  IFS=, read -r -a precisions <<< "$PRECISIONS"
  for b in "${batches[@]}"; do
    for p in "${precisions[@]}"; do
      # One timed run of each task after one warm-up: every kernel of forward, backward and the seed task.
      timeout 150 ncu --clock-control none --section SpeedOfLight --print-summary per-kernel \
        "$dir/bin/tp-bench" --batches "$b" --precisions "$p" --backend cuda --runs 1 --warmup 1 --verify_max_batch 0 \
        > "$OUT/ncu_${p}_b$b.txt" 2>&1
      echo "ncu $p b=$b: exit $?"
    done
  done
  # Kernel name, launches, mean duration and the throughput lines of each summary.
  grep -hE "^  [A-Za-z_].*\(|Duration|Memory Throughput|Compute \(SM\) Throughput|^==PROF== Disconnected" \
    "$OUT"/ncu_*.txt > "$OUT/ncu_summary.txt" 2>/dev/null
fi
