#!/usr/bin/env bash
# On the GPU machine, in one device call: every CUDA check of a build, most important first, each
# step only while BUDGET seconds last: cuda_backend_test, the multi-device tests, the QM9 network
# (tools/gpu/qm9_gpu.sh), the server p50 A/B against BASE (tools/gpu/server_ab.sh), tp-bench
# --qm9_edge, one GPU with two workers (tools/gpu/multigpu.sh one-gpu), sanitizers on the per-sample
# tests. Everything lands in $OUT/results.tar.xz (one file: the device returns only a few); the
# summary is printed.
#
#   tools/gpu/session_checks.sh NEW BASE
#
# NEW: bin/{tpserve,tp-load,tpctl,cuda_backend_test,cuda_multi_device_test,cuda_multi_device_core_test,
# qm9_cuda_network_test,qm9-bench,tp-bench} + libs/ + reference/ (folder or tarball, tools/gpu/bundle.sh);
# BASE: bin/{tpserve,tp-load} + libs/ of the build to compare the server with. Environment: OUT, BUDGET (380),
# AB_ROUNDS (4), AB_CALLS (1000).
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/gpu/bundle.sh
. "$here/bundle.sh"
use_bundle "${1:?usage: session_checks.sh NEW BASE}" new || exit 1
use_bundle "${2:?usage: session_checks.sh NEW BASE}" base || exit 1
OUT=${OUT:-/tmp/session-checks}
N=/tmp/tp-new B=/tmp/tp-base R=$OUT/r
mkdir -p $R
deadline=$(( $(date +%s) + ${BUDGET:-380} ))
left() { echo $(( deadline - $(date +%s) )); }
step() { local need=$1; shift; if [ "$(left)" -lt "$need" ]; then echo "SKIPPED (time): $*" | tee -a $R/summary.txt; return 1; fi; echo "== $* ($(left) s left)" | tee -a $R/summary.txt; }
export TPSERVE_REFERENCE_DIR=$N/reference
L="env LD_LIBRARY_PATH=$N/libs:/usr/local/cuda/lib64"
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv | tee -a $R/summary.txt
if step 60 cuda_backend_test; then
  timeout 120 $L $N/bin/cuda_backend_test --gtest_brief=1 > $R/cuda_backend_test.txt 2>&1; echo "exit $?" | tee -a $R/summary.txt
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure" $R/cuda_backend_test.txt | head -30 | tee -a $R/summary.txt
fi
if step 30 cuda_multi_device tests; then
  for t in cuda_multi_device_test cuda_multi_device_core_test; do
    timeout 60 $L $N/bin/$t > $R/$t.txt 2>&1; echo "$t exit $?" | tee -a $R/summary.txt
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]" $R/$t.txt | tee -a $R/summary.txt
  done
fi
if step 60 qm9_gpu.sh; then
  OUT=$R/qm9gpu timeout $(( $(left) - 5 )) bash $here/qm9_gpu.sh $N > $R/qm9_gpu_stdout.txt 2>&1; echo "exit $?" | tee -a $R/summary.txt
  grep -vE "^\s*$" $R/qm9gpu/summary.txt | grep -E "exit|PASSED|FAILED|error|train step|predict|floor|fp32|tf32|memcheck|ERROR" | head -60 >> $R/summary.txt
fi
if step 60 server_ab; then
  OUT=$R/ab ROUNDS=${AB_ROUNDS:-4} CALLS=${AB_CALLS:-1000} CONCURRENCY=1 timeout $(( $(left) - 3 )) bash $here/server_ab.sh $B $N > $R/server_ab.txt 2>&1; echo "exit $?" | tee -a $R/summary.txt
  tail -15 $R/server_ab.txt | tee -a $R/summary.txt
fi
if step 40 tp-bench qm9_edge; then
  timeout 60 $L $N/bin/tp-bench --qm9_edge --qm9_lmax 1,2 --qm9_mul 128,256,512 --qm9_edges 950 --runs 30 > $R/qm9_edge.txt 2>&1; echo "exit $?" | tee -a $R/summary.txt
  grep -E "edge_|err|FAIL" $R/qm9_edge.txt | head -30 | tee -a $R/summary.txt
fi
if step 70 multigpu one-gpu; then
  OUT=$R/mg DURATION=3 timeout 100 bash $here/multigpu.sh $N one-gpu > $R/multigpu.txt 2>&1; echo "exit $?" | tee -a $R/summary.txt
  tail -25 $R/multigpu.txt | tee -a $R/summary.txt
fi
if step 45 sanitizers on the per-sample tests; then
  for tool in memcheck racecheck; do
    timeout $(( $(left) / 2 )) $L compute-sanitizer --tool $tool --error-exitcode 9 $N/bin/cuda_backend_test \
      --gtest_filter='*Qm9EdgeShapes_Mul8*:*UvuAndUvw*:*PerSampleUvw*:*EdgeGather*' > $R/sanitize_$tool.txt 2>&1
    echo "$tool exit $?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $R/sanitize_$tool.txt | tail -1)" | tee -a $R/summary.txt
  done
fi
echo "done, $(left) s left" | tee -a $R/summary.txt
tar -C $OUT -cJf $OUT/results.tar.xz r && rm -rf $R
