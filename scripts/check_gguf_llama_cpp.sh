#!/usr/bin/env bash
# Verifies GGUF export with the real llama.cpp runtime (node-llama-cpp's prebuilt CPU binary from npm) and an
# independent GGUF parser (@huggingface/gguf). For stories260K exported as F32, Q8_0 and Q4_0, and for a ptq
# RTN w4 g32 checkpoint mapped to Q4_0: llama.cpp's logits on a fixed token sequence are compared with ptq's
# runner on the same weights twice: the GGUF decoded back to an HF directory by `ptq gguf-to-hf`, and the GGUF file
# itself (ptq's packed runner on the file's own blocks). sotu-llama-8m (rows of 256 and 768) exported as every K-quant
# is compared the same way, file against file. The imatrix export of a calibration stats file is parsed by
# @huggingface/gguf too.
# Limits (issue 7): F32 max |diff| <= 1e-4; quantized: top-1 agreement at every position and mean KL <= 1e-3
# (llama.cpp rounds activations to 8 bits inside quantized matmuls, so exact logits are not expected).
# Usage: check_gguf_llama_cpp.sh PTQ_BINARY [NPM_DIR]   (NPM_DIR default: build/npm-oracle; not committed)
# Exit 0 pass, 1 fail, 77 npm packages unavailable (skipped).
set -euo pipefail
ptq=$(realpath "$1")
root=$(cd "$(dirname "$0")/.." && pwd)
npm_dir=${2:-$root/build/npm-oracle}
model=$root/data/models/stories260K
# "Once upon a time, there was a little girl named Lily. ..." tokenized by llama.cpp, after BOS.
ids=1,403,407,261,378,432,383,286,261,376,298,315,421,395,317,426,338,401,396,267,337,410,408,419,292,411,322,265,282,295,433,335,311,400,428,432,392,412,444,426,385,328

# shellcheck source=scripts/lib_npm_oracle.sh
source "$root/scripts/lib_npm_oracle.sh"
npm_oracle_install "$npm_dir" || exit $?
npm_oracle_scripts "$npm_dir" "$root" llama_logits llama_ppl gguf_parse compare_logits

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() {  # NAME GGUF LIMIT_ARGS...
  local name=$1 gguf=$2
  shift 2
  node "$npm_dir/gguf_parse.mjs" "$gguf" >"$tmp/$name.parse.json" || { echo "FAIL $name: @huggingface/gguf cannot parse"; fail=1; return; }
  "$ptq" -q gguf-to-hf "$gguf" --config "$model" -o "$tmp/$name.hf"
  "$ptq" -q logits "$tmp/$name.hf" --ids "$ids" >"$tmp/$name.ptq.json"
  node "$npm_dir/llama_logits.mjs" "$gguf" "$ids" >"$tmp/$name.llama.json"
  local res
  if res=$(node "$npm_dir/compare_logits.mjs" "$tmp/$name.ptq.json" "$tmp/$name.llama.json" "$@"); then
    echo "ok   $name $(stat -c %s "$gguf") bytes: $res"
  else
    echo "FAIL $name: $res"; fail=1
  fi
  check_file "$name" "$gguf" "$ids" "$@"
}
check_file() {  # NAME GGUF IDS LIMIT_ARGS...: ptq's packed runner on the GGUF file itself against llama.cpp
  local name=$1 gguf=$2 file_ids=$3 res
  shift 3
  "$ptq" -q logits "$gguf" --ids "$file_ids" >"$tmp/$name.packed.json"
  [[ -f $tmp/$name.llama.json ]] || node "$npm_dir/llama_logits.mjs" "$gguf" "$file_ids" >"$tmp/$name.llama.json"
  if res=$(node "$npm_dir/compare_logits.mjs" "$tmp/$name.packed.json" "$tmp/$name.llama.json" "$@"); then
    echo "ok   $name, ptq packed on the file: $res"
  else
    echo "FAIL $name, ptq packed on the file: $res"; fail=1
  fi
}
export PTQ_CACHE_DIR=$tmp/cache  # the decoded directories `ptq logits FILE.gguf` makes

