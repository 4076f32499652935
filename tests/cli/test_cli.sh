#!/usr/bin/env bash
# CLI behaviour a user sees: --help everywhere, JSON output, and a one-line error with a non-zero exit
# for bad paths, flags and models. Usage: test_cli.sh PTQ_BINARY REPO_ROOT
set -u
ptq=$1
root=$2
model="$root/data/models/stories260K"
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

expect_ok() {
  local name=$1
  shift
  if "$@" >"$tmp/out" 2>"$tmp/err"; then ok; else bad "$name: rc $? $(cat "$tmp/err")"; fi
}

for sub in "" inspect generate bench synth quantize "eval" "eval ppl" "eval tasks" export; do
  # shellcheck disable=SC2086
  expect_ok "help $sub" "$ptq" $sub --help
done
grep -q -- "--max-windows" <("$ptq" eval ppl --help) && ok || bad "eval ppl --help lacks --max-windows"

expect_fail "missing model dir" "no config.json" "$ptq" inspect "$tmp/nope"
expect_fail "unknown flag" "--bogus" "$ptq" inspect "$model" --bogus
expect_fail "missing data file" "--data" "$ptq" eval ppl "$model" --data "$tmp/none.txt"
expect_fail "negative seqlen" "--seqlen" "$ptq" eval ppl "$model" --data "$root/data/tinystories-valid.txt" --seqlen -3
expect_fail "seqlen past context" "exceeds the model's context length" \
  "$ptq" eval ppl "$model" --data "$root/data/tinystories-valid.txt" --seqlen 4096
expect_fail "no subcommand" "subcommand" "$ptq"

