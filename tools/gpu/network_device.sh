#!/usr/bin/env bash
# On the GPU machine: network models computing on the GPU (tpserve --network_device, issue 19).
# Runs network_device_test (the real tpserve with network models on cpu and on cuda:0 against the
# fp64 CPU network; prints both instances' errors and TrainStep medians), qm9_cuda_network_test
# (SetVelocity included), then a tpserve with its defaults (--network_device auto: cuda:0) and
# `tpctl qm9 train` at lmax 1, mul 128 for 20 steps on 27 generated molecules, timed, once with every
# step saved (the default) and once with --network_save_every 10. Under 200 s.
#
#   tools/gpu/network_device.sh BUNDLE
#
# BUNDLE: bin/{tpserve,tpctl,network_device_test,qm9_cuda_network_test} + libs/ (folder or tarball,
# tools/gpu/bundle.sh). Results in $OUT (default /tmp/network-device): summary.txt and the logs.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/gpu/bundle.sh
. "$here/bundle.sh"
use_bundle "${1:?usage: network_device.sh BUNDLE}" netdev || exit 1
N=/tmp/tp-netdev
OUT=${OUT:-/tmp/network-device}
mkdir -p "$OUT"
summary=$OUT/summary.txt
: > "$summary"
export LD_LIBRARY_PATH=$N/libs:/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv 2>&1 | tee -a "$summary"

echo "== network_device_test" | tee -a "$summary"
TPSERVE_BIN=$N/bin/tpserve timeout 180 "$N/bin/network_device_test" > "$OUT/network_device_test.txt" 2>&1
echo "exit $?" | tee -a "$summary"
grep -E "^(cpu|cuda:0):|^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure|Expected|Which is|error" \
  "$OUT/network_device_test.txt" | head -40 | tee -a "$summary"

echo "== qm9_cuda_network_test" | tee -a "$summary"
timeout 60 "$N/bin/qm9_cuda_network_test" > "$OUT/qm9_cuda_network_test.txt" 2>&1
echo "exit $?" | tee -a "$summary"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure" "$OUT/qm9_cuda_network_test.txt" | head -20 | tee -a "$summary"

# tpserve with its defaults plus $1 (e.g. --network_save_every=10), tpctl qm9 train timed.
train_timed() {
  local flags=$1 saves=$2
  echo "== tpserve (defaults $flags) + tpctl qm9 train, lmax 1 mul 128, 20 steps" | tee -a "$summary"
  models=$(mktemp -d)
  # shellcheck disable=SC2086
  "$N/bin/tpserve" --listen=127.0.0.1:0 --metrics_address= --model_dir="$models" $flags > "$OUT/tpserve$flags.log" 2>&1 &
  pid=$!
  port=
  for _ in $(seq 1 300); do
    port=$(grep -oE "serving on port [0-9]+" "$OUT/tpserve$flags.log" | grep -oE "[0-9]+$")
    [ -n "$port" ] && break
    kill -0 "$pid" 2> /dev/null || break
    sleep 0.1
  done
  grep -E "network models compute on|network models: a training step" "$OUT/tpserve$flags.log" | tee -a "$summary"
  if [ -n "$port" ]; then
    timeout 30 "$N/bin/tpctl" qm9 create mol --lmax 1 --mul 128 --seed 1 --server "127.0.0.1:$port" 2>&1 | tee -a "$summary"
    start=$(date +%s%N)
    timeout 60 "$N/bin/tpctl" qm9 train mol --generate 27 --steps 20 --batch 27 --server "127.0.0.1:$port" \
      > "$OUT/train$flags.txt" 2>&1
    echo "exit $?; 20 steps (tpctl start, 27 molecules generated, $saves: ~119 MB state) in" \
      "$(( ($(date +%s%N) - start) / 1000000 )) ms" | tee -a "$summary"
    grep -E "^step (1|2|10|20) |first loss" "$OUT/train$flags.txt" | tee -a "$summary"
  else
    echo "tpserve did not start:" | tee -a "$summary"
    tail -5 "$OUT/tpserve$flags.log" | tee -a "$summary"
  fi
  kill "$pid" 2> /dev/null
  wait "$pid" 2> /dev/null
  grep -E "saved version" "$OUT/tpserve$flags.log" | tee -a "$summary"
  rm -rf "$models"
}
train_timed "" "each step saved"
train_timed "--network_save_every=10" "steps 10 and 20 saved"
