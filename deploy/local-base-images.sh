#!/usr/bin/env bash
# Makes the base images the standard Dockerfile needs on a machine that reaches no container
# registry (only Debian's apt mirror): `debian:12` from debootstrap, and, with --cuda, a CUDA
# builder base (`localhost/tpserve-cuda-devel:13`) that is debian:12 plus this machine's
# /usr/local/cuda (nvcc, headers, libcudart; no cuBLAS/cuDNN/... since tpserve links only cudart).
# Where a registry is reachable none of this is needed: debian:12 comes from Docker Hub and the GPU
# builder installs CUDA from NVIDIA's apt repository (see the Dockerfile).
#
# Usage: deploy/local-base-images.sh [--cuda] [--force]
# Environment:
#   PODMAN       the podman command, e.g. "podman --root /tmp/s/root --runroot /tmp/s/run" (a private
#                store); default "podman"
#   CACHE_DIR    where the debootstrap tree is kept between runs (default /var/tmp/tpserve-base)
#   CUDA_HOME    the CUDA toolkit to copy (default /usr/local/cuda)
set -euo pipefail
read -r -a podman <<<"${PODMAN:-podman}"
cache=${CACHE_DIR:-/var/tmp/tpserve-base}
cuda_home=${CUDA_HOME:-/usr/local/cuda}
want_cuda=0
force=0
for arg in "$@"; do
  case $arg in
    --cuda) want_cuda=1 ;;
    --force) force=1 ;;
    *) echo "usage: $0 [--cuda] [--force]" >&2; exit 2 ;;
  esac
done

have_image() { "${podman[@]}" image exists "$1"; }

# The Debian mirror apt uses here (deb822 sources first, then the classic list).
mirror() {
  local uri
  uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' |
          grep -v security | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

if ((force)) || ! have_image docker.io/library/debian:12; then
  tree="$cache/bookworm-minbase"
  if [ ! -x "$tree/bin/bash" ] || ((force)); then
    rm -rf "$tree" && mkdir -p "$cache"
    echo "local-base-images: debootstrap bookworm from $(mirror) (about a minute)"
    debootstrap --variant=minbase bookworm "$tree" "$(mirror)" >"$cache/debootstrap.log" 2>&1 ||
      { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
    # The image's apt should use the same mirror as this machine (it may be the only one reachable).
    cp /etc/apt/sources.list.d/*.sources "$tree/etc/apt/sources.list.d/" 2>/dev/null || true
    if ls "$tree"/etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then rm -f "$tree/etc/apt/sources.list"; fi
    rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
  fi
  tar -C "$tree" -c . | "${podman[@]}" import -q --change 'CMD ["bash"]' - docker.io/library/debian:12 >/dev/null
  echo "local-base-images: docker.io/library/debian:12 imported"
fi

if ((want_cuda)) && { ((force)) || ! have_image localhost/tpserve-cuda-devel:13; }; then
  [ -x "$cuda_home/bin/nvcc" ] || { echo "local-base-images: no nvcc under $cuda_home" >&2; exit 1; }
  real=$(readlink -f "$cuda_home")
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  # Only what nvcc and CMake's FindCUDAToolkit use, and the one runtime library tpserve links.
  mkdir -p "$ctx/cuda/lib"
  (cd "$real" && cp -a bin include nvvm targets lib64 "$ctx/cuda/")
  if [ -d "$real/dist-info" ]; then cp -a "$real/dist-info" "$ctx/cuda/"; fi
  (cd "$real/lib" && cp -a cmake stubs libcudart* libcudadevrt.a libculibos.a "$ctx/cuda/lib/")
  cat >"$ctx/Containerfile" <<'EOF'
FROM docker.io/library/debian:12
COPY cuda /usr/local/cuda
ENV PATH=/usr/local/cuda/bin:$PATH CUDA_HOME=/usr/local/cuda
EOF
  "${podman[@]}" build --isolation chroot --format docker --pull=never --layers=false \
    -t localhost/tpserve-cuda-devel:13 -f "$ctx/Containerfile" "$ctx" >/dev/null
  echo "local-base-images: localhost/tpserve-cuda-devel:13 built from $real ($(du -sh "$ctx/cuda" | cut -f1))"
fi
