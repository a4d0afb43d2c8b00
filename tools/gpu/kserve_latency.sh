#!/bin/bash
# The latency of ModelInfer (Open Inference Protocol, raw FP32) against tp.v1 Forward on the GPU
# machine: the same tpserve, seed model, batch 64, the same channel, calls alternating
# (server/bench/kserve_probe.cc). Two steps:
#
#   tools/gpu/kserve_latency.sh stage        # here: build tpserve + kserve-probe (build/, CUDA for
#                                            # sm_90a among the default architectures) and stage them
#                                            # with their libraries in build-kserve-carry/ (~20 MB)
#   tools/gpu/kserve_latency.sh run          # there (device tool, carry ["build-kserve-carry"]):
#                                            # serve the seed model on cuda, time, write under $OUT
#
# CALLS (default 2000) and WARMUP (200) tune the probe; PRECISION (fp32) is not used by ModelInfer's
# default, so both protocols run fp32.
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=${CARRY:-build-kserve-carry}

case "${1:-}" in
  stage)
    tools/build.sh >/dev/null
    cmake --build build -j "${BUILD_JOBS:-2}" --target tpserve kserve-probe
    rm -rf "$CARRY" && mkdir -p "$CARRY/bin"
    cp build/bin/tpserve build/bin/kserve-probe "$CARRY/bin/"
    ../shared/tools/bundle-runtime-libs "$CARRY/libs" "$CARRY"/bin/*
    du -sh "$CARRY"
    ;;
  run)
    OUT=${OUT:-/tmp/kserve-latency}
    mkdir -p "$OUT"
    export LD_LIBRARY_PATH=$PWD/$CARRY/libs:/usr/local/cuda/lib64
    nvidia-smi --query-gpu=name,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || true
    "$CARRY/bin/tpserve" --backend cuda --listen 127.0.0.1:0 --metrics_address 127.0.0.1:0 \
      --demo_model seed > "$OUT/server.log" 2>&1 &
    server=$!
    port=""
    for _ in $(seq 600); do
      port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$OUT/server.log" | head -1)
      [ -n "$port" ] && break
      kill -0 "$server" 2>/dev/null || break
      sleep 0.1
    done
    if [ -z "$port" ]; then echo "tpserve did not start:"; cat "$OUT/server.log"; exit 1; fi
    status=0
    "$CARRY/bin/kserve-probe" --target "127.0.0.1:$port" --model seed --batch 64 \
      --calls "${CALLS:-2000}" --warmup "${WARMUP:-200}" --json "$OUT/kserve_latency.json" \
      | tee "$OUT/kserve_latency.txt" || status=$?
    kill -INT "$server"; wait "$server" || true
    cat "$OUT/gpu.txt"
    exit $status
    ;;
  *)
    echo "usage: $0 stage|run   (see the comment at the top)" >&2
    exit 2
    ;;
esac
