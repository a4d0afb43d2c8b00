#!/usr/bin/env bash
# Runs on the GPU machine, in a folder made by deploy/gpu/bundle-from-image.sh: the GPU image's own
# binaries and libraries (Debian 12 userland, libcudart 13) against this machine's driver.
#   1. cuda_backend_test (the CUDA backend against the CPU reference and e3nn's cases)
#   2. tp-bench (kernels timed)
#   3. tpserve on the GPUs: health via `tpctl health`, a model, Forward through the service vs a
#      local CPU `tpctl eval`, /metrics shows the cuda device, a short tp-load, SIGTERM drains.
# Usage: ./run-on-gpu.sh [RESULTS_DIR]   (default $OUT, else ./results)
set -uo pipefail
cd "$(dirname "$0")" || exit 1
results=${1:-${OUT:-results}}
mkdir -p "$results"
[ -d bin ] || tar -xzf payload.tar.gz
export LD_LIBRARY_PATH=$PWD/lib:/usr/local/cuda/lib64
export TPSERVE_REFERENCE_DIR=$PWD/reference
grpc_port=${GRPC_PORT:-50051}
metrics_port=${METRICS_PORT:-9090}
status=0
step() { echo "== $*"; }
check() { if "$@"; then echo "ok: $*"; else echo "FAIL: $*"; status=1; fi; }
nvidia-smi -L 2>&1 | tee "$results/gpus.txt"
cat REVISION 2>/dev/null
for b in bin/*; do echo "$b: $(ldd "$b" | grep -c 'not found') libraries not found"; done | tee "$results/ldd.txt"

if [ -x bin/cuda_backend_test ]; then
  step "cuda_backend_test"
  bin/cuda_backend_test --gtest_brief=1 >"$results/cuda_backend_test.txt" 2>&1
  check test $? -eq 0
  grep -E "PASSED|FAILED|SKIPPED" "$results/cuda_backend_test.txt" | tail -n 5
fi
if [ -x bin/tp-bench ]; then
  step "tp-bench"
  timeout 300 bin/tp-bench >"$results/tp-bench.txt" 2>&1
  check test $? -eq 0
  tail -n 15 "$results/tp-bench.txt"
fi

step "tpserve from the image on the GPU"
work=$(mktemp -d)
bin/tpserve --listen="127.0.0.1:$grpc_port" --metrics_address="127.0.0.1:$metrics_port" --model_dir="$work/models" \
  >"$results/tpserve.log" 2>&1 &
server=$!
for _ in $(seq 120); do bin/tpctl health --server "127.0.0.1:$grpc_port" --timeout 1 >/dev/null 2>&1 && break; sleep 0.5; done
check bin/tpctl health --server "127.0.0.1:$grpc_port"
grep "serving on" "$results/tpserve.log"
check grep -q "devices cuda:0" "$results/tpserve.log"
s=(--server "127.0.0.1:$grpc_port" --timeout 30)
irreps=(--irreps-in1 "32x0e + 32x1e + 16x2e" --irreps-in2 "8x0e + 8x1e" --irreps-out "32x0e + 32x1e + 32x2e")
mkdir -p "$work/remote" "$work/local"
python3 npy_tool.py random "$work/x1.npy" 64 208 1
python3 npy_tool.py random "$work/x2.npy" 64 32 2
check bin/tpctl create "${s[@]}" --model m "${irreps[@]}" --seed 3
check bin/tpctl forward "${s[@]}" --model m --x1 "$work/x1.npy" --x2 "$work/x2.npy" --out "$work/remote"
check bin/tpctl get-weights "${s[@]}" --model m --out "$work/w.npy"
check bin/tpctl eval "${irreps[@]}" --backend cpu --weights "$work/w.npy" --x1 "$work/x1.npy" --x2 "$work/x2.npy" --out "$work/local"
err=$(python3 npy_tool.py relerr "$work/remote/out.npy" "$work/local/out.npy")
echo "Forward on the GPU through tpserve vs CPU tpctl eval: relative error $err" | tee "$results/forward-vs-eval.txt"
check python3 -c "import sys; sys.exit(0 if float('$err') < 1e-4 else 1)"
timeout 240 bin/tp-load --server "127.0.0.1:$grpc_port" --latency_iters 300 --streams 32 --duration_s 5 \
  --json "$results/tp-load.json" >"$results/tp-load.txt" 2>&1
check test $? -eq 0
tail -n 12 "$results/tp-load.txt"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" >"$results/metrics.txt"
check grep -q 'tp_device_memory_bytes{device="cuda:0"}' "$results/metrics.txt"
kill -TERM "$server"
wait "$server"
check test $? -eq 0
check grep -q "tpserve: stopped" "$results/tpserve.log"
rm -rf "$work"
echo "run-on-gpu: $([ $status = 0 ] && echo PASS || echo FAIL)" | tee "$results/summary.txt"
exit $status
