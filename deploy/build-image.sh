#!/usr/bin/env bash
# Builds the tpserve image with podman on a machine without a registry: makes the local base
# images first (deploy/local-base-images.sh), then runs the standard Dockerfile.
#
# Usage: deploy/build-image.sh cpu|gpu [extra podman build args...]
#   tags localhost/tpserve:cpu or localhost/tpserve:gpu (IMAGE overrides); prints time and size.
# Environment: PODMAN (podman command with store flags, default "podman"), BUILD_JOBS (2),
#   CACHE_DIR (debootstrap tree), BUILD_LOG (default: stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:?usage: deploy/build-image.sh cpu|gpu [podman build args...]}
shift
read -r -a podman <<<"${PODMAN:-podman}"
image=${IMAGE:-localhost/tpserve:$variant}
base_args=()
case $variant in
  cpu) deploy/local-base-images.sh ;;
  gpu)
    deploy/local-base-images.sh --cuda
    base_args=(--build-arg BUILDER_BASE=localhost/tpserve-cuda-devel:13)
    ;;
  *) echo "build-image: expected cpu or gpu, got '$variant'" >&2; exit 2 ;;
esac
# A build killed earlier leaves a buildah working container behind.
"${podman[@]}" rm -f --all --external >/dev/null 2>&1 || true
start=$(date +%s)
build=("${podman[@]}" build --isolation chroot --format docker --pull=never --layers=true
  --build-arg "VARIANT=$variant" "${base_args[@]}" --build-arg "BUILD_JOBS=${BUILD_JOBS:-2}"
  --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  --build-arg "VERSION=$(git describe --always --dirty 2>/dev/null || echo dev)"
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  --build-arg "SOURCE=$(git config --get remote.origin.url 2>/dev/null || echo unknown)"
  "$@" -t "$image" -f Dockerfile .)
if [ -n "${BUILD_LOG:-}" ]; then
  "${build[@]}" >"$BUILD_LOG" 2>&1 || { tail -n 40 "$BUILD_LOG" >&2; exit 1; }
else
  "${build[@]}"
fi
size=$("${podman[@]}" image inspect --format '{{.Size}}' "$image")
echo "build-image: $image built in $(($(date +%s) - start)) s, $((size / 1000000)) MB"
