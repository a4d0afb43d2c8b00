#!/usr/bin/env bash
# Takes the binaries out of a built tpserve image (podman create + podman export) together with the
# shared libraries they load inside the image, into a folder that runs on a machine that has the
# NVIDIA driver but none of the image's Debian libraries (gRPC, Protobuf, Abseil, OpenBLAS, ...):
#   OUT/bin/    tpserve tpctl tp-load, and /opt/tpserve/extra/* (cuda_backend_test, tp-bench when
#               the image was built with EXTRA_TARGETS)
#   OUT/lib/    every library they load from the image (libcudart included), except glibc,
#               libstdc++ and libgcc_s, which the target machine has in newer versions
#   OUT/reference/  the e3nn reference cases the tests read (from ../shared/reference)
#   OUT/run-on-gpu.sh, OUT/npy_tool.py
# bin/ and lib/ are packed into OUT/payload.tar.gz (the libraries compress 3x; OpenBLAS alone is 36
# MB), which run-on-gpu.sh unpacks, so that the folder stays well under the device's 64 MiB.
# Usage: deploy/gpu/bundle-from-image.sh [IMAGE] [OUT]   (default localhost/tpserve:gpu, build-gpu-image)
# Environment: PODMAN (podman command with store flags).
set -euo pipefail
cd "$(dirname "$0")/../.."
read -r -a podman <<<"${PODMAN:-podman}"
image=${1:-localhost/tpserve:gpu}
out=${2:-build-gpu-image}
rootfs=$(mktemp -d)
name="tpserve-bundle-$$"
cleanup() { "${podman[@]}" rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$rootfs"; }
trap cleanup EXIT
"${podman[@]}" create --name "$name" "$image" >/dev/null
"${podman[@]}" export "$name" | tar -x -C "$rootfs" 2>/dev/null
rm -rf "$out" && mkdir -p "$out/bin" "$out/lib" "$out/reference"
bins=("$rootfs"/usr/local/bin/* "$rootfs"/opt/tpserve/extra/*)
for bin in "${bins[@]}"; do
  [ -f "$bin" ] || continue
  cp "$bin" "$out/bin/"
  # The image's own loader resolves the libraries, inside the exported tree.
  chroot "$rootfs" /usr/bin/ldd "${bin#"$rootfs"}" | awk '$3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r soname path; do
  case $soname in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libstdc++.so*|libgcc_s.so*) continue ;;
  esac
  cp -L "$rootfs$path" "$out/lib/$soname"
done
cp ../shared/reference/*.json "$out/reference/" 2>/dev/null || cp /work/shared/reference/*.json "$out/reference/" 2>/dev/null ||
  echo "bundle: no ../shared/reference: the CUDA backend tests that compare with e3nn will fail" >&2
cp deploy/gpu/run-on-gpu.sh deploy/npy_tool.py "$out/"
"${podman[@]}" image inspect --format '{{index .Labels "org.opencontainers.image.revision"}}' "$image" >"$out/REVISION"
echo "bundle: $(cd "$out/bin" && echo *): $(du -sh "$out/bin" | cut -f1) binaries, $(du -sh "$out/lib" | cut -f1) libraries"
tar -C "$out" -czf "$out/payload.tar.gz" bin lib && rm -rf "${out:?}/bin" "${out:?}/lib"
echo "bundle: $out is $(du -sh "$out" | cut -f1) (payload.tar.gz $(du -sh "$out/payload.tar.gz" | cut -f1))"
