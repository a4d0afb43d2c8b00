#!/usr/bin/env bash
# The Compose test: `podman-compose up` brings up tpserve and Prometheus (Grafana's upstream image is
# not reachable here), a short tp-load run and a few failing calls feed them, then every query of
# the Grafana dashboard runs against that Prometheus's HTTP API and must return data.
#
# Usage: deploy/compose/test-compose.sh
# Environment: WORK_DIR (default /var/tmp/tpserve-image-test, shared with deploy/test-image.sh: the
# podman store and the tpserve image built there are reused), KEEP=1 leaves the stack running.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${WORK_DIR:-/var/tmp/tpserve-image-test}
store=${STORE_DIR:-$work/store}
mkdir -p "$store" "$work/io"
global=(--root "$store/root" --runroot "$store/run" --runtime runc --cgroup-manager cgroupfs)
podman=(podman "${global[@]}")
project=tpserve-compose-test
compose=(podman-compose --podman-args "${global[*]}" -p "$project" -f "$here/compose.yaml" -f "$here/compose.podman-local.yaml")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
log() { echo "test-compose: $*"; }
fail() {
  echo "test-compose: FAIL: $*" >&2
  "${podman[@]}" logs "${project}_tpserve_1" 2>&1 | tail -n 15 >&2 || true
  "${podman[@]}" logs "${project}_prometheus_1" 2>&1 | tail -n 15 >&2 || true
  exit 1
}
down() { (cd "$here" && "${compose[@]}" down -v >/dev/null 2>&1) || true; }

export TPSERVE_IMAGE=localhost/tpserve:cpu PROMETHEUS_IMAGE=localhost/tpserve-prometheus:latest
export BIND_ADDRESS=127.0.0.1
TPSERVE_GRPC_PORT=$(free_port) TPSERVE_METRICS_PORT=$(free_port) PROMETHEUS_PORT=$(free_port)
export TPSERVE_GRPC_PORT TPSERVE_METRICS_PORT PROMETHEUS_PORT

# ---- images: tpserve (built unless the image test built it) and Prometheus ----
if ! "${podman[@]}" image exists "$TPSERVE_IMAGE"; then
  PODMAN="${podman[*]}" CACHE_DIR="$work/base" BUILD_LOG="$work/build.log" "$repo/deploy/build-image.sh" cpu
fi
PODMAN="${podman[*]}" CACHE_DIR="$work/base" "$repo/deploy/local-base-images.sh"
"${podman[@]}" build --isolation chroot --format docker --pull=never --layers=true -q \
  -t "$PROMETHEUS_IMAGE" "$here/prometheus" >/dev/null || fail "Prometheus image build"

# ---- up ----
down
[ "${KEEP:-0}" = 1 ] || trap down EXIT
(cd "$here" && "${compose[@]}" up -d tpserve prometheus >"$work/compose-up.log" 2>&1) ||
  { tail -n 30 "$work/compose-up.log" >&2; fail "podman-compose up"; }
t0=$(date +%s)
until "${podman[@]}" healthcheck run "${project}_tpserve_1" >/dev/null 2>&1; do
  (($(date +%s) - t0 < 60)) || fail "tpserve not healthy after 60 s"
  sleep 0.5
done
until curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" >/dev/null 2>&1; do
  (($(date +%s) - t0 < 90)) || fail "Prometheus not ready after 90 s"
  sleep 0.5
done
log "tpserve healthy and Prometheus ready $(($(date +%s) - t0)) s after up"

# ---- load: tp-load and tpctl from the image, on the host network, through the published port ----
client() { "${podman[@]}" run --rm --no-healthcheck --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --network host \
             -v "$work/io:/io" --entrypoint "$1" "$TPSERVE_IMAGE" "${@:2}"; }
server="127.0.0.1:$TPSERVE_GRPC_PORT"
for round in 1 2; do
  # Failing calls, so the error panels have something to show.
  client tpctl get --server "$server" --model no-such-model >/dev/null 2>&1 || true
  client tpctl delete --server "$server" --model no-such-model >/dev/null 2>&1 || true
  client tp-load --server "$server" --model load --irreps "16x0e + 16x1e + 8x2e" --batch 32 \
    --latency_iters 200 --streams 4 --window 2 --duration_s 3 >"$work/tp-load-$round.txt" 2>&1 ||
    { tail -n 20 "$work/tp-load-$round.txt" >&2; fail "tp-load round $round"; }
  # Two scrapes (5 s apart) between the rounds, so every counter visibly increases.
  sleep 11
done
log "tp-load: $(grep -m1 -iE 'throughput|req/s|samples' "$work/tp-load-2.txt" || tail -n 1 "$work/tp-load-2.txt")"

# ---- Prometheus scrapes tpserve, and every dashboard query answers ----
up=$(curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query" --data-urlencode 'query=up{job="tpserve"}')
grep -q '"value":\[[0-9.]*,"1"\]' <<<"$up" || fail "Prometheus does not scrape tpserve: $up"
python3 "$here/check_dashboard.py" "http://127.0.0.1:$PROMETHEUS_PORT" "$here/grafana/dashboards/tpserve.json" \
  --rate-window 1m | tee "$work/dashboard-queries.txt" || fail "dashboard queries without data"
log "PASS"
