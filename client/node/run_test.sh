#!/usr/bin/env bash
# The Node example as one CTest test (node_client_test): installs @grpc/grpc-js and
# @grpc/proto-loader from the committed package-lock.json (npm ci, into WORK_DIR, not the source
# tree), starts a CPU tpserve on a free loopback port, runs stream_example.js against it twice (e3nn
# reference case; random batches with a window of 1) and stops the server.
#   client/node/run_test.sh TPSERVE_BIN WORK_DIR
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 TPSERVE_BIN WORK_DIR" >&2
  exit 2
fi
tpserve_bin=$1
work_dir=$2
node_dir="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$node_dir/../.." && pwd)"
reference_dir=${TPSERVE_REFERENCE_DIR:-$(cd "$repo/.." && pwd)/shared/reference}
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "run_test: $tool is missing (tools/install-deps.sh installs it)" >&2; exit 1; }
done

rm -rf "$work_dir"
mkdir -p "$work_dir/app"
cp "$node_dir/package.json" "$node_dir/package-lock.json" "$node_dir/stream_example.js" "$work_dir/app/"
(cd "$work_dir/app" && npm ci --no-audit --no-fund --loglevel=error)

log="$work_dir/tpserve.log"
"$tpserve_bin" --listen=127.0.0.1:0 --metrics_address= --model_dir="$work_dir/models" --backend=cpu >"$log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true' EXIT
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$log")
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "run_test: tpserve did not start:" >&2
  cat "$log" >&2
  exit 1
fi

export TPSERVE_PROTO="$repo/proto/tp/v1/tensor_product.proto"
node "$work_dir/app/stream_example.js" --server "127.0.0.1:$port" --reference "$reference_dir/ref_mixed_parity.json" \
  --batches 24 --batch 8 --window 8
node "$work_dir/app/stream_example.js" --server "127.0.0.1:$port" --batches 6 --batch 3 --window 1
