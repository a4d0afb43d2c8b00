#!/bin/bash
# Server latency and throughput on the GPU machine (run there by the `device` tool).
#
#   tools/gpu/server_bench.sh NEW_BUNDLE [BASE_BUNDLE]
#
# Each bundle (tools/gpu/bundle.sh): bin/ (tpserve, tp-load; grpc-echo-probe optional) plus libs/
# from ../shared/tools/bundle-runtime-libs, as a folder or a tarball. Writes logs, tp-load JSON and
# /metrics scrapes under $OUT. See docs/BENCHMARKS.md.
set -u
new_bundle=${1:?usage: server_bench.sh NEW_BUNDLE [BASE_BUNDLE]}
base_bundle=${2:-}
# shellcheck source=tools/gpu/bundle.sh
. "$(dirname "$0")/bundle.sh"
OUT=${OUT:-/tmp/server-bench}
ITERS=${ITERS:-1000}
VERSIONS=${VERSIONS:-base new}   # which carried builds to serve, in order; NAME-gemm = NAME's build
                                 # with --forward_kernel gemm (every forward path in tp_gemm.cu)
THROUGHPUT=${THROUGHPUT:-1}   # 0: latency only
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
lscpu | grep -E "Model name|^CPU\(s\)" > "$OUT/cpu.txt"
use_bundle "$new_bundle" new || exit 1
rm -rf /tmp/tp-base
if [ -n "$base_bundle" ]; then use_bundle "$base_bundle" base || exit 1; fi

if [ -x /tmp/tp-new/bin/cuda_backend_test ]; then
  LD_LIBRARY_PATH=/tmp/tp-new/libs:/usr/local/cuda/lib64 /tmp/tp-new/bin/cuda_backend_test \
    --gtest_filter='*AllocateHost*:*SeedShape*' > "$OUT/cuda_backend_test.txt" 2>&1
  echo "cuda_backend_test (AllocateHost, seed shape): exit $?"; tail -3 "$OUT/cuda_backend_test.txt"
fi

# serve VERSION FLAGS...: starts tpserve from /tmp/tp-VERSION and waits until it serves.
serve() {
  local v=$1 d=${1%-gemm}; shift
  local kernel=auto; [[ $v == *-gemm ]] && kernel=gemm
  local seen; seen=$(cat "$OUT/server-$v.log" 2>/dev/null | wc -l)  # a server log per version, appended per pass
  LD_LIBRARY_PATH=/tmp/tp-$d/libs:/usr/local/cuda/lib64 /tmp/tp-$d/bin/tpserve --backend cuda --forward_kernel $kernel \
    --listen 127.0.0.1:50051 --metrics_address 127.0.0.1:9090 --demo_model seed "$@" >> "$OUT/server-$v.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 300); do tail -n +$((seen + 1)) "$OUT/server-$v.log" | grep -q "serving on port" && return 0; sleep 0.1; done
  echo "tpserve ($v) did not start"; cat "$OUT/server-$v.log"; return 1
}
stop() { kill -INT "$SERVER"; wait "$SERVER"; }
# load CLIENT_VERSION NAME FLAGS...: tp-load from /tmp/tp-CLIENT_VERSION against the running server.
load() {
  local v=${1%-gemm} name=$2; shift 2
  LD_LIBRARY_PATH=/tmp/tp-$v/libs:/usr/local/cuda/lib64 /tmp/tp-$v/bin/tp-load --server 127.0.0.1:50051 \
    --model seed --batch 64 --json "$OUT/$name.json" "$@" 2>&1 | tee "$OUT/$name.txt" | grep -E "checked|level|c="
}
scrape() { curl -s 127.0.0.1:9090/metrics > "$OUT/metrics-$1.txt"; }

pass=0
for v in $VERSIONS; do
  [ -d "/tmp/tp-${v%-gemm}" ] || continue
  pass=$((pass + 1)); t="$v-$pass"   # file names carry the pass: a version served twice keeps both
  echo "== pass $pass: server $v, client $v"
  serve "$v" --workers_per_gpu 2 || exit 1
  for p in fp32 tf32; do
    load "$v" "latency-$t-$p" --precision "$p" --concurrency 1 --requests "$ITERS" --stability 0 --warmup_s 0.5 --progress off
    scrape "$t-latency-$p"
  done
  if [ "$THROUGHPUT" = 1 ]; then
    [[ $v == new* ]] && [ -d /tmp/tp-base ] && [[ " $VERSIONS " == *" base "* ]] && { echo "== pass $pass: server new, client base"; load base "latency-$t-server-base-client-fp32" --precision fp32 --concurrency 1 --requests "$ITERS" --stability 0 --warmup_s 0.5 --progress off; }
    for p in fp32 tf32; do load new "throughput-$t-$p" --precision "$p" --transport stream --streams 32 --concurrency 128 --duration_s 5 --stability 0 --progress off; done
    scrape "$t-all"
  fi
  stop
done

# gRPC alone: unary Echo at the seed sizes, default channel arguments vs the ones tpserve sets.
if [ -x /tmp/tp-new/bin/grpc-echo-probe ] && [ "${PROBE:-1}" = 1 ]; then
  export LD_LIBRARY_PATH=/tmp/tp-new/libs
  R="grpc.experimental.tcp_read_chunk_size 1048576 grpc.experimental.tcp_min_read_chunk_size 1048576 grpc.experimental.tcp_max_read_chunk_size 4194304"
  for rep in 1 2; do
    for malloc in default tuned; do
      for args in "" "$R"; do
        MALLOC=$malloc /tmp/tp-new/bin/grpc-echo-probe server 127.0.0.1:52001 $args & e=$!; sleep 0.5
        f0=$(awk '{print $10}' /proc/$e/stat)
        line=$(MALLOC=$malloc /tmp/tp-new/bin/grpc-echo-probe client 127.0.0.1:52001 $args)
        echo "grpc-echo-probe malloc $malloc, channel args ${args:+tuned}${args:-default}: $line; server minor faults $(( $(awk '{print $10}' /proc/$e/stat) - f0 ))" | tee -a "$OUT/echo.txt"
        kill $e; wait $e 2>/dev/null
      done
    done
  done
fi

# The device tool returns a limited number of files: everything also goes back as one archive.
tar czf /tmp/server-bench.tgz -C "$OUT" . && mv /tmp/server-bench.tgz "$OUT/all.tgz"
