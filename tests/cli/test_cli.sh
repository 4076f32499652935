#!/usr/bin/env bash
# CLI behaviour a user sees: --help everywhere, JSON output, and a one-line error with a non-zero exit
# for bad paths, flags and models. Usage: test_cli.sh PTQ_BINARY REPO_ROOT
set -u
ptq=$1
root=$2
model="$root/data/models/stories260K"
# shellcheck source=tests/cli/lib.sh
source "$root/tests/cli/lib.sh"

for sub in "" inspect generate bench synth quantize recipes report calibrate outlierize "eval" "eval ppl" "eval tasks" export; do
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
# Without a GPU (every CI machine), --device cuda stops with the reason; with one, the run itself is the check.
if ! "$ptq" bench "$model" --device cuda --prompt 4 --gen 2 --repeats 1 >/dev/null 2>&1; then
  expect_fail "--device cuda without a device" "no CUDA device" "$ptq" bench "$model" --device cuda --prompt 4 --gen 2
fi
expect_fail "--device cuda with q8 activations" "--activations q8 runs on the CPU kernels only" \
  "$ptq" bench "$model" --device cuda --activations q8

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
# KL against a reference model (eval ppl --kl-reference): a model against itself is exactly 0.
expect_ok "eval ppl --kl-reference itself" "$ptq" eval ppl "$model" --kl-reference "$model" --data "$root/data/tinystories-valid.txt" --seqlen 128 --max-windows 2 --json
grep -q '"mean_kl": 0.0,' "$tmp/out" && grep -q '"reference_ppl"' "$tmp/out" && ok || bad "eval --kl-reference of a model against itself: $(cat "$tmp/out")"
expect_fail "--kl-reference with another tokenizer" "needs the same tokenizer" "$ptq" eval ppl "$model" --kl-reference "$root/data/models/sotu-llama-8m" --data "$root/data/tinystories-valid.txt" --seqlen 64 --max-windows 1
expect_ok "generate --json" "$ptq" generate "$model" --prompt "Once upon a time" -n 8 --json
expect_ok "bench --json" "$ptq" bench "$model" --prompt 16 --gen 8 --repeats 1 --json
grep -q '"decode_tok_s"' "$tmp/out" && grep -q '"peak_rss_mb"' "$tmp/out" && ok || bad "bench --json fields"
expect_ok "synth" "$ptq" synth -o "$tmp/synth" --arch qwen2 --dtype BF16 --tokenizer-from "$model"
expect_ok "inspect synth" "$ptq" inspect "$tmp/synth"
grep -q "qwen2" "$tmp/out" && ok || bad "inspect synth architecture"

# quantize -> inspect -> eval on the quantized checkpoint; output safety.
q="$tmp/q"
expect_ok "quantize rtn" "$ptq" quantize "$model" --recipe "$root/configs/w4a16-rtn.yaml" --group-size 32 -o "$q"
grep -q "5 module(s) stay floating point (in_features 172" "$tmp/err" && ok || bad "quantize does not report the FP down_proj modules"
expect_fail "quantize onto existing output" "--force"   "$ptq" quantize "$model" --recipe "$root/configs/w4a16-rtn.yaml" --group-size 32 -o "$q"
expect_fail "quantize missing recipe" "neither a file nor a bundled recipe" "$ptq" quantize "$model" --recipe "$tmp/none.yaml" -o "$tmp/q2"
expect_fail "quantize a quantized checkpoint" "already quantized" "$ptq" quantize "$q" -o "$tmp/q2"
[[ ! -e "$tmp/q2" ]] && ok || bad "a refused quantize left an output behind"
expect_fail "quantize impossible grid" "--bits/--group-size: 9 weight bits; expected 2 to 8" \
  "$ptq" quantize "$model" --recipe "$root/configs/w4a16-rtn.yaml" --bits 9 -o "$tmp/q3"
[[ ! -e "$tmp/q3" ]] && ok || bad "a failed quantize left an output behind"
expect_fail "quantize --device cuda with rtn" "method rtn has none" \
  "$ptq" quantize "$model" --recipe w4a16-rtn --device cuda -o "$tmp/q3"
expect_fail "quantize --device cuda on a GGUF grid" "GGUF block grid runs on the CPU only" \
  "$ptq" quantize "$model" --recipe gguf-q4_k_m-gptq --device cuda -o "$tmp/q3"
