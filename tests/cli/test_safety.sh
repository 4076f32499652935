#!/usr/bin/env bash
# Output safety, interruption and caches, as a user meets them: an output may not be, contain or lie inside an
# input; --force replaces only what ptq wrote; SIGINT/SIGTERM leave no temporary behind (exit 130/143) and a later
# run removes what SIGKILL left; a GGUF edited in place is converted again. Every refusal must leave the input
# byte-identical. Usage: test_safety.sh PTQ_BINARY REPO_ROOT
set -u
ptq=$1
root=$2
# shellcheck source=tests/cli/lib.sh
source "$root/tests/cli/lib.sh"
export PTQ_CACHE_DIR=$tmp/cache
snapshot() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

# A parent directory holding the model and a sibling: the outputs below all point at or around it.
mkdir -p "$tmp/dir"
cp -r "$root/data/models/stories260K" "$tmp/dir/model"
echo "a user's file" >"$tmp/dir/notes.txt"
before=$(snapshot "$tmp/dir")
m="$tmp/dir/model"
recipe=(--recipe w4a16-rtn --group-size 32)
expect_fail "quantize -o the model's parent --force" "contains the input" "$ptq" quantize "$m" "${recipe[@]}" -o "$tmp/dir" --force
expect_fail "quantize -o . from the model's parent" "contains the input" \
  bash -c "cd '$tmp/dir' && '$ptq' quantize model ${recipe[*]} -o . --force"
expect_fail "quantize -o the model itself" "is the input" "$ptq" quantize "$m" "${recipe[@]}" -o "$m/" --force
expect_fail "quantize -o inside the model" "lies inside the input" "$ptq" quantize "$m" "${recipe[@]}" -o "$m/q" --force
expect_fail "export -o MODEL/model.safetensors" "lies inside the input" \
  "$ptq" export "$m" --format gguf -o "$m/model.safetensors" --force
expect_fail "calibrate -o MODEL/model.safetensors" "lies inside the input" \
  "$ptq" calibrate "$m" -o "$m/model.safetensors" --force --nsamples 2 --seqlen 32
expect_fail "outlierize -o the parent" "contains the input" "$ptq" outlierize "$m" -o "$tmp/dir" --channels 2 --scale 10 --force
expect_fail "synth -o the parent, tokenizer from the model" "contains the input" \
  "$ptq" synth -o "$tmp/dir" --tokenizer-from "$m" --force
ln -s "$tmp/dir/model" "$tmp/link"
expect_fail "output through a symlink to the input" "is the input" "$ptq" quantize "$m" "${recipe[@]}" -o "$tmp/link" --force
[[ "$(snapshot "$tmp/dir")" == "$before" ]] && ok || bad "a refused command changed the input directory"

# --force replaces only ptq's own outputs.
mkdir -p "$tmp/theirs" && echo keep >"$tmp/theirs/file"
expect_fail "--force onto a directory ptq did not write" "was not written by ptq" \
  "$ptq" quantize "$m" "${recipe[@]}" -o "$tmp/theirs" --force
echo keep >"$tmp/theirs.gguf"
expect_fail "--force onto a file ptq did not write" "was not written by ptq" \
  "$ptq" export "$m" --format gguf -o "$tmp/theirs.gguf" --force
[[ $(cat "$tmp/theirs/file") == keep && $(cat "$tmp/theirs.gguf") == keep ]] && ok || bad "--force replaced a foreign output"
"$ptq" -q quantize "$m" "${recipe[@]}" -o "$tmp/ours" >/dev/null 2>&1 && [[ -f "$tmp/ours/.ptq-output" ]] && ok \
  || bad "a quantize output has no .ptq-output marker"
"$ptq" -q quantize "$m" "${recipe[@]}" -o "$tmp/ours" --force >/dev/null 2>&1 && ok || bad "--force onto ptq's own output"
"$ptq" -q export "$m" --format gguf -o "$tmp/ours.gguf" >/dev/null 2>&1 \
  && "$ptq" -q export "$m" --format gguf -o "$tmp/ours.gguf" --force >/dev/null 2>&1 && ok || bad "--force onto ptq's own GGUF"
