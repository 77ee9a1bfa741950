#!/usr/bin/env bash
# Run every fuzz target for SECONDS each, one after the other, on the seeds made from
# tests/fixtures (fuzz/seeds.py) plus whatever earlier runs kept in fuzz/corpus/. Prints one
# line per target (executions, rate, new corpus size) and the total; exits non-zero on any
# crash, timeout or out-of-memory (libFuzzer writes the input to fuzz/artifacts/<target>/).
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# CARGO_FUZZ is the cargo-fuzz command (the Makefile passes the project-local one, run with
# RUSTC_BOOTSTRAP=1: cargo-fuzz passes nightly-only flags to rustc).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(review timing objects records watcher)
cargo_fuzz=${CARGO_FUZZ:-cargo fuzz}
flags=(--sanitizer none --debug-assertions)

python3 seeds.py corpus
mkdir -p logs
total=0
failed=()
printf '%-8s %12s %10s %8s %s\n' target executions 'exec/s' corpus result
for t in "${targets[@]}"; do
  log=logs/$t.log
  status=ok
  # -timeout: one input taking over 10 s is a finding; -rss_limit_mb: libFuzzer's default.
  if ! $cargo_fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -dict=json.dict \
      -print_final_stats=1 >"$log" 2>&1; then
    status=FAILED
    failed+=("$t")
  fi
  runs=$(awk '/^stat::number_of_executed_units:/ { print $2 }' "$log" | tail -1)
  rate=$(awk '/^stat::average_exec_per_sec:/ { print $2 }' "$log" | tail -1)
  total=$((total + ${runs:-0}))
  printf '%-8s %12s %10s %8s %s\n' "$t" "${runs:-?}" "${rate:-?}" "$(ls "corpus/$t" | wc -l)" "$status"
  if [ "$status" != ok ]; then
    grep -E 'panicked|ERROR|SUMMARY|artifact' "$log" | head -20 >&2 || tail -20 "$log" >&2
  fi
done
echo "total    $total executions, ${#failed[@]} target(s) failed${failed:+: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
