#!/usr/bin/env bash
# On the GPU machine: the QM9 network on CUDA (nn/cuda/, issue 19 items 1, 3 and 5). Runs
# qm9_cuda_network_test (the CUDA network against the CPU fp64 network, and against e3nn's numbers in
# tests/data/qm9), then qm9-bench at the four shapes on the issue's batch shape (27 molecules, 486
# atoms, 918 directed edges): fp32 with the per-species FCTPs launched and as a CUDA graph, the dense
# FCTPs as a graph (three smaller shapes), tf32 as a graph; then, in the same call and on the same batch, the e3nn (PyTorch) anchor
# (tools/qm9_reference/qm9_anchor_bench.py, when python3 has torch and e3nn), the e3nn-jax anchor
# (qm9_anchor_jax.py, only when E3NN_JAX_SRC is given) and ours against them
# (tools/qm9_reference/compare_bench.py); compute-sanitizer memcheck on two small test cases if time
# is left. About 200 s at most.
#
#   tools/gpu/qm9_gpu.sh BUNDLE_DIR [E3NN_JAX_SRC]     (cwd: anywhere; the repository is this script's)
#
# BUNDLE_DIR holds bin/ (qm9_cuda_network_test, qm9-bench) and libs/ (../shared/tools/bundle-runtime-libs);
# E3NN_JAX_SRC a copy of e3nn-jax's source (never committed), put on PYTHONPATH for the jax anchor.
# Results in $OUT (default /tmp/qm9-gpu): summary.txt (everything printed), the five qm9-bench JSON
# files, anchor_torch.json / anchor_jax.json and compare.txt / compare.md.
set -u
dir=${1:?usage: qm9_gpu.sh BUNDLE_DIR [E3NN_JAX_SRC]}
jax_src=${2:-}
repo=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/qm9-gpu}
BUDGET=${BUDGET:-195}  # seconds for the whole call; the optional steps take what is left
mkdir -p "$OUT"
# nothing from an earlier call in the comparison
rm -f "$OUT"/{species,species_graph,dense,dense_graph}_fp32.json "$OUT"/species_graph_tf32.json \
  "$OUT"/anchor_{torch,jax}.json "$OUT"/compare.{txt,md} "$OUT"/batch.json
summary="$OUT/summary.txt"
: > "$summary"
log() { echo "$@" | tee -a "$summary"; }
run_in() {  # run_in SECONDS PROGRAM ARGS...
  local seconds=$1 prog=$2; shift 2
  timeout "$seconds" env LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64" "$dir/bin/$prog" "$@"
}
# the e3nn cases, read from the repository rather than the build machine's path compiled in
export TPSERVE_QM9_DATA_DIR="$repo/tests/data/qm9"
start=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv 2>&1 | tee -a "$summary"

log "== qm9_cuda_network_test"
run_in 40 qm9_cuda_network_test > "$OUT/test.txt" 2>&1
log "qm9_cuda_network_test: exit $?"
grep -E "relative error|SGD step|vs e3nn|^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure|Expected|Which is|error" "$OUT/test.txt" | head -60 | tee -a "$summary"
mv "$OUT/test.txt" "/tmp/qm9_test_full.txt"

bench() {  # bench SECONDS JSON_NAME TITLE ARGS...
  local seconds=$1 name=$2 title=$3; shift 3
  log "== qm9-bench $title ($(( $(date +%s) - start )) s used so far)"
  run_in "$seconds" qm9-bench --iters 30 --warmup 3 --json "$OUT/$name.json" "$@" 2>&1 | tee -a "$summary"
  log "exit ${PIPESTATUS[0]}"
}
# the first run saves its batch: the anchors below time the same molecules (--batch_json)
bench 15 species_fp32 "fp32, per-species FCTPs, launched" --fctp species --save_batch "$OUT/batch.json"
bench 15 species_graph_fp32 "fp32, per-species FCTPs, CUDA graph" --fctp species --graph
# dense FCTPs do 5x the per-species work at 2x512 (over 20 s for 30 steps): the three smaller shapes
bench 20 dense_graph_fp32 "fp32, dense FCTPs, CUDA graph" --fctp dense --graph --shapes 1x128,1x256,2x128
bench 15 species_graph_tf32 "tf32, per-species FCTPs, CUDA graph" --fctp species --graph --precision tf32