"$ptq" -q calibrate "$m" -o "$tmp/s.safetensors" --nsamples 2 --seqlen 32 >/dev/null 2>&1 \
  && "$ptq" -q calibrate "$m" -o "$tmp/s.safetensors" --nsamples 2 --seqlen 32 --force >/dev/null 2>&1 && ok \
  || bad "--force onto ptq's own stats file"

# Interruption: a GPTQ run on the 8M model lasts seconds; signal it once its temporary directory exists.
big="$root/data/models/sotu-llama-8m"
interrupt() {  # SIGNAL OUT -> prints the exit status
  local sig=$1 out=$2
  "$ptq" -q quantize "$big" -o "$out" --nsamples 16 --seqlen 128 >/dev/null 2>"$tmp/sig.err" &
  local pid=$! i
  for i in $(seq 1 400); do compgen -G "$out.tmp-*" >/dev/null && break; sleep 0.05; done
  sleep 0.3
  kill -"$sig" $pid
  wait $pid
  echo $?
}
rc=$(interrupt INT "$tmp/q-int")
[[ $rc -eq 130 ]] && ok || bad "SIGINT: exit $rc, expected 130 ($(cat "$tmp/sig.err"))"
grep -q "removed 1 temporary output" "$tmp/sig.err" && ok || bad "SIGINT: no cleanup line: $(cat "$tmp/sig.err")"
rc=$(interrupt TERM "$tmp/q-term")
[[ $rc -eq 143 ]] && ok || bad "SIGTERM: exit $rc, expected 143"
# (Finished layers stay in OUT.ptq-resume for `quantize --resume`: tests/cli/test_resume.sh.)
compgen -G "$tmp/q-int.tmp*" >/dev/null || compgen -G "$tmp/q-term.tmp*" >/dev/null || [[ -e $tmp/q-int || -e $tmp/q-term ]] \
  && bad "a signalled run left $(ls -d "$tmp"/q-*)" || ok
rc=$(interrupt KILL "$tmp/q-kill")
compgen -G "$tmp/q-kill.tmp-*" >/dev/null && ok || bad "SIGKILL left no temporary (the test did not interrupt the run)"
# --force: the killed run may have finished a layer, whose resume state a plain rerun would refuse to discard.
"$ptq" -q quantize "$big" --recipe w4a16-rtn -o "$tmp/q-kill" --force >/dev/null 2>"$tmp/err" && ok \
  || bad "rerun after SIGKILL: $(cat "$tmp/err")"
grep -q "left by an interrupted run" "$tmp/err" && ! compgen -G "$tmp/q-kill.tmp-*" >/dev/null && ok \
  || bad "the rerun did not remove the dead run's temporary: $(cat "$tmp/err"); $(ls -d "$tmp"/q-kill*)"

# A GGUF edited in place (same size, mtime restored) is converted again: the cache is keyed by content.
cp "$root/data/models/stories260K/stories260K.gguf" "$tmp/e.gguf"
ppl() { "$ptq" -q eval ppl "$tmp/e.gguf" --data "$root/data/tinystories-valid.txt" --seqlen 128 --max-windows 2 --json 2>>"$tmp/conv.err" \
  | sed -n 's/.*"ppl": *\([0-9.e+-]*\).*/\1/p'; }
p1=$(ppl)
stamp=$(stat -c %y "$tmp/e.gguf")
size=$(stat -c %s "$tmp/e.gguf")
# Overwrite 4 KiB at 3/4 of the file (tensor data) with zeros, in place, then put the modification time back.
dd if=/dev/zero of="$tmp/e.gguf" bs=4096 seek=$((size * 3 / 4 / 4096)) count=1 conv=notrunc status=none
touch -d "$stamp" "$tmp/e.gguf"
p2=$(ppl)
[[ -n $p1 && -n $p2 && $p1 != "$p2" ]] && ok || bad "an in-place edit of a GGUF was not noticed: ppl $p1 then $p2"
[[ $(grep -c "note: converting" "$tmp/conv.err") -eq 2 ]] && ok || bad "expected two conversion notes: $(cat "$tmp/conv.err")"

# --threads far beyond the cores is capped with a warning, not obeyed.
"$ptq" --threads 100000 inspect "$m" >/dev/null 2>"$tmp/err" && grep -q "warning: --threads 100000" "$tmp/err" && ok \
  || bad "--threads 100000: $(cat "$tmp/err")"

finish "cli safety"
