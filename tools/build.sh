#!/usr/bin/env bash
# Configures and builds the tree into build/ (or $BUILD_DIR). CUDA sources compile when nvcc is
# at /usr/local/cuda (no GPU needed); everything else needs only Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cuda_args=()
if [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda_args=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}" "$@" >/dev/null
# 2-core machines: two jobs; nvcc and gRPC headers are memory hungry but fit in 24 GB.
cmake --build "$build_dir" -j "${BUILD_JOBS:-2}"
