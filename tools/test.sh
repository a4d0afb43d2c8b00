#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything, runs every test.
# GPU tests skip (and are reported as skipped) on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "${TEST_JOBS:-2}" --timeout 600
