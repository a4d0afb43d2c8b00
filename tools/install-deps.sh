#!/usr/bin/env bash
# Installs, from Debian 12's packages, whatever the build and the tests need and is missing.
# Idempotent and quiet when everything is there. CUDA comes from /usr/local/cuda when present.
set -euo pipefail
packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libabsl-dev libgrpc++-dev libgrpc-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev
  prometheus-cpp-dev libopenblas-dev nlohmann-json3-dev libssl-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  openssl curl python3 zlib1g-dev
)
# What only the tests need: the deployment files' checks (deploy/validate/run.sh: YAML, shell,
# Prometheus config), the Python client tests, and Node.js + npm for the Node client tests (any
# node + npm will do: a machine with NodeSource's nodejs, which conflicts with Debian's npm package,
# keeps its own). The image's builder stage needs none of them: TPSERVE_DEPS=build skips them.
if [ "${TPSERVE_DEPS:-all}" != build ]; then
  packages+=(yamllint shellcheck prometheus python3-grpcio python3-grpc-tools python3-numpy python3-pytest)
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then packages+=(nodejs npm); fi
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
