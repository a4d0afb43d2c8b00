#!/usr/bin/env bash
# On the GPU machine: the per-sample / 'uvu' CUDA kernels (issue 19, QM9 edge TP) of a bundled build:
# their tests, the same tests under compute-sanitizer memcheck and racecheck, and tp-bench's QM9
# edge cases (E edges, lmax 1/2, mul 128/256/512: time, bytes moved, bandwidth floor).
#
#   tools/gpu/qm9_kernels.sh BUNDLE_DIR
#
# BUNDLE_DIR holds bin/ (cuda_backend_test, tp-bench) and libs/ (../shared/tools/bundle-runtime-libs);
# BUNDLE_DIR/reference the e3nn reference cases (only the reference-case tests read them).
# Environment: OUT (results; default /tmp/qm9-kernels), RUNS (default 100), EDGES (default 950).
set -u
dir=${1:?usage: qm9_kernels.sh BUNDLE_DIR}
OUT=${OUT:-/tmp/qm9-kernels}
RUNS=${RUNS:-100}
EDGES=${EDGES:-950}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64"
export TPSERVE_REFERENCE_DIR="$dir/reference"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

# The new tests, then the whole CUDA suite (the per-sample branch touches Prepare and the dispatch).
new_tests='*PerSample*:*UvuAndUvw*:*Qm9*:*EdgeGather*'
timeout 600 "$dir/bin/cuda_backend_test" --gtest_filter="$new_tests" > "$OUT/new_tests.txt" 2>&1
echo "cuda_backend_test (new tests): exit $?"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure|error" "$OUT/new_tests.txt" | head -40
timeout 900 "$dir/bin/cuda_backend_test" --gtest_brief=1 > "$OUT/all_tests.txt" 2>&1
echo "cuda_backend_test (all): exit $?"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]" "$OUT/all_tests.txt" | head -20

# Sanitizers on the small cases (mul 8, mixed plans; the mul-128 cases take too long under them).
small='*Qm9EdgeShapes_Mul8*:*UvuAndUvw*:*PerSampleUvw*:*EdgeGather*'
for tool in memcheck racecheck; do
  timeout 900 compute-sanitizer --tool $tool --error-exitcode 9 "$dir/bin/cuda_backend_test" \
    --gtest_filter="$small" > "$OUT/sanitize_$tool.txt" 2>&1
  echo "compute-sanitizer $tool: exit $? ($(grep -c "ERROR SUMMARY: 0 errors" "$OUT/sanitize_$tool.txt") clean summaries)"
  grep -E "ERROR SUMMARY|^\[  (PASSED|FAILED) " "$OUT/sanitize_$tool.txt" | head -5
done

timeout 600 "$dir/bin/tp-bench" --qm9_edge --qm9_lmax 1,2 --qm9_mul 128,256,512 --qm9_edges "$EDGES" \
  --runs "$RUNS" --json "$OUT/qm9_edge.json" > "$OUT/qm9_edge.txt" 2>&1
echo "tp-bench --qm9_edge: exit $?"
cat "$OUT/qm9_edge.txt"