left() { echo $(( BUDGET - ($(date +%s) - start) )); }
batch_arg=""; [ -s "$OUT/batch.json" ] && batch_arg="--batch_json $OUT/batch.json"

# e3nn (PyTorch) on the same GPU: 20 runs per shape (its steps take 70-400 ms)
if python3 -c "import torch, e3nn" > /dev/null 2>&1; then
  seconds=$(( $(left) - 30 < 90 ? $(left) - 30 : 90 ))
  log "== e3nn (PyTorch) anchor, ${seconds} s at most ($(( $(date +%s) - start )) s used so far)"
  if [ "$seconds" -gt 20 ]; then
    timeout "$seconds" python3 "$repo/tools/qm9_reference/qm9_anchor_bench.py" --json "$OUT/anchor_torch.json" \
      $batch_arg --molecules 27 --runs 20 --warmup 3 2>&1 | tee -a "$summary"
    log "exit ${PIPESTATUS[0]}"
  else
    log "skipped: not enough time left"
  fi
else
  log "== e3nn (PyTorch) anchor skipped: python3 cannot import torch and e3nn"
fi

# e3nn-jax: only with its source given; XLA compiles each shape first (25-90 s), so the anchor stops
# starting shapes when its time is up and keeps the shapes it finished
jax_tool="$repo/tools/qm9_reference/qm9_anchor_jax.py"
if [ -n "$jax_src" ] && [ -f "$jax_tool" ]; then
  seconds=$(( $(left) - 10 ))
  log "== e3nn-jax anchor, ${seconds} s at most ($(( $(date +%s) - start )) s used so far)"
  if [ "$seconds" -gt 30 ]; then
    PYTHONPATH="$jax_src${PYTHONPATH:+:$PYTHONPATH}" timeout "$seconds" python3 "$jax_tool" \
      --json "$OUT/anchor_jax.json" $batch_arg --molecules 27 --runs 20 --warmup 3 --max_seconds $(( seconds - 30 )) \
      2>&1 | tee -a "$summary"
    log "exit ${PIPESTATUS[0]}"
  else
    log "skipped: not enough time left"
  fi
fi

log "== ours against the anchors (median ms; the same batch when batch.json was saved, see nodes / edges)"
compare=(python3 "$repo/tools/qm9_reference/compare_bench.py"
  --ours "per-species fp32 graph=$OUT/species_graph_fp32.json"
  --ours "per-species tf32 graph=$OUT/species_graph_tf32.json"
  --ours "dense fp32 graph=$OUT/dense_graph_fp32.json"
  --anchor "e3nn torch=$OUT/anchor_torch.json" --anchor "e3nn-jax=$OUT/anchor_jax.json")
"${compare[@]}" 2>&1 | tee "$OUT/compare.txt" | tee -a "$summary"
"${compare[@]}" --markdown > "$OUT/compare.md" 2>&1

elapsed=$(( $(date +%s) - start ))
if [ "$(left)" -ge 30 ] && command -v compute-sanitizer > /dev/null; then
  log "== compute-sanitizer memcheck (lmax 1, both FCTP modes; ${elapsed}s used so far)"
  LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64" timeout "$(left)" compute-sanitizer --tool memcheck \
    --error-exitcode 9 "$dir/bin/qm9_cuda_network_test" --gtest_filter='LmaxAndFctp/*/0:LmaxAndFctp/*/1' \
    > /tmp/qm9_memcheck.txt 2>&1
  log "memcheck: exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' /tmp/qm9_memcheck.txt) clean summaries)"
  grep -E "Invalid|ERROR SUMMARY|at 0x|by thread" /tmp/qm9_memcheck.txt | head -12 | tee -a "$summary"
else
  log "== compute-sanitizer memcheck skipped ($(command -v compute-sanitizer > /dev/null || echo 'not installed; ')${elapsed}s used, budget ${BUDGET}s)"
fi
{ echo; echo "== full test output"; cat /tmp/qm9_test_full.txt; } >> "$summary"
log "total $(( $(date +%s) - start )) s"
