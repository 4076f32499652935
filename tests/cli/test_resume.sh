#!/usr/bin/env bash
# quantize --resume, as a user meets it: a run killed (SIGKILL), interrupted (SIGINT) or terminated (SIGTERM) at a
# module, after a layer's checkpoint or just before the output is committed, then resumed, perhaps more than once,
# writes files byte-identical to an uninterrupted run (three drivers: GPTQ streaming calibration, RTN without
# calibration, and the activation path with a Hadamard rotation). The state is refused when the command changed,
# kept safe from a run without --resume, and given up only with --force. The interruption points come from
# PTQ_TEST_SIGNAL_AT (lib/core/fault.h). Usage: test_resume.sh PTQ_BINARY REPO_ROOT
set -u
ptq=$1
root=$2
# shellcheck source=tests/cli/lib.sh
source "$root/tests/cli/lib.sh"
export SOURCE_DATE_EPOCH=1700000000  # the checkpoint's provenance date: the same in every run
m="$root/data/models/stories260K"    # 5 layers x 7 modules
calib=(--nsamples 8 --seqlen 64)
gptq_base=(--recipe w4a16-gptq "${calib[@]}")
gptq=("${gptq_base[@]}" --group-size 32 --threads 2)
rtn=(--recipe w4a16-rtn --group-size 32 --threads 2)
act=(--recipe w4a4-rtn-dynamic --group-size 32 "${calib[@]}" --threads 2)

# same NAME REF OUT: OUT holds exactly REF's files, byte for byte, and nothing of the run is left beside it.
same() {
  if ! diff -r "$2" "$3" >/dev/null; then bad "$1: output differs from the uninterrupted run"; return; fi
  if compgen -G "$3.tmp*" >/dev/null || [[ -e $3.ptq-resume ]]; then bad "$1: left $(ls -d "$3".*)"; return; fi
  ok
}

# interrupted NAME RC POINT OUT ARGS...: the run stops with RC at POINT and leaves no output.
interrupted() {
  local name=$1 want=$2 point=$3 out=$4
  shift 4
  # The braces take bash's own "Killed" notice away from the test's output.
  { PTQ_TEST_SIGNAL_AT=$point "$ptq" quantize "$m" "$@" -o "$out" >"$tmp/out" 2>"$tmp/err"; } 2>/dev/null
  local rc=$?
  if [[ $rc -ne $want ]]; then bad "$name: rc $rc, expected $want: $(tail -2 "$tmp/err")"; return 1; fi
  if [[ -e $out ]]; then bad "$name: the output exists after the interruption"; return 1; fi
  ok
}

# Killed after the 1st module (no layer finished), in the middle of layer 2 (module 10), right after layer 3's
# checkpoint, after the last layer's, and with every tensor written but the directory not yet committed; GPTQ at every
# point, the other drivers at some.
points_gptq="module:1 module:10 layer:3 layer:5 commit:1"
points_rtn="module:10 layer:5"
points_act="module:10 layer:3 commit:1"
for driver in gptq rtn act; do
  declare -n args=$driver points=points_$driver
  ref=$tmp/$driver-ref
  expect_ok "$driver: uninterrupted" "$ptq" quantize "$m" "${args[@]}" -o "$ref"
  [[ -e $ref.ptq-resume ]] && bad "$driver: a finished run left its resume state"
  for point in $points; do
    out=$tmp/$driver-$point
    interrupted "$driver: SIGKILL at $point" 137 "$point" "$out" "${args[@]}" || continue
    expect_ok "$driver: resume after $point" "$ptq" quantize "$m" "${args[@]}" -o "$out" --resume
    same "$driver: killed at $point, resumed" "$ref" "$out"
  done
done

# SIGINT and SIGTERM remove the temporary output but keep the finished layers, and say how to resume.
out=$tmp/int
interrupted "SIGINT after layer 2" 130 layer:2:INT "$out" "${gptq[@]}"
grep -qF -- "--resume continues" "$tmp/err" && ok || bad "SIGINT: no resume hint: $(cat "$tmp/err")"
compgen -G "$out.tmp*" >/dev/null && bad "SIGINT left a temporary output" || ok
[[ -f $out.ptq-resume/state.json ]] && ok || bad "SIGINT removed the resume state"

# Interrupted again while resuming (the point counts from the resumed run's start), then finished.
interrupted "SIGTERM while resuming" 143 module:4:TERM "$out" "${gptq[@]}" --resume
interrupted "SIGKILL while resuming" 137 layer:1 "$out" "${gptq[@]}" --resume
expect_ok "resume a twice-interrupted run" "$ptq" quantize "$m" "${gptq[@]}" -o "$out" --resume
grep -qF "resuming $out: 3 layer(s) already done" "$tmp/err" && ok || bad "resume note: $(cat "$tmp/err")"
same "interrupted three times, resumed" "$tmp/gptq-ref" "$out"

# The finished layers are never given up silently, nor resumed by another command.
out=$tmp/guard
interrupted "SIGKILL after layer 2" 137 layer:2 "$out" "${gptq[@]}"
expect_fail "a run without --resume" "holds 2 finished layer(s) of an interrupted run" \
  "$ptq" quantize "$m" "${gptq[@]}" -o "$out"
expect_fail "--resume with another group size" "recipe.weights.group_size: 32 -> 64" \
  "$ptq" quantize "$m" "${gptq_base[@]}" --threads 2 --group-size 64 -o "$out" --resume
expect_fail "--resume with other calibration data" "was left by a different run (calibration_sha256" \
  "$ptq" quantize "$m" "${gptq[@]}" --data "$root/data/tinystories-valid.txt" -o "$out" --resume
expect_fail "--resume with another thread count" "threads: 2 -> 1" \
  "$ptq" quantize "$m" "${gptq_base[@]}" --group-size 32 --threads 1 -o "$out" --resume
[[ -f $out.ptq-resume/state.json ]] && ok || bad "a refused resume removed the state"
expect_ok "--force starts over" "$ptq" quantize "$m" "${gptq[@]}" -o "$out" --force
same "--force, started over" "$tmp/gptq-ref" "$out"

# --resume with nothing to resume starts from layer 0 and says so.
expect_ok "--resume without a state" "$ptq" quantize "$m" "${gptq[@]}" -o "$tmp/fresh" --resume
grep -qF "no interrupted run of $tmp/fresh to resume" "$tmp/err" && ok || bad "no-state note: $(cat "$tmp/err")"
same "--resume without a state" "$tmp/gptq-ref" "$tmp/fresh"

# A damaged state is refused with the way out; a directory of that name ptq did not make is never touched.
out=$tmp/damaged
interrupted "SIGKILL after layer 1" 137 layer:1 "$out" "${gptq[@]}"
echo '{"version": 1, "run": ' >"$out.ptq-resume/state.json"
expect_fail "--resume from a damaged state" "is damaged" "$ptq" quantize "$m" "${gptq[@]}" -o "$out" --resume
mkdir -p "$tmp/theirs.ptq-resume" && echo keep >"$tmp/theirs.ptq-resume/file"
expect_fail "a foreign OUT.ptq-resume" "was not written by ptq" "$ptq" quantize "$m" "${gptq[@]}" -o "$tmp/theirs" --force
[[ $(cat "$tmp/theirs.ptq-resume/file") == keep ]] && ok || bad "a foreign OUT.ptq-resume was changed"

finish "resume"
