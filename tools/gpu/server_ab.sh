#!/usr/bin/env bash
# On the GPU machine: a same-call A/B of the server's unary Forward latency between a base and a new
# build, with ONE client (BASE_DIR's tp-load) for both, alternating base/new per round (the order
# flips each round) so that drift of the host hits both alike. Prints each round's p50 and, per
# build, the median of its rounds' p50s.
#
#   tools/gpu/server_ab.sh BASE_DIR NEW_DIR
#
# Each DIR holds bin/tpserve (and BASE_DIR bin/tp-load) and libs/ (from
# ../shared/tools/bundle-runtime-libs). Environment: OUT (results; default /tmp/server-ab), ROUNDS
# (default 6), CALLS per round (2000), BATCH (64), CONCURRENCY (1; a comma list runs each), PORT
# (50051), METRICS_PORT (9090), SERVER_FLAGS (extra tpserve flags for both, e.g. "--backend cpu").
set -u
base=${1:?usage: server_ab.sh BASE_DIR NEW_DIR}
new=${2:?usage: server_ab.sh BASE_DIR NEW_DIR}
OUT=${OUT:-/tmp/server-ab}
ROUNDS=${ROUNDS:-6}
CALLS=${CALLS:-2000}
BATCH=${BATCH:-64}
CONCURRENCY=${CONCURRENCY:-1}
PORT=${PORT:-50051}
METRICS_PORT=${METRICS_PORT:-9090}
SERVER_FLAGS=${SERVER_FLAGS:---backend cuda}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv > "$OUT/gpu.txt" 2>&1 && cat "$OUT/gpu.txt"
client_dir=$base

with_libs() {  # with_libs DIR PROGRAM ARGS...: a program of DIR with DIR's libraries
  local dir=$1 prog=$2; shift 2
  env LD_LIBRARY_PATH="$dir/libs:$dir/lib:/usr/local/cuda/lib64" "$dir/bin/$prog" "$@"
}

# one_round NAME DIR ROUND: serves from DIR, measures every concurrency, stops the server.
one_round() {
  local name=$1 dir=$2 round=$3 log="$OUT/server-$1-$3.log"
  # shellcheck disable=SC2086
  # Not through with_libs: started by `env` directly, $! is the server itself (env execs it).
  env LD_LIBRARY_PATH="$dir/libs:$dir/lib:/usr/local/cuda/lib64" "$dir/bin/tpserve" $SERVER_FLAGS --listen "127.0.0.1:$PORT" --metrics_address "127.0.0.1:$METRICS_PORT" \
    --demo_model seed > "$log" 2>&1 &
  local server=$!
  for _ in $(seq 300); do grep -q "serving on port" "$log" && break; sleep 0.1; done
  local c
  for c in ${CONCURRENCY//,/ }; do
    local csv="$OUT/load-$name-$round-c$c.csv"
    with_libs "$client_dir" tp-load --server "127.0.0.1:$PORT" --model seed --batch "$BATCH" --concurrency "$c" \
      --warmup_s 1 --requests "$CALLS" --stability 0 --progress off --csv "$csv" > "$OUT/load-$name-$round-c$c.txt" 2>&1
    local p50  # column p50_ms of the CSV's one row
    p50=$(awk -F, 'NR == 1 {for (i = 1; i <= NF; ++i) if ($i == "p50_ms") col = i} NR == 2 && col {print $col}' "$csv" 2>/dev/null)
    [ -n "$p50" ] || p50="?"
    echo "$name c=$c round $round p50_ms $p50" | tee -a "$OUT/rounds.txt"
  done
  kill -TERM "$server"; wait "$server"  # TERM: a background job of a script ignores INT
}

: > "$OUT/rounds.txt"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="base new"; else order="new base"; fi
  for name in $order; do
    if [ "$name" = base ]; then one_round base "$base" "$round"; else one_round new "$new" "$round"; fi
  done
done
echo "median of the rounds' p50 (ms):" | tee "$OUT/summary.txt"
for c in ${CONCURRENCY//,/ }; do
  for name in base new; do
    awk -v n="$name" -v c="c=$c" '$1 == n && $2 == c && $6 != "?" {print $6}' "$OUT/rounds.txt" | sort -g |
      awk -v n="$name" -v c="$c" '{v[NR] = $1} END {if (NR) printf "  %s c=%s: %.4f (%d rounds)\n", n, c, (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), NR}' |
      tee -a "$OUT/summary.txt"
  done
done