if [[ -z "$("$ptq" quantize --help | grep -e '--device')" ]]; then bad "quantize --help does not list --device"; else ok; fi
# Without a GPU (every CI machine) GPTQ on the device stops with the reason before any work, writing nothing.
if ! "$ptq" bench "$model" --device cuda --prompt 4 --gen 2 --repeats 1 >/dev/null 2>&1; then
  expect_fail "quantize --device cuda without a device" "no CUDA device" \
    "$ptq" quantize "$model" --recipe w4a16-gptq --device cuda -o "$tmp/q3"
  [[ ! -e "$tmp/q3" ]] && ok || bad "a refused quantize --device cuda left an output behind"
fi
expect_fail "quantize malformed --grid" '--grid: "q4_0" is not a weight grid; expected w<bits 2..8>' \
  "$ptq" quantize "$model" --recipe w4a16-rtn --grid q4_0 -o "$tmp/q3"
# Any grid the quantizer supports is accepted (issue 13: these were refused as "no weight format has ...").
for grid in "w3asym:--bits 3 --group-size -1 --asym" "w8g32:--bits 8 --group-size 32" "w4g64asym:--bits 4 --group-size 64 --asym" \
            "w2g32:--bits 2 --group-size 32" "w5g16asym:--grid w5g16asym" "w7g32:--grid w6g16asym --bits 7 --group-size 32 --sym"; do
  name=${grid%%:*}
  # shellcheck disable=SC2086
  expect_ok "quantize grid $name" "$ptq" quantize "$model" --recipe w4a16-rtn ${grid#*:} -o "$tmp/grid-$name"
  "$ptq" inspect "$tmp/grid-$name" --json >"$tmp/out" 2>&1
  grep -q "\"$name\"" "$tmp/out" && ok || bad "inspect of the $name checkpoint does not name its grid"
done
expect_ok "eval a w3asym checkpoint" "$ptq" eval ppl "$tmp/grid-w3asym" --data "$root/data/tinystories-valid.txt" --seqlen 256 --max-windows 2
# w8g32 is GGUF Q8_0's grid: exported without re-quantizing.
expect_ok "export w8g32 as GGUF" "$ptq" export "$tmp/grid-w8g32" --format gguf -o "$tmp/w8g32.gguf" --json
grep -q "mapped from ptq w8g32" "$tmp/out" && ok || bad "w8g32 is not mapped onto Q8_0: $(head -c 600 "$tmp/out")"
# GPTQ on Q8_0's grid (a bundled recipe): its GGUF holds GPTQ's codes, mapped, not re-rounded.
expect_ok "quantize gguf-q8_0-gptq" "$ptq" quantize "$model" --recipe gguf-q8_0-gptq --nsamples 4 --seqlen 64 -o "$tmp/gq8"
expect_ok "export gguf-q8_0-gptq as GGUF" "$ptq" export "$tmp/gq8" --format gguf -o "$tmp/gq8.gguf" --json
grep -q "mapped from ptq w8g32" "$tmp/out" && ok || bad "gguf-q8_0-gptq is not mapped onto Q8_0: $(head -c 600 "$tmp/out")"
# GPTQ onto llama.cpp's Q4_K_M mix: the checkpoint stores GGUF blocks (stories260K's rows of 64 and 172 are not
# multiples of 256: llama.cpp's fallbacks q5_0 / q8_0, and F16 for rows of 172), which the export copies; the export
# takes the recipe's mix by default.
expect_ok "quantize gguf-q4_k_m-gptq" "$ptq" quantize "$model" --recipe gguf-q4_k_m-gptq --nsamples 4 --seqlen 64 -o "$tmp/gk"
grep -q "gguf:q5_0" "$tmp/out" && ok || bad "gguf-q4_k_m-gptq did not fall back to q5_0: $(head -c 600 "$tmp/out")"
grep -q "30 modules quantized, 5 kept floating point" "$tmp/out" && ok || bad "down_proj's F16 fallback is not reported: $(tail -c 600 "$tmp/out")"
expect_ok "inspect gguf-q4_k_m-gptq" "$ptq" inspect "$tmp/gk"
expect_ok "eval gguf-q4_k_m-gptq" "$ptq" eval ppl "$tmp/gk" --data "$root/data/tinystories-valid.txt" --seqlen 128 --max-windows 2
expect_ok "export gguf-q4_k_m-gptq as GGUF" "$ptq" export "$tmp/gk" --format gguf -o "$tmp/gk.gguf" --json
grep -q "copied (ptq gguf:q5_0 blocks)" "$tmp/out" && ok || bad "the GGUF blocks are not copied: $(head -c 600 "$tmp/out")"
grep -q '"q6_k"\|q6_k' "$tmp/out" && ok || bad "output.weight is not q6_k as in Q4_K_M: $(head -c 600 "$tmp/out")"
expect_fail "GPTQ export of GGUF blocks" "stored as GGUF blocks" "$ptq" export "$tmp/gk" --format gptq -o "$tmp/gk-gptq"
# Mixed precision: grids allocated from the stats file's Hessians under a bits/weight budget (stories260K: rows of 64
# and 172; g4 divides both).
expect_ok "calibrate for allocation" "$ptq" calibrate "$model" --data "$root/data/tinystories-valid.txt" --nsamples 4 --seqlen 64 --hessian -o "$tmp/alloc.stats"
expect_ok "quantize --target-bpw" "$ptq" quantize "$model" --recipe w4a16-rtn --group-size 4 --stats "$tmp/alloc.stats" --target-bpw 6 -o "$tmp/mix"
grep -q "allocation: target 6.000 bits/weight, achieved.*sensitivity: rtn output error scaled to each unit.s KL" "$tmp/out" && ok || bad "no allocation line: $(tail -c 600 "$tmp/out")"
expect_ok "quantize mixed-3.5bit (Hessians from its own calibration pass)" "$ptq" quantize "$model" --recipe mixed-3.5bit --group-size 32 --candidates w2g32,w3g32,w4g32,w8g32 --nsamples 4 --seqlen 64 -o "$tmp/mix2"
grep -q "allocation: target 3.500 bits/weight, achieved" "$tmp/out" && ok || bad "mixed-3.5bit did not allocate: $(tail -c 600 "$tmp/out")"
expect_fail "--target-bpw below the candidates" "smallest candidates" "$ptq" quantize "$model" --recipe w4a16-rtn --group-size 4 --stats "$tmp/alloc.stats" --target-bpw 2 -o "$tmp/mix3"
expect_ok "eval --kl-reference of an allocated model" "$ptq" eval ppl "$tmp/mix" --kl-reference "$model" --data "$root/data/tinystories-valid.txt" --seqlen 128 --max-windows 2
grep -q "mean KL" "$tmp/out" && ok || bad "no mean KL column: $(cat "$tmp/out")"
# --target-size: the checkpoint's bytes (stories260K: ~270 kB of F32 embedding, head and norms stay).
expect_ok "quantize --target-size" "$ptq" quantize "$model" --recipe w4a16-rtn --group-size 4 --stats "$tmp/alloc.stats" --target-size 450kB -o "$tmp/mix-size"
grep -q "allocation: target size 450.0 kB (450000 bytes), achieved" "$tmp/out" && ok || bad "no size allocation line: $(tail -c 600 "$tmp/out")"
expect_fail "--target-size with --target-bpw" "--target-bpw" "$ptq" quantize "$model" --recipe w4a16-rtn --group-size 4 --stats "$tmp/alloc.stats" --target-size 450kB --target-bpw 4 -o "$tmp/mix-x"
expect_fail "--target-size not a size" "not a size" "$ptq" quantize "$model" --recipe w4a16-rtn --stats "$tmp/alloc.stats" --target-size 12parsecs -o "$tmp/mix-x"
# Sensitivities saved and reused give the same allocation; a file for another metric is refused.
expect_ok "quantize --save-sensitivity" "$ptq" quantize "$model" --recipe w4a16-rtn --group-size 4 --stats "$tmp/alloc.stats" --target-bpw 7 --save-sensitivity "$tmp/sens.json" -o "$tmp/mix-s1"
grep "^allocation:" "$tmp/out" >"$tmp/alloc1"
expect_ok "quantize --sensitivity" "$ptq" quantize "$model" --recipe w4a16-rtn --group-size 4 --target-bpw 7 --sensitivity "$tmp/sens.json" -o "$tmp/mix-s2"
grep "^allocation:" "$tmp/out" | cmp -s - "$tmp/alloc1" && ok || bad "reused sensitivities allocate differently: $(cat "$tmp/alloc1") vs $(grep "^allocation:" "$tmp/out")"
expect_fail "--sensitivity of another metric" "holds rtn-kl sensitivities" "$ptq" quantize "$model" --recipe w4a16-rtn --group-size 4 --stats "$tmp/alloc.stats" --target-bpw 7 --sensitivity "$tmp/sens.json" --sensitivity-metric gptq -o "$tmp/mix-x"
expect_fail "--save-sensitivity onto an existing file without --force" "--force" "$ptq" quantize "$model" --recipe w4a16-rtn --group-size 4 --stats "$tmp/alloc.stats" --target-bpw 7 --save-sensitivity "$tmp/sens.json" -o "$tmp/mix-x"
[[ ! -e "$tmp/mix-x" ]] && ok || bad "a refused --save-sensitivity still wrote $tmp/mix-x"
expect_ok "quantize --save-sensitivity --force" "$ptq" quantize "$model" --recipe w4a16-rtn --group-size 4 --stats "$tmp/alloc.stats" --target-bpw 7 --save-sensitivity "$tmp/sens.json" --force -o "$tmp/mix-s3"
expect_fail "--save-sensitivity without a budget" "--target-bpw or --target-size" "$ptq" quantize "$model" --recipe w4a16-rtn --save-sensitivity "$tmp/x.json" -o "$tmp/mix-x"
expect_ok "quantize --sensitivity-metric kl --allocation-unit layer" "$ptq" quantize "$model" --recipe w4a16-rtn --group-size 4 --target-bpw 7 --sensitivity-metric kl --allocation-unit layer --data "$root/data/tinystories-valid.txt" --nsamples 2 --seqlen 32 -o "$tmp/mix-kl"
grep -q "(per layer, sensitivity: mean KL on 2 windows x 32 tokens)" "$tmp/out" && ok || bad "kl allocation line: $(grep allocation "$tmp/out")"
expect_ok "inspect an allocated checkpoint" "$ptq" inspect "$tmp/mix-kl"
grep -q "^mixed precision: target 7.000 bits/weight" "$tmp/out" && grep -q "^sensitivity: kl (2 windows x 32 tokens), per layer" "$tmp/out" && grep -q "^layer  q_proj  k_proj  v_proj  o_proj  gate_proj  up_proj  down_proj" "$tmp/out" && ok || bad "inspect lacks the allocation map: $(tail -c 800 "$tmp/out")"
expect_ok "inspect --json of an allocated checkpoint" "$ptq" inspect "$tmp/mix-size" --json
grep -q '"size_bytes"' "$tmp/out" && grep -q '"model.layers.4.mlp.down_proj": "w' "$tmp/out" && ok || bad "inspect --json lacks the allocation"
expect_ok "inspect quantized" "$ptq" inspect "$q" --json
grep -q '"quantized": true' "$tmp/out" && grep -q '"w4g32"' "$tmp/out" && ok || bad "inspect --json of a quantized model"
expect_ok "eval quantized" "$ptq" eval ppl "$model" "$q" --data "$root/data/tinystories-valid.txt" --seqlen 256 --max-windows 2

expect_ok "outlierize" "$ptq" outlierize "$model" -o "$tmp/outl" --channels 4 --scale 50
expect_fail "outlierize onto existing output" "--force" "$ptq" outlierize "$model" -o "$tmp/outl"

# export: GGUF output safety, imatrix from a stats file, format errors.
expect_ok "export gguf" "$ptq" export "$model" --format gguf -o "$tmp/m.gguf"
expect_fail "export gguf onto existing output" "--force" "$ptq" export "$model" --format gguf -o "$tmp/m.gguf"
expect_ok "export gguf --force" "$ptq" export "$model" --format gguf -o "$tmp/m.gguf" --force
expect_fail "export onto its input" "is the input" "$ptq" export "$tmp/m.gguf" --format gguf -o "$tmp/m.gguf" --force
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

# Adoption: bundled recipes by name from any directory, the default recipe, global flags after the subcommand.
expect_ok "recipes" "$ptq" recipes
grep -q "w4a16-gptq (default)" "$tmp/out" && ok || bad "recipes does not mark the default"
expect_ok "recipes --json" "$ptq" recipes --json
python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["recipes"]; assert len(r) >= 13 and sum(x["default"] for x in r) == 1' \
  "$tmp/out" && ok || bad "recipes --json: $(head -c 300 "$tmp/out")"
# GGUF carries W4 g32 losslessly: what `recipes` says must agree with the exporter (the checkpoint q is w4g32).
grep -q '"how": "with --group-size 32: GGUF Q4_0, lossless"' "$tmp/out" && ok || bad "recipes: w4a16 via GGUF"
expect_ok "export the w4g32 checkpoint as GGUF (as recipes says)" "$ptq" export "$q" --format gguf -o "$tmp/q.gguf"
(cd "$tmp" && "$ptq" quantize "$model" --recipe w4a16-rtn --group-size 32 -o "$tmp/byname" >/dev/null 2>"$tmp/err") \
  && ok || bad "recipe by name from another directory: $(cat "$tmp/err")"
(cd "$tmp" && "$ptq" quantize "$model" --recipe configs/w4a16-rtn.yaml --group-size 32 -o "$tmp/byconfigs" >/dev/null \
  2>"$tmp/err") && ok || bad "recipe as configs/NAME.yaml from another directory: $(cat "$tmp/err")"
cmp -s "$tmp/byname/model.safetensors" "$q/model.safetensors" && ok || bad "recipe by name differs from the file"
expect_fail "the default g128 on a 64-wide model: the widths and the fix" "use --group-size 64" \
  "$ptq" quantize "$model" -o "$tmp/default"
# The default recipe (W4 g128 GPTQ) on the bundled model whose widths are multiples of 128.
(cd "$tmp" && "$ptq" quantize "$root/data/models/sotu-llama-8m" -o "$tmp/default" --nsamples 4 --seqlen 64 --json \
  --threads 1 -q >"$tmp/out" 2>"$tmp/err") && ok || bad "quantize with the default recipe and global flags after it: $(cat "$tmp/err")"
grep -q '"name": "w4a16-gptq"' "$tmp/out" && ok || bad "the default recipe is not w4a16-gptq"
expect_fail "gguf export of a g128 checkpoint: the fix" "--group-size 32" "$ptq" export "$tmp/default" --format gguf \
  -o "$tmp/d.gguf"
[[ $(wc -c <"$tmp/err") -lt 700 ]] && ok || bad "g128 GGUF refusal is $(wc -c <"$tmp/err") characters"
# `cmake --install` puts the recipes and default calibration text beside the binary, and they are found there first.
if cmake --install "$(dirname "$ptq")" --prefix "$tmp/inst" >/dev/null 2>"$tmp/err"; then
  (cd / && "$tmp/inst/bin/ptq" recipes --json >"$tmp/out" 2>"$tmp/err")
  grep -q "\"path\": \"$tmp/inst/share/ptq/configs/w4a16-gptq.yaml\"" "$tmp/out" && [[ -f "$tmp/inst/share/ptq/data/sotu-train.txt" ]] \
    && ok || bad "installed ptq does not read its own share/ptq: $(head -c 400 "$tmp/out") $(cat "$tmp/err")"
else
  bad "cmake --install: $(cat "$tmp/err")"
fi
# generate keeps the space between the prompt and the continuation: its text is the decoded prompt + continuation.
expect_ok "generate --json (ids)" "$ptq" generate "$model" --prompt "Once upon a time there was" -n 6 --json
ids=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(" ".join(map(str, j["prompt_ids"] + j["ids"])))' "$tmp/out")
"$ptq" tokenize "$model" --decode --text "$ids" --json >"$tmp/dec" 2>/dev/null
"$ptq" generate "$model" --prompt "Once upon a time there was" -n 6 >"$tmp/gen" 2>/dev/null
python3 -c 'import json,sys; want=json.load(open(sys.argv[1]))["text"].strip(); got=open(sys.argv[2]).read().strip(); assert got == want, (got, want)' \
  "$tmp/dec" "$tmp/gen" && ok || bad "generate text differs from decoding prompt+continuation: $(cat "$tmp/gen") vs $(cat "$tmp/dec")"

finish cli
