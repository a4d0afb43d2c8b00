#!/bin/bash
# The latency of ModelInfer (Open Inference Protocol, raw FP32) against tp.v1 Forward on the GPU
# machine: the same tpserve, seed model, batch 64, the same channel, calls alternating
# (server/bench/kserve_probe.cc). Two steps:
#
#   tools/gpu/kserve_latency.sh stage DEST   # here: build tpserve + kserve-probe (build/, CUDA for
#                                            # sm_90a among the default architectures) and stage them
#                                            # with their libraries in DEST/kserve.tgz
#   tools/gpu/kserve_latency.sh run BUNDLE   # there: BUNDLE = that kserve.tgz (or a folder with
#                                            # bin/ and libs/); serve the seed model on cuda, time,
#                                            # write under $OUT
#
# CALLS (default 2000) and WARMUP (200) tune the probe; both protocols run fp32. A dry run without
# a GPU: BACKEND=cpu SERVER_FLAGS="--demo_irreps_in1=8x0e --demo_irreps_in2=8x0e --demo_irreps_out=8x0e"
# CALLS=50 OUT=/tmp/k tools/gpu/kserve_latency.sh run DEST/kserve.tgz
set -euo pipefail
usage="usage: kserve_latency.sh stage DEST | run BUNDLE"
[ -n "${2:-}" ] || { echo "$usage" >&2; exit 2; }
bundle_arg=$(realpath -m "$2")
cd "$(dirname "$0")/../.."

case "${1:-}" in
  stage)
    if [ ! -f build/build.ninja ]; then  # configure as tools/build.sh does (CUDA when nvcc is there)
      cuda_args=(); [ -x /usr/local/cuda/bin/nvcc ] && cuda_args=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
      cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}" >/dev/null
    fi
    cmake --build build -j "${BUILD_JOBS:-2}" --target tpserve kserve-probe
    nm -C build/bin/tpserve | grep CudaBackend >/dev/null ||
      echo "warning: this tpserve has no CUDA backend (nvcc was not found when build/ was configured)" >&2
    # bin/ + libs/ packed (OpenBLAS alone is 35 MB; the carried tree may hold 64 MiB).
    stage=$(mktemp -d)
    mkdir -p "$stage/bin"
    cp build/bin/tpserve build/bin/kserve-probe "$stage/bin/"
    ../shared/tools/bundle-runtime-libs "$stage/libs" "$stage"/bin/* >/dev/null
    mkdir -p "$bundle_arg"
    tar czf "$bundle_arg/kserve.tgz" -C "$stage" bin libs
    rm -rf "$stage"
    du -sh "$bundle_arg/kserve.tgz"
    ;;
  run)
    OUT=${OUT:-/tmp/kserve-latency}
    mkdir -p "$OUT"
    # shellcheck source=tools/gpu/bundle.sh
    . tools/gpu/bundle.sh
    use_bundle "$bundle_arg" kserve
    root=/tmp/tp-kserve
    export LD_LIBRARY_PATH=$root/libs:/usr/local/cuda/lib64
    nvidia-smi --query-gpu=name,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || true
    # shellcheck disable=SC2086  # SERVER_FLAGS: extra tpserve flags, word-split on purpose
    "$root/bin/tpserve" --backend "${BACKEND:-cuda}" --listen 127.0.0.1:0 --metrics_address 127.0.0.1:0 \
      --demo_model seed ${SERVER_FLAGS:-} > "$OUT/server.log" 2>&1 &
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
    "$root/bin/kserve-probe" --target "127.0.0.1:$port" --model seed --batch 64 \
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