for t in f32 q8_0 q4_0; do
  "$ptq" -q export "$model" --format gguf --gguf-type "$t" -o "$tmp/$t.gguf" >/dev/null 2>&1
  if [[ $t == f32 ]]; then check "$t" "$tmp/$t.gguf" --max-abs 1e-4; else check "$t" "$tmp/$t.gguf" --top1 --max-mean-kl 1e-3; fi
done

# Every K-quant on sotu-llama-8m (stories260K's rows of 64 fall back to other types), file against file. The first 48
# tokens of data/sotu-test.txt as ptq tokenizes them (the same SentencePiece model is embedded in the file).
sotu=$root/data/models/sotu-llama-8m
sotu_ids=$("$ptq" -q tokenize "$sotu" --file "$root/data/sotu-test.txt" --json |
  node -e 'const j = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log((j.ids ?? j).slice(0, 48).join(","))')
for t in q2_k q3_k q4_k q5_k q6_k; do
  "$ptq" -q export "$sotu" --format gguf --gguf-type "$t" -o "$tmp/sotu-$t.gguf" >/dev/null 2>&1
  # Top-1 up to near ties: llama.cpp rounds the activations to 8 bits (Q8_K) inside K-quant matmuls, which moves
  # logits by up to ~0.2 here (max_abs_diff); a choice between two logits within 0.05 may then go either way.
  check_file "sotu-$t" "$tmp/sotu-$t.gguf" "$sotu_ids" --top1 --top1-tie 0.05 --max-mean-kl 1e-3
done

# A ptq checkpoint (RTN, 4-bit symmetric, group 32) mapped onto Q4_0 without re-quantizing: ptq's logits on the
# checkpoint itself must equal those on the decoded GGUF (the mapping is lossless), and llama.cpp must agree.
"$ptq" -q quantize "$model" --recipe "$root/configs/w4a16-rtn.yaml" --group-size 32 -o "$tmp/w4g32" >/dev/null 2>&1
"$ptq" -q export "$tmp/w4g32" --format gguf -o "$tmp/w4g32.gguf" >/dev/null 2>&1
check mapped_q4_0 "$tmp/w4g32.gguf" --top1 --max-mean-kl 1e-3
# Both sides on the reference runner (fp32 weights, one summation order): the mapping is a claim about weights.
"$ptq" -q logits "$tmp/w4g32" --ids "$ids" --reference-runner >"$tmp/w4g32.ckpt.json"
"$ptq" -q logits "$tmp/mapped_q4_0.hf" --ids "$ids" --reference-runner >"$tmp/mapped_q4_0.ref.json"
if res=$(node "$npm_dir/compare_logits.mjs" "$tmp/w4g32.ckpt.json" "$tmp/mapped_q4_0.ref.json" --max-abs 0); then
  echo "ok   mapping lossless: $res"
else
  echo "FAIL mapping not lossless: $res"; fail=1
fi

