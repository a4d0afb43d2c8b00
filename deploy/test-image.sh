#!/usr/bin/env bash
# Proves the CPU image: builds it with podman (private store), runs it as a user would, waits for
# its HEALTHCHECK, creates a model, runs Forward through the published gRPC port with tpctl and
# compares the result with a local `tpctl eval` of the same weights, scrapes /metrics, stops the
# container with SIGTERM (it must drain and exit 0), starts a new one on the same volume and finds
# the model again with the same weights.
#
# Usage: deploy/test-image.sh [--no-build]
# Environment: WORK_DIR (default /var/tmp/tpserve-image-test: podman store, files), IMAGE
# (default localhost/tpserve:cpu), BUILD_JOBS (2). Needs podman, runc, debootstrap (root).
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
[ "${1:-}" = --no-build ] && build=0

work=${WORK_DIR:-/var/tmp/tpserve-image-test}
image=${IMAGE:-localhost/tpserve:cpu}
store=${STORE_DIR:-$work/store}
mkdir -p "$store" "$work/io"
# The runtime flags CONTAINERS.md found necessary here (crun refuses the host's hybrid cgroups);
# a private store keeps the test away from other images.
podman=(podman --root "$store/root" --runroot "$store/run" --runtime runc --cgroup-manager cgroupfs)
run_flags=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
name=tpserve-image-test
volume=tpserve-image-test-models

