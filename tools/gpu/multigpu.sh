#!/usr/bin/env bash
# On a GPU machine: one tpserve over several GPUs against one GPU, same binary, same load (issue 23;
# docs/MULTIGPU.md). Two modes:
#
#   tools/gpu/multigpu.sh DIR two-gpu   (default) --backend cuda:0,cuda:1 vs cuda:0, workers_per_gpu $WPG
#   tools/gpu/multigpu.sh DIR one-gpu   --backend cuda:0 with --workers_per_gpu 2 vs 1
#
# DIR holds bin/ (tpserve, tp-load; optionally cuda_multi_device_test, cuda_multi_device_core_test)
# and libs/ (../shared/tools/bundle-runtime-libs). For each configuration, a fresh server with the
# seed model (128x0e+128x1e+128x2e), then tp-load closed loops: Backward b=1024 and Forward b=64 at
# 32 and 128 requests in flight. Per device, /metrics' tp_device_requests_total and
# tp_compute_time_seconds (count, sum) are scraped before and after each run; the table shows each
# run's samples/s, the devices' shares, and the ratio of the multi configuration over the single.
# two-gpu also runs the injected fault: TPSERVE_INJECT_DEVICE_FAULT=cuda:1@$FAULT_AFTER under load;
# cuda:1 must read tp_device_lost 1, health stay SERVING, and cuda:0 serve what follows.
#
# Environment: OUT (results; default /tmp/multigpu), DURATION (seconds per window, 4), WPG (workers
# per GPU in two-gpu mode, 2), PORT (50051; metrics on PORT+1), FAULT_AFTER (launches, 2000),
# IRREPS (the model's irreps, default the seed's). DRY_CPU=1 runs the same steps on cpu:0,cpu:1
# (a check of the script on a machine without GPUs; use a small IRREPS there).
set -u
dir=${1:?usage: multigpu.sh DIR [two-gpu|one-gpu]}
mode=${2:-two-gpu}
OUT=${OUT:-/tmp/multigpu}
DURATION=${DURATION:-4}
WPG=${WPG:-2}
PORT=${PORT:-50051}
MPORT=$((PORT + 1))
FAULT_AFTER=${FAULT_AFTER:-2000}
IRREPS=${IRREPS:-128x0e + 128x1e + 128x2e}
DEV0=cuda:0 DEV1=cuda:1
[ "${DRY_CPU:-0}" = 1 ] && DEV0=cpu:0 DEV1=cpu:1
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64"
nvidia-smi --query-gpu=index,name,driver_version,clocks.sm --format=csv > "$OUT/gpu.txt" 2>&1
nvidia-smi topo -m > "$OUT/topo.txt" 2>&1
cat "$OUT/gpu.txt"
date -u +"%Y-%m-%dT%H:%MZ" > "$OUT/date.txt"

case "$mode" in
  two-gpu)
    multi=(--backend $DEV0,$DEV1 --workers_per_gpu "$WPG"); single=(--backend $DEV0 --workers_per_gpu "$WPG")
    multi_name="$DEV0,$DEV1 x$WPG"; single_name="$DEV0 x$WPG" ;;
  one-gpu)
    multi=(--backend $DEV0 --workers_per_gpu 2); single=(--backend $DEV0 --workers_per_gpu 1)
    multi_name="$DEV0 x2 workers"; single_name="$DEV0 x1 worker" ;;
  *) echo "mode: expected two-gpu or one-gpu, got '$mode'"; exit 2 ;;
esac

for t in cuda_multi_device_test cuda_multi_device_core_test; do
  [ -x "$dir/bin/$t" ] || continue
  timeout 300 "$dir/bin/$t" > "$OUT/$t.txt" 2>&1
  echo "$t: exit $?"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|accumulations|gradient copy" "$OUT/$t.txt" | head -12
done