# The imatrix export (calibration Σx² as llama.cpp's importance matrix GGUF) parsed by @huggingface/gguf: the keys
# llama-quantize requires, and an in_sum2/counts pair per linear weight (5 layers x 7).
"$ptq" -q calibrate "$model" -o "$tmp/stats.safetensors" --nsamples 4 --seqlen 64 >/dev/null 2>&1
"$ptq" -q export "$tmp/stats.safetensors" --format imatrix -o "$tmp/imatrix.gguf" >/dev/null 2>&1
if node "$npm_dir/gguf_parse.mjs" "$tmp/imatrix.gguf" >"$tmp/imatrix.parse.json" && res=$(node -e '
  const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const m = d.metadata, t = d.tensors;
  const ok = m["general.type"] === "imatrix" && m["imatrix.chunk_count"] === 4 && m["imatrix.chunk_size"] === 64 &&
    m["imatrix.datasets"]?.array === 1 && t.length === 70 &&
    t.every((x) => x.dtype === 0 && ((x.name.endsWith(".in_sum2") && x.shape.length === 1) ||
                                      (x.name.endsWith(".counts") && x.shape.join() === "1")));
  console.log(JSON.stringify({tensors: t.length, chunk_count: m["imatrix.chunk_count"], chunk_size: m["imatrix.chunk_size"]}));
  process.exit(ok ? 0 : 1);' "$tmp/imatrix.parse.json"); then
  echo "ok   imatrix parsed by @huggingface/gguf: $res"
else
  echo "FAIL imatrix: $(cat "$tmp/imatrix.parse.json" 2>/dev/null | head -c 400)"; fail=1
fi

# The imatrix used by llama.cpp's own llama-quantize: the tool is compiled from the llama.cpp source that node-llama-cpp
# ships (its git bundle: the exact version of its prebuilt libraries) and linked against those libraries. On
# sotu-llama-8m with 4 outlier channels planted (`ptq outlierize`, FP output unchanged), Q2_K weights the rounding
# error of every input channel alike unless given an importance matrix: ptq's imatrix must be loaded (42 entries)
# and must bring llama.cpp's perplexity back near FP. Skipped (not failed) where g++ or the bundle is missing.
imatrix_llama_quantize() {
  local quantize=$npm_dir/llama-quantize sotu=$root/data/models/sotu-llama-8m skip
  skip=$(npm_oracle_llama_quantize "$npm_dir" "$tmp/quantize-build.log") || { echo "${skip/skip:/skip imatrix in llama-quantize:}"; return; }
  "$ptq" -q outlierize "$sotu" -o "$tmp/outl" --channels 4 --scale 50 >/dev/null 2>&1
  "$ptq" -q calibrate "$tmp/outl" -o "$tmp/outl.stats" --data "$root/data/sotu-train.txt" --nsamples 32 --seqlen 256 >/dev/null 2>&1
  "$ptq" -q export "$tmp/outl.stats" --format imatrix -o "$tmp/outl.imatrix.gguf" >/dev/null 2>&1
  "$ptq" -q export "$tmp/outl" --format gguf -o "$tmp/outl.gguf" >/dev/null 2>&1
  "$ptq" -q tokenize "$sotu" --file "$root/data/sotu-test.txt" --json >"$tmp/sotu.ids.json"
  "$quantize" "$tmp/outl.gguf" "$tmp/outl.q2k.gguf" Q2_K 2 >"$tmp/q2k.log" 2>&1
  "$quantize" --imatrix "$tmp/outl.imatrix.gguf" "$tmp/outl.gguf" "$tmp/outl.q2k-imatrix.gguf" Q2_K 2 >"$tmp/q2k-imatrix.log" 2>&1 ||
    { echo "FAIL llama-quantize --imatrix: $(grep -i -m1 'imatrix\|error' "$tmp/q2k-imatrix.log")"; fail=1; return; }
  local loaded fp plain imx
  loaded=$(grep -o 'loaded [0-9]* importance matrix entries' "$tmp/q2k-imatrix.log" || true)
  fp=$(node "$npm_dir/llama_ppl.mjs" "$tmp/outl.gguf" "$tmp/sotu.ids.json" 256 10)
  plain=$(node "$npm_dir/llama_ppl.mjs" "$tmp/outl.q2k.gguf" "$tmp/sotu.ids.json" 256 10)
  imx=$(node "$npm_dir/llama_ppl.mjs" "$tmp/outl.q2k-imatrix.gguf" "$tmp/sotu.ids.json" 256 10)
  local res
  if res=$(node -e '
    const [fp, plain, imx] = process.argv.slice(1, 4).map((s) => JSON.parse(s).ppl);
    console.log(JSON.stringify({ppl_f32: fp, ppl_q2k: plain, ppl_q2k_imatrix: imx}));
    process.exit(imx < plain && imx < 1.1 * fp ? 0 : 1);' "$fp" "$plain" "$imx") && [[ $loaded == "loaded 42 importance matrix entries" ]]; then
    echo "ok   imatrix used by llama-quantize ($loaded): $res"
  else
    echo "FAIL imatrix in llama-quantize (${loaded:-not loaded}): $res"; fail=1
  fi
}
imatrix_llama_quantize
exit $fail
