#!/usr/bin/env bash
# On the GPU machine: the weight gradient on wgmma against the one on mma.sync (tp-bench / backend
# option weight_grad_kernel=wgmma | mma; the default, auto, takes wgmma for fp32 and for tf32 from
# kWeightGradWgmmaTf32MinBatch samples), in one call, inside one time budget:
#   1. cuda_backend_test's wgmma weight-gradient tests (each dW check prints its error; a failing one
#      prints per path the error and the first bad element);
#   2. tp-bench of the seed task (dw_sum_tanh = LossGradient sum tanh, grad_weight only), the forward
#      and Backward with grad_weight only (backward_dw) at BATCHES in fp32 and tf32, the two kernels
#      alternated, ROUNDS rounds (round 1 verifies every batch <= 1024 against the float64 CPU; later
#      rounds batch 64, and larger batches against the CUDA fp32 result), then one table;
#   3. the rest of cuda_backend_test (TESTS=wgmma skips it);
#   4. SANITIZE=1: compute-sanitizer memcheck and racecheck on the small-plan wgmma test;
#   5. NCU=1: ncu of both kernels (seed task, batch 64, fp32 and tf32).
# Each step gets what is left of BUDGET seconds (default 560; the device tool stops a command at
# 600) and is skipped when too little is left. At most 5 files come back under $OUT (the tool
# returns 8): summary.txt, tests.txt, bench.txt, sanitize.txt, ncu.txt.
#
#   OUT=$OUT tools/gpu/wgrad_check.sh DIR
#
# DIR holds bin/ (tp-bench, cuda_backend_test of an sm_90a build), libs/ (from
# ../shared/tools/bundle-runtime-libs) and reference/ (the e3nn reference cases), as kernel_ab.sh's.
# Environment: OUT (default /tmp/wgrad-check), BATCHES (64,256,1024,4096), ROUNDS (2), RUNS (40),
# BUDGET (560), TESTS=wgmma, SANITIZE=1, NCU=1.
set -u
dir=${1:?usage: wgrad_check.sh DIR}
OUT=${OUT:-/tmp/wgrad-check}
BATCHES=${BATCHES:-64,256,1024,4096}
ROUNDS=${ROUNDS:-2}
RUNS=${RUNS:-40}
deadline=$(( $(date +%s) + ${BUDGET:-560} ))
work=$(mktemp -d /tmp/wgrad-work.XXXXXX)
mkdir -p "$OUT"
summary=$OUT/summary.txt
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$summary" 2>&1
cat "$summary"
export TPSERVE_REFERENCE_DIR="$dir/reference"
export LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64"

note() { echo "$*" | tee -a "$summary"; }
# limit WANTED MINIMUM: WANTED seconds, or what is left before the deadline (0 if under MINIMUM).
limit() { local left=$(( deadline - $(date +%s) - 5 )); [ "$left" -lt "$2" ] && { echo 0; return; }
          [ "$left" -lt "$1" ] && echo "$left" || echo "$1"; }
summarize_test() {  # the verdict lines, then every failure with its message (per-path report included)
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|usable on this device" "$1" | head -30
  grep -E -A14 "Failure$" "$1" | head -120
}
run_test() {  # run_test NAME WANTED MINIMUM GTEST_ARGS...
  local name=$1 s; s=$(limit "$2" "$3"); shift 3
  if [ "$s" = 0 ]; then note "cuda_backend_test ($name): skipped, out of time"; return; fi
  local t0; t0=$(date +%s)
  timeout "$s" "$dir/bin/cuda_backend_test" "$@" > "$work/test_$name.txt" 2>&1
  note "cuda_backend_test ($name): exit $? in $(( $(date +%s) - t0 )) s (limit $s s)"
  summarize_test "$work/test_$name.txt" | tee -a "$summary"
  { echo "===== $name"; cat "$work/test_$name.txt"; } >> "$OUT/tests.txt"
}

run_test wgmma 200 30 --gtest_filter='WgmmaWeightGrad*'
grep -E "^  batch " "$work/test_wgmma.txt" | tee -a "$summary"

