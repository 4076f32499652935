#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UBSan + LeakSanitizer: every ptq library, the ptq binary and both test
# binaries built with -fsanitize=address,undefined -fno-sanitize-recover=all (-DPTQ_SANITIZE_ALL=ON, -O1 -g1) into
# build-sanitize, then every ctest entry: each Catch2 case (the [slow] ones included), and the shell tests cli,
# bad_inputs, cli_safety, cli_resume and report_browser, which ctest hands build-sanitize/ptq. Every report is fatal
# (abort, exit 134) and also leaves a file in BUILD/sanitize-logs/, so that a report from a ptq that a shell test
# expected to fail still fails the run: ASan and LSan write theirs there (asan.PID); UBSan prints its message on
# stderr (GCC's UBSan runtime ignores log_path beside ASan) and aborts, and ASan's SIGABRT handler (handle_abort=1)
# writes the stack, through __ubsan_handle_*, to ubsan.PID. Any abort() at all does the same. The script prints the
# files, a summary, and exits 1 on any failed test or any file.
#
#   scripts/sanitize.sh [CTEST_REGEX]   everything, or only the ctest entries matching the regex (ctest -R), e.g.
#                                       scripts/sanitize.sh '^(cli|bad_inputs)$'
# PTQ_SANITIZE_BUILD overrides the build directory, PTQ_SANITIZE_JOBS the parallelism (default: nproc).
#
# LibTorch, OpenBLAS, libgomp and the other system libraries are Debian's uninstrumented builds: their memory errors
# go unseen; leaks whose every frame is theirs are suppressed by tests/sanitize/lsan.supp (one reason per line).
# Nothing is LD_PRELOADed: GCC links libasan into each ptq executable, so the programs the tests also run (chromium
# in report_browser, spm_encode, python3) run unsanitized and ignore the *SAN_OPTIONS.
# Measured (README.md, "Building by hand"): `nice -n 10 scripts/sanitize.sh` on 2 cores shared with another build,
# 206/206 passed in 3463 s with the build up to date; 44 min of compiling from scratch before that.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$(realpath -m "${PTQ_SANITIZE_BUILD:-build-sanitize}")
jobs=${PTQ_SANITIZE_JOBS:-$(nproc)}
filter=${1:-}
start=$SECONDS

scripts/setup.sh
if [[ ! -f $build/CMakeCache.txt ]]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  # -O1: a sanitized suite several times faster than -O0; -g1: line tables, enough for symbolized reports.
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
    -DPTQ_SANITIZE_ALL=ON -DPTQ_BUILD_TESTS=ON
fi

logs=$build/sanitize-logs
ctest_log=$build/sanitize-ctest.log
rm -rf "$logs"
mkdir -p "$logs"
# Exported before building too: catch_discover_tests runs each sanitized test binary to list its cases. The two
# log_path share one directory: the first UBSan report points ASan's log at UBSan's path.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:handle_abort=1:detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1:log_path=$logs/asan"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"
export LSAN_OPTIONS="suppressions=$root/tests/sanitize/lsan.supp:print_suppressions=0"

cmake --build "$build" -j "$jobs"
built=$((SECONDS - start))

ctest_args=(--output-on-failure -j "$jobs" --timeout 3600)
[[ -n $filter ]] && ctest_args+=(-R "$filter")
rc=0
(cd "$build" && ctest "${ctest_args[@]}") 2>&1 | tee "$ctest_log" || rc=$?

reports=("$logs"/*)
[[ -e ${reports[0]} ]] || reports=()
for f in "${reports[@]}"; do
  echo "===== sanitizer report $f"
  cat "$f"
done
echo "===== scripts/sanitize.sh ${filter:-(every entry)}: built in $built s, $((SECONDS - start)) s in all"
grep -E '^[0-9]+% tests passed|^Total Test time' "$ctest_log" || echo "ctest printed no summary"
# ctest's lists of failed and skipped entries (a header, then indented lines).
awk '/^The following tests (FAILED|did not run):/ {p = 1; print; next} p && /^[ \t]/ {print; next} {p = 0}' "$ctest_log"
echo "sanitizer reports: ${#reports[@]}"
if ((rc != 0 || ${#reports[@]} > 0)); then
  echo "FAILED"
  exit 1
fi
echo "OK: no failed test, no sanitizer report"
