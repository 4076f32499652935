#!/usr/bin/env bash
# Verifies GGUF export with the real llama.cpp runtime (node-llama-cpp's prebuilt CPU binary from npm) and an
# independent GGUF parser (@huggingface/gguf). For stories260K exported as F32, Q8_0 and Q4_0, and for a ptq
# RTN w4 g32 checkpoint mapped to Q4_0: llama.cpp's logits on a fixed token sequence are compared with ptq's
# runner on the same weights (the GGUF decoded back to an HF directory by `ptq gguf-to-hf`).
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

mkdir -p "$npm_dir"
if [[ ! -d $npm_dir/node_modules/@node-llama-cpp/linux-x64 || ! -d $npm_dir/node_modules/@huggingface/gguf ]]; then
  if ! command -v npm >/dev/null; then echo "skip: npm not installed"; exit 77; fi
  [[ -f $npm_dir/package.json ]] || echo '{"name": "ptq-oracle", "private": true}' >"$npm_dir/package.json"
  if ! (cd "$npm_dir" && npm install --no-save --ignore-scripts --omit=optional --no-audit --no-fund \
      node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 @huggingface/gguf@0.4.6 >npm-install.log 2>&1); then
    echo "skip: npm install failed (see $npm_dir/npm-install.log)"; exit 77
  fi
fi
# ESM imports resolve next to the script: run the oracle scripts from the npm directory.
cp "$root"/tests/oracle/{llama_logits,gguf_parse,compare_logits}.mjs "$npm_dir/"

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
}

for t in f32 q8_0 q4_0; do
  "$ptq" -q export "$model" --format gguf --gguf-type "$t" -o "$tmp/$t.gguf" >/dev/null 2>&1
  if [[ $t == f32 ]]; then check "$t" "$tmp/$t.gguf" --max-abs 1e-4; else check "$t" "$tmp/$t.gguf" --top1 --max-mean-kl 1e-3; fi
done

# A ptq checkpoint (RTN, 4-bit symmetric, group 32) mapped onto Q4_0 without re-quantizing: ptq's logits on the
# checkpoint itself must equal those on the decoded GGUF (the mapping is lossless), and llama.cpp must agree.
"$ptq" -q quantize "$model" --recipe "$root/configs/w4a16-rtn.yaml" --group-size 32 -o "$tmp/w4g32" >/dev/null 2>&1
"$ptq" -q export "$tmp/w4g32" --format gguf -o "$tmp/w4g32.gguf" >/dev/null 2>&1
check mapped_q4_0 "$tmp/w4g32.gguf" --top1 --max-mean-kl 1e-3
"$ptq" -q logits "$tmp/w4g32" --ids "$ids" >"$tmp/w4g32.ckpt.json"
if res=$(node "$npm_dir/compare_logits.mjs" "$tmp/w4g32.ckpt.json" "$tmp/mapped_q4_0.ptq.json" --max-abs 0); then
  echo "ok   mapping lossless: $res"
else
  echo "FAIL mapping not lossless: $res"; fail=1
fi
exit $fail
