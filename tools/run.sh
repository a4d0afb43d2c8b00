#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs the main job: the server
# with a demo model (GPU backend where a GPU is present, CPU otherwise). Until the server is built,
# tpctl bench on the seed task.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh
build_dir=${BUILD_DIR:-build}
if [ -x "$build_dir/bin/tp-server" ]; then
  exec "$build_dir/bin/tp-server" --model_dir "${TPSERVE_MODEL_DIR:-$PWD/models}" --demo_model seed "$@"
fi
exec "$build_dir/bin/tpctl" bench --backend cpu --batch 64 --iters 5
