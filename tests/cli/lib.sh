# shellcheck shell=bash
# Sourced by the shell tests (tests/cli, tests/report): a scratch directory and pass/fail counting with the checks a
# user-facing command must pass. After sourcing: $tmp (removed on exit), ok, bad, expect_ok, expect_fail, finish.

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect_fail NAME EXPECTED_SUBSTRING CMD...: non-zero exit, one line on stderr containing the substring.
expect_fail() {
  local name=$1 want=$2
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [[ $rc -eq 0 ]]; then bad "$name: exit 0"; return; fi
  if [[ $rc -ge 128 ]]; then bad "$name: crashed (rc $rc)"; return; fi
  if ! grep -qF -- "$want" "$tmp/err"; then bad "$name: stderr lacks '$want': $(cat "$tmp/err")"; return; fi
  if [[ $(grep -c . "$tmp/err") -ne 1 ]]; then bad "$name: error is not one line: $(cat "$tmp/err")"; return; fi
  ok
}

# expect_ok NAME CMD...: exit 0 (stdout in $tmp/out, stderr in $tmp/err).
expect_ok() {
  local name=$1
  shift
  if "$@" >"$tmp/out" 2>"$tmp/err"; then ok; else bad "$name: rc $? $(cat "$tmp/err")"; fi
}

# finish LABEL: the summary line; the exit status of the test.
finish() {
  echo "$1: $pass passed, $fail failed"
  [[ $fail -eq 0 ]]
}
