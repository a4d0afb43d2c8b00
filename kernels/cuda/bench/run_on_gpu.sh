#!/usr/bin/env bash
# One call on the GPU machine: GPU tests, compute-sanitizer memcheck on small cases, tp-bench.
# Expects the binaries, their libraries and the reference cases under DIR (bin/, libs/,
# reference/), made on the build machine (docs/BENCHMARKS.md).
#
#   kernels/cuda/bench/run_on_gpu.sh DIR
#
# Logs and bench.json go to ${OUT:-/tmp/tp-gpu-out}.
set -uo pipefail
CARRY=$(cd "${1:?usage: run_on_gpu.sh DIR (bin/, libs/, reference/)}" && pwd) || exit 1
OUT=${OUT:-/tmp/tp-gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$CARRY/libs:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export TPSERVE_REFERENCE_DIR=$CARRY/reference
BIN=$CARRY/bin
STEPS=${STEPS:-test,memcheck,bench}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
if [[ $STEPS == *test* ]]; then
  timeout ${TEST_TIMEOUT:-300} "$BIN/cuda_backend_test" --gtest_brief=1 ${TEST_FILTER:+--gtest_filter=$TEST_FILTER} \
    >"$OUT/test.log" 2>&1
  echo "cuda_backend_test exit $?"; grep -E "PASSED|FAILED|SKIPPED|Failure|error|Which is|rel|forward|backward|loss" "$OUT/test.log" | head -40
fi
if [[ $STEPS == *memcheck* ]]; then
  timeout ${MEMCHECK_TIMEOUT:-200} /usr/local/cuda/bin/compute-sanitizer --tool memcheck --leak-check full \
    "$BIN/cuda_backend_test" --gtest_brief=1 \
    --gtest_filter='CudaBackendTest.Forward_MatchesE3nnReferenceOutputs:CudaBackendTest.SmallFastPath_MatchesCpuReference' \
    >"$OUT/memcheck.log" 2>&1
  echo "memcheck exit $?"; tail -4 "$OUT/memcheck.log"
  timeout ${MEMCHECK_TIMEOUT:-200} /usr/local/cuda/bin/compute-sanitizer --tool racecheck \
    "$BIN/cuda_backend_test" --gtest_brief=1 --gtest_filter='CudaBackendTest.SmallFastPath_MatchesCpuReference' \
    >"$OUT/racecheck.log" 2>&1
  echo "racecheck exit $?"; tail -3 "$OUT/racecheck.log"
fi
if [[ $STEPS == *bench* ]]; then
  timeout ${BENCH_TIMEOUT:-300} "$BIN/tp-bench" --json "$OUT/bench.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
  echo "tp-bench exit $?"
fi