log() { echo "test-image: $*"; }
fail() { echo "test-image: FAIL: $*" >&2; "${podman[@]}" logs "$name" 2>&1 | tail -n 20 >&2 || true; exit 1; }
cleanup() {
  "${podman[@]}" rm -f -t 0 "$name" >/dev/null 2>&1 || true
  "${podman[@]}" volume rm -f "$volume" >/dev/null 2>&1 || true
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# tpctl from the image, in a second container on the host network: it reaches the server through
# the published port, as a client outside would.
tpctl() { "${podman[@]}" run --rm "${run_flags[@]}" --no-healthcheck --network host -v "$work/io:/io" --entrypoint tpctl "$image" "$@"; }

if ((build)); then
  PODMAN="${podman[*]}" CACHE_DIR="$work/base" IMAGE="$image" BUILD_LOG="$work/build.log" deploy/build-image.sh cpu ||
    fail "image build (log: $work/build.log)"
fi

# ---- the image as built ----
size=$("${podman[@]}" image inspect --format '{{.Size}}' "$image")
log "image size $((size / 1000000)) MB"
[ "$("${podman[@]}" image inspect --format '{{.Config.User}}' "$image")" = "10001:10001" ] || fail "image user is not 10001"
"${podman[@]}" image inspect --format '{{json .Config.Healthcheck}}' "$image" | grep -q 'tpctl' ||
  fail "image has no HEALTHCHECK (built without --format docker?)"
"${podman[@]}" image inspect --format '{{json .Config.ExposedPorts}}' "$image" | grep -q '50051/tcp' || fail "50051 not exposed"
"${podman[@]}" image inspect --format '{{json .Config.ExposedPorts}}' "$image" | grep -q '9090/tcp' || fail "9090 not exposed"
"${podman[@]}" image inspect --format '{{index .Labels "org.opencontainers.image.revision"}}' "$image" | grep -q . ||
  fail "no org.opencontainers.image.revision label"
if "${podman[@]}" run --rm "${run_flags[@]}" --no-healthcheck --entrypoint bash "$image" -c \
    'command -v gcc || command -v cc || command -v c++ || command -v nvcc || command -v cmake'; then
  fail "the runtime image has a compiler"
fi

# ---- run it ----
grpc_port=$(free_port)
metrics_port=$(free_port)
cleanup
"${podman[@]}" volume create "$volume" >/dev/null
start_container() {
  # --health-interval=disable: the image's check stays, but podman sets no systemd timer for it.
  "${podman[@]}" run -d --name "$name" "${run_flags[@]}" --health-interval=disable \
    -p "127.0.0.1:$grpc_port:50051" -p "127.0.0.1:$metrics_port:9090" -v "$volume:/models" "$image" >/dev/null
  local t0 status
  t0=$(date +%s)
  # No systemd here, so health checks do not run on a timer: run the image's check on demand.
  until "${podman[@]}" healthcheck run "$name" >/dev/null 2>&1; do
    status=$("${podman[@]}" inspect --format '{{.State.Status}}' "$name" 2>/dev/null || echo gone)
    [ "$status" = running ] || fail "container $status before it was healthy"
    (($(date +%s) - t0 < 60)) || fail "not healthy after 60 s"
    sleep 0.5
  done
  log "healthy $(($(date +%s) - t0)) s after start ($("${podman[@]}" inspect --format '{{.State.Health.Status}}' "$name"))"
}
start_container
"${podman[@]}" logs "$name" 2>&1 | grep -q 'devices cpu' || fail "the CPU image did not serve on the CPU backend"

# ---- a model, Forward through the service vs the local eval ----
server=(--server "127.0.0.1:$grpc_port" --timeout 20)
irreps=(--irreps-in1 "8x0e + 8x1e + 4x2e" --irreps-in2 "4x0e + 4x1e" --irreps-out "8x0e + 8x1e + 8x2e")
rm -rf "${work:?}/io"/* && mkdir -p "$work/io/local" "$work/io/remote" && chmod -R a+rwX "$work/io"
python3 deploy/npy_tool.py random "$work/io/x1.npy" 16 52 1
python3 deploy/npy_tool.py random "$work/io/x2.npy" 16 16 2
tpctl create "${server[@]}" --model seeded "${irreps[@]}" --seed 7 >"$work/created.txt"
tpctl forward "${server[@]}" --model seeded --x1 /io/x1.npy --x2 /io/x2.npy --out /io/remote
tpctl get-weights "${server[@]}" --model seeded --out /io/w.npy
tpctl eval "${irreps[@]}" --weights /io/w.npy --x1 /io/x1.npy --x2 /io/x2.npy --out /io/local
err=$(python3 deploy/npy_tool.py relerr "$work/io/remote/out.npy" "$work/io/local/out.npy")
python3 -c "import sys; sys.exit(0 if float('$err') < 1e-5 else 1)" || fail "Forward vs tpctl eval: relative error $err"
log "Forward through the container = tpctl eval (relative error $err)"

# ---- /metrics through the published port ----
metrics=$(curl -fsS "http://127.0.0.1:$metrics_port/metrics") || fail "no /metrics"
grep -Eq '^tp_requests_total\{.*method="Forward".*\} [1-9]' <<<"$metrics" ||
  grep -Eq '^tp_requests_total\{.*code="OK".*method="Forward".*\} [1-9]' <<<"$metrics" || fail "/metrics counts no Forward"
grep -q '^tp_request_latency_seconds_bucket' <<<"$metrics" || fail "/metrics has no latency histogram"
log "/metrics: $(grep -c '^tp_' <<<"$metrics") tp_ samples"

# ---- SIGTERM drains; a new container on the same volume finds the model ----
t0=$(date +%s)
"${podman[@]}" stop -t 40 "$name" >/dev/null
stop_s=$(($(date +%s) - t0))
code=$("${podman[@]}" inspect --format '{{.State.ExitCode}}' "$name")
"${podman[@]}" logs "$name" 2>&1 | grep -q 'finishing calls in flight' || fail "no drain on SIGTERM"
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
log "SIGTERM: drained and exited 0 in ${stop_s} s"
"${podman[@]}" rm "$name" >/dev/null
start_container
tpctl get "${server[@]}" --model seeded >"$work/found.txt" || fail "model gone after the restart"
# Same name, version, spec and weight checksum (fnv1a64) as when it was created.
diff "$work/created.txt" "$work/found.txt" >&2 || fail "the model changed across the restart"
rm -rf "$work/io/remote2" && mkdir -p "$work/io/remote2" && chmod a+rwx "$work/io/remote2"
tpctl forward "${server[@]}" --model seeded --x1 /io/x1.npy --x2 /io/x2.npy --out /io/remote2
# Same numbers up to float32 rounding (OpenBLAS need not sum in the same order in a new process).
err=$(python3 deploy/npy_tool.py relerr "$work/io/remote2/out.npy" "$work/io/remote/out.npy")
python3 -c "import sys; sys.exit(0 if float('$err') < 1e-6 else 1)" || fail "Forward after the restart: relative error $err"
log "restarted on the same volume: model found with the same weights; Forward again (relative error $err)"
log "PASS"