mkdir -p "$tmp/gptneox"
cp "$model"/* "$tmp/gptneox/"
sed -i 's/"llama"/"gpt_neox"/' "$tmp/gptneox/config.json"
expect_fail "unknown model type" "\"gpt_neox\" is not supported" "$ptq" inspect "$tmp/gptneox"

mkdir -p "$tmp/trunc"
cp "$model"/* "$tmp/trunc/"
head -c 100000 "$model/model.safetensors" >"$tmp/trunc/model.safetensors"
expect_fail "truncated safetensors" "model.safetensors" "$ptq" eval ppl "$tmp/trunc" --data "$root/data/tinystories-valid.txt"

expect_ok "inspect --json" "$ptq" inspect "$model" --json
grep -q '"parameters": 292800' "$tmp/out" && ok || bad "inspect --json lacks the parameter count"
expect_ok "eval ppl --json" "$ptq" eval ppl "$model" --data "$root/data/tinystories-valid.txt" --seqlen 256 --max-windows 2 --json
grep -q '"windows": 2' "$tmp/out" && grep -q '"data_sha256"' "$tmp/out" && ok || bad "eval ppl --json fields"
expect_ok "generate --json" "$ptq" generate "$model" --prompt "Once upon a time" -n 8 --json
expect_ok "bench --json" "$ptq" bench "$model" --prompt 16 --gen 8 --repeats 1 --json
grep -q '"decode_tok_s"' "$tmp/out" && grep -q '"peak_rss_mb"' "$tmp/out" && ok || bad "bench --json fields"
expect_ok "synth" "$ptq" synth -o "$tmp/synth" --arch qwen2 --dtype BF16 --tokenizer-from "$model"
expect_ok "inspect synth" "$ptq" inspect "$tmp/synth"
grep -q "qwen2" "$tmp/out" && ok || bad "inspect synth architecture"

# quantize -> inspect -> eval on the quantized checkpoint; output safety.
q="$tmp/q"
expect_ok "quantize rtn" "$ptq" quantize "$model" --recipe "$root/configs/w4a16-rtn.yaml" --group-size 32 -o "$q"
grep -q "stays floating point" "$tmp/err" && ok || bad "quantize does not report the FP down_proj modules"
expect_fail "quantize onto existing output" "--force"   "$ptq" quantize "$model" --recipe "$root/configs/w4a16-rtn.yaml" --group-size 32 -o "$q"
expect_fail "quantize missing recipe" "does not exist" "$ptq" quantize "$model" --recipe "$tmp/none.yaml" -o "$tmp/q2"
expect_fail "quantize impossible grid" "no weight format has 5 bits"   "$ptq" quantize "$model" --recipe "$root/configs/w4a16-rtn.yaml" --bits 5 -o "$tmp/q3"
[[ ! -e "$tmp/q3" ]] && ok || bad "a failed quantize left an output behind"
expect_ok "inspect quantized" "$ptq" inspect "$q" --json
grep -q '"quantized": true' "$tmp/out" && grep -q '"w4g32"' "$tmp/out" && ok || bad "inspect --json of a quantized model"
expect_ok "eval quantized" "$ptq" eval ppl "$model" "$q" --data "$root/data/tinystories-valid.txt" --seqlen 256 --max-windows 2

expect_ok "outlierize" "$ptq" outlierize "$model" -o "$tmp/outl" --channels 4 --scale 50
expect_fail "outlierize onto existing output" "--force" "$ptq" outlierize "$model" -o "$tmp/outl"

# export: GGUF output safety, imatrix from a stats file, format errors.
expect_ok "export gguf" "$ptq" export "$model" --format gguf -o "$tmp/m.gguf"
expect_fail "export gguf onto existing output" "--force" "$ptq" export "$model" --format gguf -o "$tmp/m.gguf"
expect_ok "export gguf --force" "$ptq" export "$model" --format gguf -o "$tmp/m.gguf" --force
expect_fail "export onto its input" "is the input model" "$ptq" export "$tmp/m.gguf" --format gguf -o "$tmp/m.gguf" --force
expect_fail "export unknown format" "imatrix" "$ptq" export "$model" --format onnx -o "$tmp/m.onnx"
expect_ok "calibrate small" "$ptq" calibrate "$model" -o "$tmp/stats.safetensors" --nsamples 2 --seqlen 32
expect_ok "export imatrix" "$ptq" export "$tmp/stats.safetensors" --format imatrix -o "$tmp/imatrix.gguf" --json
grep -q '"entries": 35' "$tmp/out" && ok || bad "export imatrix --json entries"
expect_fail "export imatrix onto existing output" "--force" "$ptq" export "$tmp/stats.safetensors" --format imatrix -o "$tmp/imatrix.gguf"
expect_fail "export imatrix with weight flags" "do not apply" "$ptq" export "$tmp/stats.safetensors" --format imatrix -o "$tmp/i2.gguf" --gguf-type q4_0
expect_fail "export imatrix of a model" "ptq calibrate MODEL -o STATS" "$ptq" export "$model" --format imatrix -o "$tmp/i3.gguf"

# activation quantization: flags over a recipe, inspect shows the scheme, bad values are one-line errors.
expect_ok "quantize w8a8 smoothquant" "$ptq" quantize "$model" --recipe "$root/configs/w8a8-smoothquant.yaml" \
  -o "$tmp/qa" --nsamples 2 --seqlen 64
expect_ok "inspect activation scheme" "$ptq" inspect "$tmp/qa" --json
grep -q '"activation": "a8 per_tensor sym"' "$tmp/out" && grep -q 'smoothquant s' "$tmp/out" && grep -q '"input_scale_range"' "$tmp/out" \
  && ok || bad "inspect --json of an activation-quantized model"
expect_ok "quantize with flags: per-token a4 + hadamard" "$ptq" quantize "$model" --recipe "$root/configs/w4a16-rtn.yaml" \
  --group-size -1 --act-bits 4 --act-granularity per_token --hadamard -o "$tmp/qh" --nsamples 2 --seqlen 64
expect_ok "eval activation-quantized" "$ptq" eval ppl "$tmp/qa" "$tmp/qh" --data "$root/data/tinystories-valid.txt" \
  --seqlen 256 --max-windows 2
expect_fail "bad act granularity" "per_row" "$ptq" quantize "$model" --recipe "$root/configs/w8a8-smoothquant.yaml" \
  --act-granularity per_row -o "$tmp/qb"
expect_fail "act method without activations" "needs activation quantization" "$ptq" quantize "$model" \
  --recipe "$root/configs/w4a16-rtn.yaml" --act-method smoothquant -o "$tmp/qc"
expect_fail "unknown act method" "mergequant" "$ptq" quantize "$model" --recipe "$root/configs/w8a8-smoothquant.yaml" \
  --act-method awq -o "$tmp/qd"
[[ ! -e "$tmp/qb" && ! -e "$tmp/qc" && ! -e "$tmp/qd" ]] && ok || bad "a refused quantize left an output behind"
expect_ok "export W8A8 as compressed-tensors int-quantized" "$ptq" export "$tmp/qa" --format compressed-tensors \
  --float-dtype F32 -o "$tmp/qa-ct"
expect_ok "eval the int-quantized export" "$ptq" eval ppl "$tmp/qa" "$tmp/qa-ct" --data "$root/data/tinystories-valid.txt" \
  --seqlen 256 --max-windows 2 --json
[[ $(grep -o '"ppl": *[0-9.e+-]*' "$tmp/out" | sort -u | wc -l) -eq 1 ]] && ok \
  || bad "int-quantized export changed the perplexity: $(grep -o '"ppl": *[0-9.e+-]*' "$tmp/out")"
expect_fail "gguf export of an activation-quantized model" "compressed-tensors" "$ptq" export "$tmp/qa" --format gguf \
  -o "$tmp/qa.gguf"

echo "cli: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
