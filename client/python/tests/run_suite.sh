#!/usr/bin/env bash
# The Python client's test suite as one CTest test (python_client_test): generates the stubs from
# proto/ into WORK_DIR, runs pytest on Debian's python3 (the tests start their own tpserve
# processes: CPU backend, loopback, free ports) and fails unless every test ran and passed.
#   client/python/tests/run_suite.sh TPSERVE_BIN WORK_DIR
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 TPSERVE_BIN WORK_DIR" >&2
  exit 2
fi
tpserve_bin=$1
work_dir=$2
tests_dir="$(cd "$(dirname "$0")" && pwd)"
package_dir="$(dirname "$tests_dir")"
# Debian's interpreter: python3-grpcio, python3-numpy and python3-pytest are installed for it (a
# python3 earlier on PATH, e.g. pyenv's, does not see them).
python=${TPSERVE_PYTHON:-/usr/bin/python3}
if ! "$python" -c "import grpc, grpc_tools, numpy, pytest" 2>/dev/null; then
  echo "run_suite: $python lacks grpc, grpc_tools, numpy or pytest; tools/install-deps.sh installs" \
       "python3-grpcio python3-grpc-tools python3-numpy python3-pytest" >&2
  exit 1
fi
rm -rf "$work_dir"
mkdir -p "$work_dir"
"$package_dir/generate_stubs.sh" "$work_dir/gen" "$python"

export TPSERVE_BIN="$tpserve_bin"
export PYTHONPATH="$package_dir:$work_dir/gen${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPYCACHEPREFIX="$work_dir/pycache"  # nothing written into the source tree
export TPSERVE_REFERENCE_DIR="${TPSERVE_REFERENCE_DIR:-$(cd "$package_dir/../../.." && pwd)/shared/reference}"
junit="$work_dir/junit.xml"
status=0
"$python" -m pytest "$tests_dir" -p no:cacheprovider -q -rfEs --basetemp="$work_dir/tmp" \
  --junitxml="$junit" || status=$?
if [ "$status" -ne 0 ]; then
  # 5 is pytest's "no tests collected": as much a failure here as a failed test.
  reason=""
  [ "$status" -eq 5 ] && reason=" (no tests collected)"
  echo "run_suite: pytest exited with $status$reason" >&2
  exit "$status"
fi
# Passing is not enough: every test must have run (a skip or an empty collection would hide a
# suite that no longer tests anything).
"$python" - "$junit" <<'PY'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
minimum = 30
print(f"run_suite: {tests} tests, {skipped} skipped, {failed} failed")
if tests < minimum or skipped or failed:
    sys.exit(f"run_suite: expected at least {minimum} tests, none skipped or failed")
PY
