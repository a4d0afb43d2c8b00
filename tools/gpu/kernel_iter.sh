# One kernel iteration on the GPU machine: tp-bench of DIR's build (and older kernels with OLD=...),
# its tests with TEST=1, an ncu profile with NCU=PRECISION.
#   OUT=/tmp/iter tools/gpu/kernel_iter.sh DIR     # DIR: bin/, libs/, reference/
dir=$(cd "${1:?usage: kernel_iter.sh DIR (bin/, libs/, reference/)}" && pwd) || exit 1
OUT=${OUT:-/tmp/kernel-iter}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=$dir/libs:/usr/local/cuda/lib64; export TPSERVE_REFERENCE_DIR=$dir/reference; B=$dir/bin
timeout 100 $B/tp-bench --batches 64,1024 --precisions fp32,tf32 --runs 50 --verify_max_batch 1024 --json $OUT/new.json > $OUT/bench_new.log 2>&1; grep -E "^forward|^dw" $OUT/bench_new.log
# OLD=1 (or OLD=gemm): the GEMM forward kernel; OLD=factored-3xtf32: fp32 as three TF32 MMAs; several: OLD="a b".
for old in ${OLD:+$OLD}; do [ "$old" = 1 ] && old=gemm; echo "== --forward_kernel $old"; timeout 100 $B/tp-bench --forward_kernel $old --batches 64,1024 --precisions fp32,tf32 --runs 50 --verify_max_batch 64 > $OUT/bench_$old.log 2>&1; grep -E "^forward" $OUT/bench_$old.log; done
if [ -n "$TEST" ]; then timeout 250 $B/cuda_backend_test --gtest_brief=1 > $OUT/test.log 2>&1; echo test exit $?; grep -E "PASSED|FAILED|Failure|Which is" $OUT/test.log | head -20; fi
if [ -n "$NCU" ]; then timeout 200 /usr/local/cuda/bin/ncu --clock-control none --kernel-name regex:TpForwardFactored --launch-skip 3 --launch-count 1 --set full --import-source no -o $OUT/prof $B/tp-bench --batches 64 --precisions $NCU --runs 2 --warmup 1 --verify_max_batch 0 > /dev/null 2>&1; /usr/local/cuda/bin/ncu --import $OUT/prof.ncu-rep --page source --csv --print-source sass > $OUT/src_sass.csv 2>&1; /usr/local/cuda/bin/ncu --import $OUT/prof.ncu-rep --page details > $OUT/details.txt 2>&1; grep -E "Duration|Issue Slots Busy|Executed Ipc A|No Eligible|Eligible Warps|L2 Hit Rate|DRAM Throughput" $OUT/details.txt; rm -f $OUT/prof.ncu-rep; fi
