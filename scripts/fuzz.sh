#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang with ASan + UBSan) and runs each
# for a bounded time; exits non-zero on any crash, leak, timeout, out-of-
# memory or sanitizer report. docs/security.md "Fuzzing" describes them.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
#   FUZZ_TARGETS="wire_decode plan_json" scripts/fuzz.sh 30   only those
# The seed corpora in fuzz/corpus/ are copied to build-fuzz/corpus/ and the
# fuzzer grows the copy (kept between runs); a crashing input is saved in
# build-fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: SECONDS must be a whole number >= 1, not '$seconds'" >&2; exit 2; }
targets=(${FUZZ_TARGETS:-wire_decode plan_json json_config csv_loader idx_loader})
build=build-fuzz
start=$SECONDS

scripts/install-deps.sh --build-only --fuzz
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
      -DFEDSGD_FUZZ=ON -DFEDSGD_WERROR=ON -DFEDSGD_BUILD_TESTS=OFF -DFEDSGD_BUILD_BENCH=OFF
if [[ -n "${FUZZ_TARGETS:-}" ]]; then
  cmake --build "$build" -j "$(nproc)" --target "${targets[@]/%/_fuzz}"
else
  cmake --build "$build" -j "$(nproc)"  # all targets in one parallel build
fi
echo "fuzz.sh: built in $((SECONDS - start)) s"

export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
failed=()
summary=()
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  artifacts="$build/artifacts/$t"
  log="$build/fuzz-$t.log"
  mkdir -p "$corpus" "$artifacts"
  cp -n fuzz/corpus/"$t"/* "$corpus"/
  dict=()
  [[ -f fuzz/$t.dict ]] && dict=(-dict="fuzz/$t.dict")
  echo "== $t: ${seconds} s"
  status=0
  "$build/fuzz/${t}_fuzz" "$corpus" "${dict[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 \
      -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
  # libFuzzer's closing lines: "#N DONE cov: C ft: F corp: U/SIZE ..." and stat:: counters.
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$done_line")
  line=$(printf '%-12s executions %-10s exec/s %-7s corpus %-12s coverage %-6s new units %s' \
         "$t" "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" "${corp:-?}" \
         "${cov:-?}" "$(stat new_units_added)")
  if [[ $status -ne 0 ]] || grep -qE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
    failed+=("$t")
    line+="  FAILED (exit $status, log $log, input in $artifacts/)"
    grep -E 'ERROR:|runtime error:|property broken|SUMMARY' "$log" | head -5 >&2 || true
  fi
  summary+=("$line")
done

echo
echo "fuzz.sh: ${seconds} s per target, $((SECONDS - start)) s in all (build included)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
