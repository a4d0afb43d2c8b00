# Finds a device fault under load: tpserve (from BUNDLE: bin/{tpserve,tp-load} + libs/, a folder or a
# tarball, tools/gpu/bundle.sh) under $WRAP (e.g. compute-sanitizer) or with CUDA_LAUNCH_BLOCKING=1
# ($BLOCKING=1), fed by tp-load streams; prints the server log (launch failures name the failing
# call) and the sanitizer report.
#
#   OUT=/tmp/sanitize tools/gpu/sanitize_server.sh BUNDLE
bundle=${1:?usage: sanitize_server.sh BUNDLE}
OUT=${OUT:-/tmp/sanitize-server}
mkdir -p "$OUT"
# shellcheck source=tools/gpu/bundle.sh
. "$(dirname "$0")/bundle.sh"
use_bundle "$bundle" new || exit 1
export LD_LIBRARY_PATH=/tmp/tp-new/libs:/usr/local/cuda/lib64
LOG=$OUT/server-${TAG:-run}.log
[ "${BLOCKING:-0}" = 1 ] && export CUDA_LAUNCH_BLOCKING=1
timeout 300 ${WRAP:-} /tmp/tp-new/bin/tpserve --backend cuda --listen 127.0.0.1:50051 --metrics_address 127.0.0.1:9090 --demo_model seed --workers_per_gpu 2 > $LOG 2>&1 &
S=$!
for _ in $(seq 600); do grep -q "serving on port" $LOG && break; sleep 0.2; done
for p in ${PRE_LATENCY_PRECISIONS:-}; do  # unary calls first, as tools/gpu/server_bench.sh does
  timeout 60 /tmp/tp-new/bin/tp-load --server 127.0.0.1:50051 --model seed --batch 64 --precision $p --concurrency 1 --requests 1000 --stability 0 --warmup_s 0.5 --progress off 2>&1 | grep -E "level|c="
done
timeout 120 /tmp/tp-new/bin/tp-load --server 127.0.0.1:50051 --model seed --batch 64 --precision ${PREC:-fp32} --transport stream --streams 32 --concurrency 128 --duration_s ${SECONDS_LOAD:-10} --stability 0 --progress off 2>&1 | grep -E "c=|checked"
kill -INT $S; sleep 3; kill $S 2>/dev/null; wait $S
unset CUDA_LAUNCH_BLOCKING
grep -v "^=========     Host Frame\|^=========         in \|config:\|  core:\|  transport:\|  metrics=" $LOG | head -${LINES_OUT:-12}
