#!/usr/bin/env bash
# CI check of the deployment files (CTest: deploy_files_test); no image is built here (see
# deploy/README.md: builds take longer than CI should spend). Installs its npm packages from the
# committed package-lock.json on first use. Fails on the first kind of check that finds a problem.
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in node npm yamllint shellcheck promtool python3; do
  command -v "$tool" >/dev/null || { echo "deploy-validate: $tool missing (tools/install-deps.sh installs it)" >&2; exit 1; }
done
if [ ! -f deploy/validate/node_modules/.package-lock.json ] ||
   ! cmp -s deploy/validate/package-lock.json deploy/validate/node_modules/.lock-installed; then
  (cd deploy/validate && npm ci --no-audit --no-fund --loglevel=error >/dev/null &&
     cp package-lock.json node_modules/.lock-installed)
fi
echo "== yamllint"
yamllint -s -c deploy/.yamllint.yaml deploy/
echo "== shell scripts: bash -n and shellcheck"
scripts=(deploy/*.sh deploy/compose/*.sh deploy/validate/*.sh)
for s in "${scripts[@]}"; do bash -n "$s"; done
shellcheck "${scripts[@]}"
echo "== python helpers"
python3 -m py_compile deploy/npy_tool.py deploy/compose/check_dashboard.py deploy/validate/check_dockerfile.py
echo "== Dockerfiles"
python3 deploy/validate/check_dockerfile.py . Dockerfile --main server/main.cc
python3 deploy/validate/check_dockerfile.py . deploy/compose/prometheus/Dockerfile
echo "== Prometheus configuration"
promtool check config deploy/compose/prometheus/prometheus.yml
echo "== Kubernetes manifests, Compose files, dashboard"
node deploy/validate/validate.mjs .
if [ "${1:-}" != --no-self-test ]; then
  echo "== the checks catch broken files"
  node deploy/validate/self_test.mjs .
fi
