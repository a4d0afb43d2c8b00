#!/usr/bin/env bash
# On the GPU machine: the CUDA tests of a build, tp-bench over every batch size and precision, and
# the anchors (e3nn-jax, e3nn on PyTorch) on the same GPU in the same call, then ours against the
# best anchor per case (tools/anchors/compare.py).
#
#   tools/gpu/kernels_and_anchors.sh BUILD_DIR E3NN_JAX_SRC
#
# BUILD_DIR holds bin/ (tp-bench, cuda_backend_test), libs/ and reference/; E3NN_JAX_SRC a copy of
# e3nn-jax's source (never committed). Environment: OUT, BATCHES, RUNS, JAX_BATCHES, TORCH_BATCHES,
# JAX_SECONDS (200), TORCH_SECONDS (90): stop starting new anchor cases after that many seconds.
set -u
dir=${1:?usage: kernels_and_anchors.sh BUILD_DIR E3NN_JAX_SRC}
jax_src=${2:?usage: kernels_and_anchors.sh BUILD_DIR E3NN_JAX_SRC}
OUT=${OUT:-/tmp/kernels-and-anchors}
BATCHES=${BATCHES:-1,8,64,256,1024,4096,16384}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
if [ -x "$dir/bin/cuda_backend_test" ]; then  # a bundle without it (tested in an earlier call) skips it
  TPSERVE_REFERENCE_DIR="$dir/reference" timeout 300 "$dir/bin/cuda_backend_test" --gtest_brief=1 \
    > "$OUT/cuda_backend_test.txt" 2>&1
  echo "cuda_backend_test: exit $?"; grep -E "^\[  (PASSED|FAILED) |FAILED  \]" "$OUT/cuda_backend_test.txt"
fi
timeout 200 "$dir/bin/tp-bench" --batches "$BATCHES" --precisions fp32,tf32,bf16 --runs "${RUNS:-50}" \
  --json "$OUT/ours.json" > "$OUT/tp-bench.txt" 2>&1
echo "tp-bench: exit $?"
PYTHONPATH="$jax_src" timeout $(( ${JAX_SECONDS:-200} + 40 )) python3 tools/anchors/anchor_bench.py --framework jax --variants tp_linear \
  --batches "${JAX_BATCHES:-$BATCHES}" --runs "${RUNS:-50}" --max_seconds "${JAX_SECONDS:-200}" --json "$OUT/jax.json" \
  > "$OUT/jax.txt" 2>&1
echo "e3nn-jax: exit $?"
timeout $(( ${TORCH_SECONDS:-90} + 30 )) python3 tools/anchors/anchor_bench.py --framework torch --batches "${TORCH_BATCHES:-64,1024}" \
  --runs 20 --max_seconds "${TORCH_SECONDS:-90}" --json "$OUT/torch.json" > "$OUT/torch.txt" 2>&1
echo "e3nn-torch: exit $?"
python3 tools/anchors/compare.py "$OUT/ours.json" "$OUT/jax.json" "$OUT/torch.json" | tee "$OUT/compare.txt"
python3 tools/anchors/compare.py "$OUT/ours.json" "$OUT/jax.json" "$OUT/torch.json" --markdown > "$OUT/compare.md"
