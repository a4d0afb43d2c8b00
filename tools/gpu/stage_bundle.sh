#!/usr/bin/env bash
# Here (the build machine): packs programs of a build with their shared libraries as a bundle for
# the GPU scripts (tools/gpu/bundle.sh): bin/PROGRAM... and libs/, as one .tar.xz (xz keeps two
# bundles, OpenBLAS included, well inside what one device call may carry).
#
#   tools/gpu/stage_bundle.sh BUILD_DIR OUT.tar.xz [PROGRAM...]    # default: tpserve tp-load
set -euo pipefail
build=${1:?usage: stage_bundle.sh BUILD_DIR OUT.tar.xz [PROGRAM...]}
out=${2:?usage: stage_bundle.sh BUILD_DIR OUT.tar.xz [PROGRAM...]}
shift 2
programs=("$@")
[ ${#programs[@]} -gt 0 ] || programs=(tpserve tp-load)
here=$(cd "$(dirname "$0")/../.." && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin"
for p in "${programs[@]}"; do cp "$build/bin/$p" "$stage/bin/"; done
bundler=${BUNDLE_RUNTIME_LIBS:-$here/../shared/tools/bundle-runtime-libs}  # the repository's sibling shared/
"$bundler" "$stage/libs" "$stage"/bin/* > /dev/null
mkdir -p "$(dirname "$out")"
tar cJf "$out" -C "$stage" bin libs
du -h "$out"
