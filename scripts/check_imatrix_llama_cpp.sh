#!/usr/bin/env bash
# Compares `ptq export STATS --format imatrix` with llama.cpp's own llama-imatrix (built from the llama.cpp source
# node-llama-cpp ships, linked against its prebuilt libraries: scripts/lib_npm_oracle.sh) on the same model and the
# same token windows: sotu-llama-8m exported as F32 GGUF, 16 windows of 256 tokens of data/sotu-test.txt.
# llama-imatrix cuts its tokenized text into consecutive chunks of n_ctx tokens, each starting with BOS, and counts
# every token; ptq calibrate draws windows at random offsets, except from a text of exactly one window. So
# tests/oracle/imatrix_windows.mjs builds llama-imatrix's text from 16 runs of whole words and, for ptq, one file per
# chunk holding exactly that chunk's tokens (it checks that llama.cpp's tokenizer agrees); ptq calibrates each
# (--nsamples 1 --seqlen 256) and exports it, and tests/oracle/imatrix_compare.mjs sums the 16 files as
# llama-imatrix --in-file would and compares: the entries (names), the shapes of in_sum2/counts, the counts, and per
# column the mean square activation in_sum2 / counts.
# Limits: against llama-imatrix with fp32 attention (-fa off -ctk f32 -ctv f32), max relative difference 1e-4:
# both sides are fp32 forwards of the same weights on the same tokens, differing only in summation order (measured
# 1.1e-5; the worst-case fp32 rounding of a 4096-term sum alone is 4096 x 2^-24 = 2.4e-4, its typical size
# sqrt(4096) x 2^-24 = 4e-6). Against llama-imatrix's defaults (flash attention, whose CPU kernel rounds K/V to F16)
# 1e-3: the attention output feeding attn_output, and all that follows, carries F16 rounding (2^-11 = 4.9e-4;
# measured 4.2e-4). llama-imatrix must also load ptq's files and merge them into one equal to their sum.
# Usage: check_imatrix_llama_cpp.sh PTQ_BINARY [NPM_DIR]   (NPM_DIR default: build/npm-oracle; not committed)
# Exit 0 pass, 1 fail, 77 npm packages, g++ or the llama.cpp source bundle unavailable (skipped).
set -euo pipefail
ptq=$(realpath "$1")
root=$(cd "$(dirname "$0")/.." && pwd)
npm_dir=$(realpath -m "${2:-$root/build/npm-oracle}")
model=$root/data/models/sotu-llama-8m
text=$root/data/sotu-test.txt
chunks=16 n_ctx=256

# shellcheck source=scripts/lib_npm_oracle.sh
source "$root/scripts/lib_npm_oracle.sh"
npm_oracle_install "$npm_dir" || exit $?
npm_oracle_scripts "$npm_dir" "$root" imatrix_windows imatrix_compare
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
skip=$(npm_oracle_llama_imatrix "$npm_dir" "$tmp/imatrix-build.log") || { echo "$skip"; exit 77; }
# The CPU backends are loaded at run time from the executable's directory or the working directory: run from theirs.
bins=$npm_dir/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
llama_imatrix() { (cd "$bins" && "$npm_dir/llama-imatrix" "$@"); }

"$ptq" -q export "$model" --format gguf -o "$tmp/model.gguf" >/dev/null
# One line of single-space-separated words: SentencePiece then tokenizes every word alone.
tr -s ' \n\t\r' ' ' <"$text" | sed 's/^ //; s/ $//' >"$tmp/flat.txt"
"$ptq" -q tokenize "$model" --file "$tmp/flat.txt" --no-special --json >"$tmp/flat.json"
mkdir "$tmp/w"
node "$npm_dir/imatrix_windows.mjs" "$tmp/model.gguf" "$tmp/flat.txt" "$tmp/flat.json" "$chunks" "$n_ctx" "$tmp/w" \
  >/dev/null

fail=0
common=(-m "$tmp/model.gguf" -f "$tmp/w/llama.txt" -c "$n_ctx" --chunks "$chunks" --no-ppl)
llama_imatrix "${common[@]}" -fa off -ctk f32 -ctv f32 -o "$tmp/llama-fp32.gguf" >"$tmp/llama-fp32.log" 2>&1 ||
  { echo "FAIL llama-imatrix (fp32 attention), see its log:"; tail -5 "$tmp/llama-fp32.log"; exit 1; }
llama_imatrix "${common[@]}" -o "$tmp/llama-default.gguf" >"$tmp/llama-default.log" 2>&1 ||
  { echo "FAIL llama-imatrix (defaults), see its log:"; tail -5 "$tmp/llama-default.log"; exit 1; }

ptq_files=()
for ((k = 0; k < chunks; ++k)); do
  "$ptq" -q calibrate "$model" --data "$tmp/w/chunk_$k.txt" --nsamples 1 --seqlen "$n_ctx" \
    -o "$tmp/stats_$k.safetensors" >/dev/null
  # One window only when the text is exactly one window long (the stats file's header records the text's tokens).
  head -c 65536 "$tmp/stats_$k.safetensors" | grep -aq "\"text_tokens\":\"$n_ctx\"" ||
    { echo "FAIL chunk $k: ptq calibrate did not read exactly $n_ctx tokens from $tmp/w/chunk_$k.txt"; exit 1; }
  "$ptq" -q export "$tmp/stats_$k.safetensors" --format imatrix -o "$tmp/ptq_$k.gguf" >/dev/null
  ptq_files+=("$tmp/ptq_$k.gguf")
done
ptq_list=$(IFS=,; echo "${ptq_files[*]}")

compare() {  # LABEL REF TEST TOL
  local res
  echo "$1:"
  if res=$(node "$npm_dir/imatrix_compare.mjs" "$2" "$3" "$4"); then
    echo "$res" | sed '$d; s/^/  /'; echo "ok   $1: $(echo "$res" | tail -1)"
  else
    echo "$res" | sed '$d; s/^/  /'; echo "FAIL $1: $(echo "$res" | tail -1)"; fail=1
  fi
}
compare "ptq vs llama-imatrix, fp32 attention" "$tmp/llama-fp32.gguf" "$ptq_list" 1e-4
compare "ptq vs llama-imatrix, defaults (F16 flash attention)" "$tmp/llama-default.gguf" "$ptq_list" 1e-3
# llama.cpp's loader (common/imatrix-loader.cpp) reads ptq's files; its merge must equal their sum.
if llama_imatrix -m "$tmp/model.gguf" -c "$n_ctx" --in-file "$ptq_list" -o "$tmp/merged.gguf" >"$tmp/merge.log" 2>&1
then
  compare "llama-imatrix --in-file merge of ptq's files vs their sum" "$tmp/merged.gguf" "$ptq_list" 1e-6
else
  echo "FAIL llama-imatrix cannot merge ptq's files:"; tail -5 "$tmp/merge.log"; fail=1
fi
[[ $fail == 0 ]] && echo "PASS: ptq's imatrix is llama-imatrix's on the same windows" || echo "FAIL"
exit $fail
