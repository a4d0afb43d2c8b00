#!/usr/bin/env bash
# On the GPU machine: the CUDA tests of a new build, then a same-call A/B of tp-bench between a base
# and a new build, alternating base/new per round so drift hits both alike.
#
#   tools/gpu/kernel_ab.sh NEW_DIR [BASE_DIR]
#
# Each DIR holds bin/ (tp-bench; cuda_backend_test in NEW_DIR) and libs/ (from
# ../shared/tools/bundle-runtime-libs); NEW_DIR/reference holds the e3nn reference cases for the tests.
# Environment: OUT (results; default /tmp/kernel-ab), BATCHES, PRECISIONS, RUNS, ROUNDS, TP_BENCH_FLAGS
# (extra tp-bench flags for both, e.g. "--forward_kernel factored-mma"), SANITIZE=1 (compute-sanitizer
# memcheck and racecheck on a small test filter).
set -u
new=${1:?usage: kernel_ab.sh NEW_DIR [BASE_DIR]}
base=${2:-}
OUT=${OUT:-/tmp/kernel-ab}
BATCHES=${BATCHES:-1,8,64,256,1024,4096,16384}
PRECISIONS=${PRECISIONS:-fp32,tf32,bf16}
RUNS=${RUNS:-50}
ROUNDS=${ROUNDS:-2}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

run_in() {  # run_in SECONDS DIR PROGRAM ARGS...: a program of DIR with DIR's libraries, time-limited
  local seconds=$1 dir=$2 prog=$3; shift 3
  timeout "$seconds" env LD_LIBRARY_PATH="$dir/libs:/usr/local/cuda/lib64" "$dir/bin/$prog" "$@"
}

if [ -x "$new/bin/cuda_backend_test" ]; then
  TPSERVE_REFERENCE_DIR="$new/reference" run_in 400 "$new" cuda_backend_test --gtest_brief=1 \
    > "$OUT/cuda_backend_test.txt" 2>&1
  echo "cuda_backend_test: exit $?"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]" "$OUT/cuda_backend_test.txt" | head -20
  if [ "${SANITIZE:-0}" = 1 ]; then
    for tool in memcheck racecheck; do
      TPSERVE_REFERENCE_DIR="$new/reference" LD_LIBRARY_PATH="$new/libs:/usr/local/cuda/lib64" timeout 300 \
        compute-sanitizer --tool $tool --error-exitcode 9 "$new/bin/cuda_backend_test" \
        --gtest_filter='*ReferenceCaseIrreps*:*SmallFastPath*' > "$OUT/sanitize_$tool.txt" 2>&1
      echo "compute-sanitizer $tool: exit $? ($(grep -c "ERROR SUMMARY: 0 errors" "$OUT/sanitize_$tool.txt") clean summaries)"
    done
  fi
fi

for round in $(seq "$ROUNDS"); do
  for v in base new; do
    dir=$new; [ $v = base ] && dir=$base
    [ -n "$dir" ] || continue
    # shellcheck disable=SC2086
    run_in 280 "$dir" tp-bench --batches "$BATCHES" --precisions "$PRECISIONS" --runs "$RUNS" \
      --json "$OUT/bench_${v}_$round.json" ${TP_BENCH_FLAGS:-} > "$OUT/bench_${v}_$round.txt" 2>&1
    echo "tp-bench $v round $round: exit $?"
  done
done
# One table: task, precision, batch, then median ms of each build and round.
python3 - "$OUT" <<'EOF'
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
        key = (r["task"], r["precision"], r["batch"])
        rows.setdefault(key, {})[name] = (r["median_ms"], r["min_ms"], r.get("floor_ms"), r.get("rel_error"))
cols = sorted({c for v in rows.values() for c in v})
print("task precision batch | " + " | ".join(cols) + " | floor | rel_error(new)")
for key in sorted(rows):
    v = rows[key]
    cells = [f"{v[c][0]:.4f} ({v[c][1]:.4f})" if c in v else "-" for c in cols]
    any_v = next(iter(v.values()))
    err = next((v[c][3] for c in cols if c.startswith("new") and c in v), None)
    print(f"{key[0]} {key[1]} {key[2]} | " + " | ".join(cells) + f" | {any_v[2]} | {err}")
EOF