for round in $(seq "$ROUNDS"); do
  verify=1024; [ "$round" = 1 ] || verify=64
  for k in wgmma mma; do
    s=$(limit 120 40)
    if [ "$s" = 0 ]; then note "tp-bench $k round $round: skipped, out of time"; continue; fi
    t0=$(date +%s)
    timeout "$s" "$dir/bin/tp-bench" --weight_grad_kernel $k --backward --batches "$BATCHES" --precisions fp32,tf32 \
      --runs "$RUNS" --verify_max_batch $verify --json "$work/bench_${k}_$round.json" > "$work/bench_${k}_$round.txt" 2>&1
    note "tp-bench $k round $round: exit $? in $(( $(date +%s) - t0 )) s"
    grep -E "FAILED|dW by path|^    path" "$work/bench_${k}_$round.txt" | head -40 | tee -a "$summary"
    { echo "===== $k round $round"; cat "$work/bench_${k}_$round.txt"; } >> "$OUT/bench.txt"
  done
done
# One table: task, precision, batch, then median (min) ms per kernel and round, and wgmma / mma.
python3 - "$work" <<'EOF' | tee -a "$summary"
import glob, json, os, sys
out = sys.argv[1]
rows = {}
for path in sorted(glob.glob(os.path.join(out, "bench_*_*.json"))):
    name = os.path.basename(path)[len("bench_"):-len(".json")]
    try:
        records = json.load(open(path))["results"]
    except Exception as e:
        print(f"{path}: {e}"); continue
    for r in records:
        if r.get("backend") != "cuda":
            continue
        rows.setdefault((r["task"], r["precision"], r["batch"]), {})[name] = r
cols = sorted({c for v in rows.values() for c in v})
print("task precision batch | " + " | ".join(cols) + " | wgmma/mma (mean of medians) | floor | rel_err wgmma_1 / mma_1")
for key in sorted(rows):
    v = rows[key]
    cells = [f"{v[c]['median_ms']:.4f} ({v[c]['min_ms']:.4f})" if c in v else "-" for c in cols]
    med = lambda k: [v[c]["median_ms"] for c in cols if c.startswith(k + "_") and c in v]
    ratio = sum(med("wgmma")) / len(med("wgmma")) / (sum(med("mma")) / len(med("mma"))) if med("wgmma") and med("mma") else float("nan")
    any_v = next(iter(v.values()))
    errs = " / ".join(f"{v[c]['rel_error']}" if c in v else "-" for c in ("wgmma_1", "mma_1"))
    print(f"{key[0]} {key[1]} {key[2]} | " + " | ".join(cells) + f" | {ratio:.3f} | {any_v.get('floor_ms')} | {errs}")
EOF

[ "${TESTS:-all}" = wgmma ] || run_test rest 240 60 --gtest_brief=1 --gtest_filter='-WgmmaWeightGrad*'

if [ "${SANITIZE:-0}" = 1 ]; then
  for tool in memcheck racecheck; do
    s=$(limit 120 30)
    if [ "$s" = 0 ]; then note "compute-sanitizer $tool: skipped, out of time"; continue; fi
    timeout "$s" compute-sanitizer --tool $tool --error-exitcode 9 "$dir/bin/cuda_backend_test" \
      --gtest_filter='WgmmaWeightGradTest.SmallPlan*' > "$work/sanitize_$tool.txt" 2>&1
    note "compute-sanitizer $tool: exit $? ($(grep -cE "ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards" "$work/sanitize_$tool.txt") clean summaries)"
    { echo "===== $tool"; tail -40 "$work/sanitize_$tool.txt"; } >> "$OUT/sanitize.txt"
  done
fi

if [ "${NCU:-0}" = 1 ]; then
  for k in wgmma mma; do
    s=$(limit 90 30)
    if [ "$s" = 0 ]; then note "ncu $k: skipped, out of time"; continue; fi
    timeout "$s" ncu --clock-control none -k regex:WeightGrad --launch-skip 2 --launch-count 8 \
      --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
      --section MemoryWorkloadAnalysis "$dir/bin/tp-bench" --weight_grad_kernel $k \
      --batches 64 --precisions fp32,tf32 --runs 3 --warmup 1 --verify_max_batch 0 > "$work/ncu_$k.txt" 2>&1
    note "ncu $k: exit $?"
    { echo "===== $k"; cat "$work/ncu_$k.txt"; } >> "$OUT/ncu.txt"
  done
fi
note "done, $(( deadline - $(date +%s) )) s of the budget left"
