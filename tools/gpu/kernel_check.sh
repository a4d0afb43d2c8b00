#!/usr/bin/env bash
# On the GPU machine: the CUDA backend's tests, then tp-bench of the factored forward on wgmma
# (default on sm_90) and on mma.sync (tp-bench --forward_kernel factored-mma), twice each,
# alternating. Results under $OUT. NCU=1 adds an ncu profile of each kernel at batch 64 fp32.
#
#   OUT=/tmp/kernel-check tools/gpu/kernel_check.sh DIR     # DIR: bin/, libs/, reference/
set -u
dir=$(cd "${1:?usage: kernel_check.sh DIR (bin/, libs/, reference/)}" && pwd) || exit 1
OUT=${OUT:-/tmp/kernel-check}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$dir/libs:/usr/local/cuda/lib64
export TPSERVE_REFERENCE_DIR=$dir/reference
B=$dir/bin
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv > $OUT/gpu.txt 2>&1
timeout 300 $B/cuda_backend_test --gtest_filter="${FILTER:-*}" > $OUT/test.txt 2>&1
echo "test rc=$?" | tee -a $OUT/summary.txt
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure|error" $OUT/test.txt | head -20 | tee -a $OUT/summary.txt
if [ -n "${SWAP:-}" ]; then
  TPSERVE_WGMMA_SWAP_OFFSETS=1 timeout 200 $B/cuda_backend_test --gtest_filter='*Factored*' > $OUT/test_swap.txt 2>&1
  echo "swapped offsets: rc=$?" | tee -a $OUT/summary.txt
fi
for round in ${ROUNDS:-1 2}; do
  for k in wgmma mma; do
    kflag=(); [ $k = mma ] && kflag=(--forward_kernel factored-mma)
    timeout 200 $B/tp-bench "${kflag[@]}" --batches ${BATCHES:-64,256,1024} --precisions fp32,tf32 --runs 50 \
      --roundtrip > $OUT/bench_${k}_$round.txt 2>&1
    echo "bench $k $round rc=$?" >> $OUT/summary.txt
  done
done
if [ -n "${NCU:-}" ]; then
  for k in wgmma mma; do
    kflag=(); [ $k = mma ] && kflag=(--forward_kernel factored-mma)
    timeout 150 ncu --clock-control none -k regex:Factored\|Wgmma --launch-skip 3 --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
      $B/tp-bench "${kflag[@]}" --batches 64 --precisions fp32 --runs 5 --warmup 2 > $OUT/ncu_$k.txt 2>&1
  done
fi
if [ -n "${SWEEP:-}" ]; then  # the work split of the wgmma kernel: blocks per SM
  for n in $SWEEP; do
    timeout 100 $B/tp-bench --factored_blocks_per_sm $n --batches ${BATCHES:-64,256,1024} --precisions fp32,tf32 \
      --runs 50 > $OUT/sweep_$n.txt 2>&1
  done
  grep -H "^forward" $OUT/sweep_*.txt > $OUT/sweep.txt
fi
