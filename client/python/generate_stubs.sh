#!/usr/bin/env bash
# Generates the Python messages and gRPC stubs of tp.v1 from proto/ into OUT_DIR (a directory to
# put on PYTHONPATH next to client/python), with Debian's python3-grpc-tools. Nothing generated
# is checked in: the build (CMake target tp_python_stubs) and the tests run this.
#   client/python/generate_stubs.sh OUT_DIR [PYTHON]
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 OUT_DIR [PYTHON]" >&2
  exit 2
fi
out_dir=$1
python=${2:-${TPSERVE_PYTHON:-/usr/bin/python3}}
proto_dir="$(cd "$(dirname "$0")/../../proto" && pwd)"
if ! "$python" -c "import grpc_tools.protoc" 2>/dev/null; then
  echo "generate_stubs: $python cannot import grpc_tools (Debian: apt-get install python3-grpc-tools;" \
       "tools/install-deps.sh installs it)" >&2
  exit 1
fi
mkdir -p "$out_dir"
# Only tp.v1: a generated grpc/health/ directory would sit next to (and confuse) the grpc package.
"$python" -m grpc_tools.protoc -I "$proto_dir" --python_out="$out_dir" --grpc_python_out="$out_dir" \
  "$proto_dir/tp/v1/tensor_product.proto"