server_pid=
start_server() {  # start_server LOG ARGS...: waits until it serves
  local log=$1; shift
  "$dir/bin/tpserve" --listen 127.0.0.1:$PORT --metrics_address 127.0.0.1:$MPORT --demo_model seed \
    --demo_irreps_in1 "$IRREPS" --demo_irreps_in2 "$IRREPS" --demo_irreps_out "$IRREPS" "$@" > "$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do grep -q "serving on port" "$log" && return 0; sleep 0.1; done
  echo "tpserve did not start:"; cat "$log"; return 1
}
stop_server() { kill -INT "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; }
scrape() { curl -s 127.0.0.1:$MPORT/metrics > "$1"; }
# series FILE NAME DEVICE: the value of NAME{...device="DEVICE"...} (0 when absent)
series() { awk -v n="$2" -v d="device=\"$3\"" '$1 ~ "^"n"[{]" && index($1, d) {s += $2} END {printf "%.6g", s+0}' "$1"; }
# delta BEFORE AFTER NAME DEVICE: how much the series grew
delta() { echo "$(series "$2" "$3" "$4") $(series "$1" "$3" "$4")" | awk '{printf "%.6g", $1 - $2}'; }
devices_of() { sed -n 's/.*devices \([^,]*\(,[^, ]*\)*\), .*/\1/p' "$1" | tr ',' '\n' | sort -u; }

declare -A rate
run_config() {  # run_config NAME ARGS...
  local name=$1; shift
  local tag=${name//[^a-zA-Z0-9]/_}
  start_server "$OUT/server_$tag.log" "$@" || return 1
  local devices; devices=$(devices_of "$OUT/server_$tag.log")
  for c in "backward 1024 32" "backward 1024 128" "forward 64 32" "forward 64 128"; do
    set -- $c
    local op=$1 batch=$2 conc=$3 key="$1 b=$2 c=$3"
    scrape "$OUT/m0.txt"
    "$dir/bin/tp-load" --server 127.0.0.1:$PORT --model seed --op "$op" --batch "$batch" --concurrency "$conc" \
      --warmup_s 1 --duration_s "$DURATION" --stability 0.10 --max_windows 4 --deadline_s 60 --progress off --max_verified 1 \
      --csv "$OUT/load_${tag}_${op}_${batch}_${conc}.csv" > "$OUT/load_${tag}_${op}_${batch}_${conc}.txt" 2>&1
    scrape "$OUT/m1.txt"
    local csv="$OUT/load_${tag}_${op}_${batch}_${conc}.csv"
    local sps; sps=$(awk -F, 'NR==2 {print $7}' "$csv" 2>/dev/null)
    local errors; errors=$(awk -F, 'NR==2 {print $5}' "$csv" 2>/dev/null)
    rate["$name|$key"]=${sps:-0}
    local shares=""
    for d in $devices; do
      shares+=$(awk -v d="$d" -v r="$(delta "$OUT/m0.txt" "$OUT/m1.txt" tp_device_requests_total "$d")" \
        -v n="$(delta "$OUT/m0.txt" "$OUT/m1.txt" tp_compute_time_seconds_count "$d")" \
        -v s="$(delta "$OUT/m0.txt" "$OUT/m1.txt" tp_compute_time_seconds_sum "$d")" \
        'BEGIN {printf " %s: %d req, %d launches, %.2f s compute;", d, r, n, s}')
    done
    printf "%-22s %-22s %12.0f samples/s  errors %s |%s\n" "$name" "$key" "${sps:-0}" "${errors:-?}" "$shares" \
      | tee -a "$OUT/summary.txt"
  done
  scrape "$OUT/metrics_$tag.txt"
  stop_server
}

echo "== $mode: $multi_name vs $single_name, $DURATION s windows" | tee "$OUT/summary.txt"
run_config "$single_name" "${single[@]}"
run_config "$multi_name" "${multi[@]}"
echo "== ratio ($multi_name over $single_name)" | tee -a "$OUT/summary.txt"
for key in "backward b=1024 c=32" "backward b=1024 c=128" "forward b=64 c=32" "forward b=64 c=128"; do
  awk -v k="$key" -v a="${rate["$multi_name|$key"]:-0}" -v b="${rate["$single_name|$key"]:-0}" \
    'BEGIN {printf "%-22s %10.0f / %10.0f = %.2fx\n", k, a, b, (b > 0 ? a / b : 0)}' | tee -a "$OUT/summary.txt"
done

if [ "$mode" = two-gpu ]; then
  echo "== injected fault: $DEV1 faults after $FAULT_AFTER launches (TPSERVE_INJECT_DEVICE_FAULT)" \
    | tee -a "$OUT/summary.txt"
  TPSERVE_INJECT_DEVICE_FAULT="$DEV1@$FAULT_AFTER" start_server "$OUT/server_fault.log" "${multi[@]}" || exit 1
  scrape "$OUT/f0.txt"
  "$dir/bin/tp-load" --server 127.0.0.1:$PORT --model seed --op forward --batch 64 --concurrency 32 \
    --warmup_s 0 --duration_s "$DURATION" --stability 0 --max_windows 3 --deadline_s 60 --progress off \
    --csv "$OUT/load_fault.csv" > "$OUT/load_fault.txt" 2>&1
  scrape "$OUT/f1.txt"
  if [ -x "$dir/bin/tpctl" ]; then
    "$dir/bin/tpctl" health --server 127.0.0.1:$PORT > "$OUT/health.txt" 2>&1
    echo "health after the fault: exit $? ($(tr '\n' ' ' < "$OUT/health.txt"))" | tee -a "$OUT/summary.txt"
  fi
  "$dir/bin/tp-load" --server 127.0.0.1:$PORT --model seed --op forward --batch 64 --concurrency 32 \
    --warmup_s 0 --duration_s 2 --stability 0 --max_windows 1 --deadline_s 60 --progress off \
    --csv "$OUT/load_after_fault.csv" > "$OUT/load_after_fault.txt" 2>&1
  scrape "$OUT/f2.txt"
  for d in $DEV0 $DEV1; do
    printf "%s: tp_device_lost %s; requests during the fault run %s, after it %s\n" "$d" \
      "$(series "$OUT/f2.txt" tp_device_lost "$d")" "$(delta "$OUT/f0.txt" "$OUT/f1.txt" tp_device_requests_total "$d")" \
      "$(delta "$OUT/f1.txt" "$OUT/f2.txt" tp_device_requests_total "$d")" | tee -a "$OUT/summary.txt"
  done
  printf "errors during the fault run: %s (by code: %s); after it: %s\n" \
    "$(awk -F, 'NR>1 {e += $5} END {print e+0}' "$OUT/load_fault.csv")" \
    "$(awk -F, 'NR>1 && $21 != "" {print $21}' "$OUT/load_fault.csv" | tr '\n' ' ')" \
    "$(awk -F, 'NR>1 {e += $5} END {print e+0}' "$OUT/load_after_fault.csv")" | tee -a "$OUT/summary.txt"
  grep -E "device lost|injected" "$OUT/server_fault.log" | head -3 | tee -a "$OUT/summary.txt"
  lost=$(series "$OUT/f2.txt" tp_device_lost "$DEV1") after_errors=$(awk -F, 'NR>1 {e += $5} END {print e+0}' "$OUT/load_after_fault.csv")
  served=$(delta "$OUT/f1.txt" "$OUT/f2.txt" tp_device_requests_total "$DEV0")
  if [ "$lost" = 1 ] && [ "$after_errors" = 0 ] && awk -v n="$served" 'BEGIN {exit !(n > 0)}'; then
    echo "fault: PASS ($DEV1 lost, $DEV0 served $served requests after it without errors)" | tee -a "$OUT/summary.txt"
  else
    echo "fault: FAIL (tp_device_lost{$DEV1}=$lost, errors after $after_errors, $DEV0 served $served; lower FAULT_AFTER?)" \
      | tee -a "$OUT/summary.txt"
  fi
  stop_server
fi
echo "results in $OUT"
