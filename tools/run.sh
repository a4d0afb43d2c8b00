#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs the main job: the server
# with a demo model (GPU backend where a GPU is present, CPU otherwise). Without gRPC (a build with
# -DTPSERVE_BUILD_SERVER=OFF), tpctl bench on the seed task instead.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh
build_dir=${BUILD_DIR:-build}
if [ -x "$build_dir/bin/tpserve" ]; then
  # Backend "auto": one worker per GPU, or the CPU backend where there is none.
  exec "$build_dir/bin/tpserve" --model_dir "${TPSERVE_MODEL_DIR:-$PWD/models}" --demo_model seed "$@"
fi
exec "$build_dir/bin/tpctl" bench --backend cpu --batch 64 --iters 5
