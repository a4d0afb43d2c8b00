#!/usr/bin/env bash
# Installs, from Debian 12's packages, whatever the build and the tests need and is missing.
# Idempotent and quiet when everything is there. CUDA comes from /usr/local/cuda when present.
set -euo pipefail
packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libabsl-dev libgrpc++-dev libgrpc-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev
  prometheus-cpp-dev libopenblas-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  openssl curl python3
)
# The checks of the deployment files (deploy/validate/run.sh, CTest deploy_files_test): YAML, shell,
# Prometheus config, and Node.js + npm (Debian's unless the machine has its own). The image's
# builder stage needs none of them: TPSERVE_DEPS=build skips them.
if [ "${TPSERVE_DEPS:-all}" != build ]; then
  packages+=(yamllint shellcheck prometheus)
  command -v npm >/dev/null || packages+=(nodejs npm)
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
