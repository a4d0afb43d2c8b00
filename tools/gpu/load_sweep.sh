#!/bin/bash
# Closed-loop load sweep of one tpserve on the GPU machine (run there by the `device` tool): starts
# tpserve --backend cuda with the seed model, then tp-load over concurrency 1, 2, 4, ... with the
# seed model at batch 64 until throughput stops growing (--stop_at_saturation), and writes the
# table, JSON, CSV, SVG, the server log and a /metrics scrape under $OUT. See docs/LOAD.md.
#
#   tools/gpu/load_sweep.sh BUNDLE
#
# BUNDLE (tools/gpu/bundle.sh): bin/{tpserve,tp-load} + libs/ (../shared/tools/bundle-runtime-libs),
# a folder or a tarball of one.
set -u
bundle=${1:?usage: load_sweep.sh BUNDLE}
# shellcheck source=tools/gpu/bundle.sh
. "$(dirname "$0")/bundle.sh"
OUT=${OUT:-/tmp/load-sweep}
PRECISION=${PRECISION:-fp32}
SWEEP=${SWEEP:-1:512:x2}
TRANSPORT=${TRANSPORT:-unary}
DURATION=${DURATION:-3}
mkdir -p "$OUT"
use_bundle "$bundle" new || exit 1
BIN=/tmp/tp-new/bin
export LD_LIBRARY_PATH=/tmp/tp-new/libs:/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
lscpu | grep -E "Model name|^CPU\(s\)" > "$OUT/cpu.txt"

"$BIN/tpserve" --backend cuda --workers_per_gpu 2 --listen 127.0.0.1:50051 --metrics_address 127.0.0.1:9090 \
  --demo_model seed > "$OUT/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 300); do grep -q "serving on port" "$OUT/server.log" && break; sleep 0.1; done
grep -q "serving on port" "$OUT/server.log" || { echo "tpserve did not start"; cat "$OUT/server.log"; exit 1; }

"$BIN/tp-load" --server 127.0.0.1:50051 --metrics 127.0.0.1:9090 --model seed --batch 64 \
  --precision "$PRECISION" --transport "$TRANSPORT" --concurrency "$SWEEP" --stop_at_saturation \
  --warmup_s 1 --duration_s "$DURATION" --stability 0.10 --max_windows 6 --max_outstanding 512 \
  --json "$OUT/sweep.json" --csv "$OUT/sweep.csv" --svg "$OUT/sweep.svg" --progress off \
  > "$OUT/sweep.txt" 2> "$OUT/sweep.log"
status=$?
cat "$OUT/sweep.log" "$OUT/sweep.txt"
curl -s 127.0.0.1:9090/metrics > "$OUT/metrics.txt"
kill -INT "$SERVER"; wait "$SERVER"
exit $status
