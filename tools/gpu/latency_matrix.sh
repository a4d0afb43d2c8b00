#!/usr/bin/env bash
# On the GPU machine: unary fp32 Forward latency of the seed model at batch 64, one client, for every
# (server, client) pair of two builds, so a change in p50 can be put on the server or the client.
#
#   tools/gpu/latency_matrix.sh NAME_A:DIR_A NAME_B:DIR_B
#
# Each DIR holds bin/{tpserve,tp-load} and libs/ (or lib/). A tp-load that knows --concurrency is the
# load tester of issue 18; an older one takes --latency_iters. Results under $OUT.
set -u
OUT=${OUT:-/tmp/latency-matrix}
CALLS=${CALLS:-1000}
mkdir -p "$OUT"
libs_of() { if [ -d "$1/libs" ]; then echo "$1/libs"; else echo "$1/lib"; fi; }
for server_spec in "$@"; do
  sname=${server_spec%%:*}; sdir=${server_spec#*:}
  LD_LIBRARY_PATH="$(libs_of "$sdir"):/usr/local/cuda/lib64" "$sdir/bin/tpserve" --backend cuda --listen 127.0.0.1:50051 \
    --metrics_address 127.0.0.1:9090 --demo_model seed > "$OUT/server-$sname.log" 2>&1 &
  server=$!
  for _ in $(seq 300); do grep -q "serving on port" "$OUT/server-$sname.log" && break; sleep 0.1; done
  for client_spec in "$@" "$@"; do
    cname=${client_spec%%:*}; cdir=${client_spec#*:}
    export LD_LIBRARY_PATH="$(libs_of "$cdir"):/usr/local/cuda/lib64"
    if "$cdir/bin/tp-load" --help 2>&1 | grep -q -- "--concurrency"; then
      line=$("$cdir/bin/tp-load" --server 127.0.0.1:50051 --model seed --batch 64 --concurrency 1 --warmup_s 1 \
        --requests "$CALLS" --stability 0 --progress off 2>/dev/null | grep -E "^c=1 ")
      # The same without gRPC's retry policy (a retriable call keeps a copy of its request).
      line="$line | no retries: $("$cdir/bin/tp-load" --server 127.0.0.1:50051 --model seed --batch 64 --concurrency 1 \
        --warmup_s 1 --requests "$CALLS" --stability 0 --max_attempts 1 --progress off 2>/dev/null | grep -E "^c=1 ")"
    else
      line=$("$cdir/bin/tp-load" --server 127.0.0.1:50051 --model seed --batch 64 --latency_iters "$CALLS" \
        --streams 0 2>/dev/null | grep -E "unary Forward latency")
    fi
    echo "server $sname, client $cname: $line" | tee -a "$OUT/matrix.txt"
    unset LD_LIBRARY_PATH
  done
  kill -TERM "$server"; wait "$server"  # TERM: a background job of a script ignores INT
done
