#!/usr/bin/env bash
# CTest's kserve_node_client: installs the locked npm packages (npm ci, from the npm registry)
# into a copy of this folder under the build tree, then runs the test against a live tpserve.
#   run_test.sh TPSERVE_BINARY SOURCE_DIR REFERENCE_DIR WORK_DIR
set -euo pipefail
tpserve=$1 source_dir=$2 reference_dir=$3 work_dir=$4
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$work_dir"
cp "$here/package.json" "$here/package-lock.json" "$here/kserve_client_test.js" "$work_dir/"
cd "$work_dir"
# Reinstall only when the lock file changed since the last install.
if ! cmp -s package-lock.json node_modules/.tpserve-installed-lock 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.tpserve-installed-lock
fi
exec node kserve_client_test.js "$tpserve" "$source_dir" "$reference_dir"
