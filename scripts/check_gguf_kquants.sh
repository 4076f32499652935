#!/usr/bin/env bash
# ptq's GGUF block types against llama.cpp's own llama-quantize, byte for byte. For data/models/sotu-llama-8m (hidden
# 256, ffn 768: every row a multiple of 256) and data/models/stories260K (dim 64, ffn 172: the fallbacks Q4_0 / Q5_0
# / Q5_1 / Q8_0 / F16): ptq's F32 GGUF is quantized by llama-quantize (built from the llama.cpp source node-llama-cpp
# ships, linked to its prebuilt libggml-base: scripts/lib_npm_oracle.sh) for every pure type (--pure) and every K-quant
# mix, without and with the importance matrix ptq exports (`ptq export STATS --format imatrix`); ptq exports the same
# model with the same --gguf-type (and --stats STATS); tests/oracle/gguf_compare.mjs then requires every tensor to
# have the same ggml type, shape and bytes (the metadata differ: llama-quantize copies ptq's and adds its own).
# Finally llama.cpp (node-llama-cpp) scores every K-quant export of sotu-llama-8m (tests/oracle/llama_ppl.mjs on
# data/sotu-test.txt): the perplexity must be finite.
# Usage: check_gguf_kquants.sh PTQ_BINARY [NPM_DIR] [--full]   (NPM_DIR default: build/npm-oracle; not committed)
#   default (what scripts/test.sh runs, 36 of the 80 cases): every type and mix once on sotu-llama-8m, the imatrix
#   rounding of every block type once, stories260K's fallbacks through the mixes, llama.cpp scoring q2_k / q4_k_m;
#   --full: all 80 files (both models x 20 cases x with and without the imatrix) and every K-quant scored.
# Exit 0 pass, 1 fail, 77 npm packages, g++ or the llama.cpp source bundle unavailable (skipped).
set -euo pipefail
ptq=$(realpath "$1")
root=$(cd "$(dirname "$0")/.." && pwd)
npm_dir=${2:-$root/build/npm-oracle}
full=0
[[ ${3:-} == --full ]] && full=1
# wanted MODEL OURS KIND IMX: whether the default run compares this case (every quantizer function, plain and
# importance-weighted, and every mix's per-tensor rule are reached at least once).
wanted() {
  [[ $full == 1 ]] && return 0
  local model=$1 ours=$2 kind=$3 imx=$4
  # stories260K: one mix per fallback its rows take (Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0).
  if [[ $model == stories260K ]]; then
    [[ $imx == plain && $kind == mix && " q2_k_mix q3_k_m q4_k_m q5_k_m q6_k_mix " == *" $ours "* ]]; return
  fi
  [[ $imx == plain ]] && return 0
  [[ $kind == pure || $ours == q4_k_m ]]
}

# shellcheck source=scripts/lib_npm_oracle.sh
source "$root/scripts/lib_npm_oracle.sh"
npm_oracle_install "$npm_dir" || exit $?
npm_oracle_scripts "$npm_dir" "$root" gguf_compare llama_ppl

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
skip=$(npm_oracle_llama_quantize "$npm_dir" "$tmp/quantize-build.log") || { echo "$skip"; exit 77; }
quantize=$npm_dir/llama-quantize

# ptq --gguf-type : llama-quantize type : --pure or not. q6_k is also compared with llama.cpp's Q6_K mix (the same file
# for a llama, as gguf_export.h says).
cases=(q8_0:Q8_0:pure q4_0:Q4_0:pure q4_1:Q4_1:pure q5_0:Q5_0:pure q5_1:Q5_1:pure
       q2_k:Q2_K:pure q3_k:Q3_K:pure q4_k:Q4_K:pure q5_k:Q5_K:pure q6_k:Q6_K:pure
       q2_k_mix:Q2_K:mix q3_k_s:Q3_K_S:mix q3_k_m:Q3_K_M:mix q3_k_l:Q3_K_L:mix q4_k_s:Q4_K_S:mix q4_k_m:Q4_K_M:mix
       q5_k_s:Q5_K_S:mix q5_k_m:Q5_K_M:mix q6_k_mix:Q6_K:mix q6_k:Q6_K:mix)
fail=0
"$ptq" -q tokenize "$root/data/models/sotu-llama-8m" --file "$root/data/sotu-test.txt" --json >"$tmp/sotu.ids.json"
for model in sotu-llama-8m stories260K; do
  dir=$root/data/models/$model
  m=$tmp/$model
  "$ptq" -q export "$dir" --format gguf -o "$m.f32.gguf" >/dev/null
  "$ptq" -q calibrate "$dir" -o "$m.stats" --data "$root/data/sotu-train.txt" --nsamples 8 --seqlen 128 >/dev/null 2>&1
  "$ptq" -q export "$m.stats" --format imatrix -o "$m.imatrix.gguf" >/dev/null
  for c in "${cases[@]}"; do
    IFS=: read -r ours theirs kind <<<"$c"
    for imx in plain imatrix; do
      wanted "$model" "$ours" "$kind" "$imx" || continue
      name="$model $ours ($kind llama-quantize $theirs, $imx)"
      out=$m.$ours.$kind.$imx
      llama_args=()
      ptq_args=()
      [[ $kind == pure ]] && llama_args+=(--pure)
      [[ $imx == imatrix ]] && { llama_args+=(--imatrix "$m.imatrix.gguf"); ptq_args+=(--stats "$m.stats"); }
      if ! "$quantize" "${llama_args[@]}" "$m.f32.gguf" "$out.llama.gguf" "$theirs" 2 >"$out.llama.log" 2>&1; then
        echo "FAIL $name: llama-quantize: $(grep -m1 -i 'error\|failed' "$out.llama.log")"; fail=1; continue
      fi
      if [[ $imx == imatrix ]] && ! grep -q "loaded [0-9]* importance matrix entries" "$out.llama.log"; then
        echo "FAIL $name: llama-quantize did not load the imatrix"; fail=1; continue
      fi
      if ! "$ptq" -q export "$dir" --format gguf --gguf-type "$ours" "${ptq_args[@]}" -o "$out.ptq.gguf" \
          >"$out.ptq.log" 2>&1; then
        echo "FAIL $name: ptq export: $(tail -1 "$out.ptq.log")"; fail=1; continue
      fi
      if res=$(node "$npm_dir/gguf_compare.mjs" "$out.ptq.gguf" "$out.llama.gguf"); then
        echo "ok   $name: $(node -e '
          const r = JSON.parse(process.argv[1]);
          const n = {};
          for (const t of Object.values(r.types)) n[t] = (n[t] || 0) + 1;
          console.log(`${r.identical}/${r.tensors} tensors bit-identical, ptq ${r.bytes_a} bytes, llama.cpp ${r.bytes_b} bytes;`,
                      Object.entries(n).map(([t, k]) => `${k} ${t}`).join(", "));' "$res")"
      else
        echo "FAIL $name: $(node -e '
          const r = JSON.parse(process.argv[1]);
          console.log(`${r.identical}/${r.tensors} identical; mismatches:`, JSON.stringify(r.mismatches.slice(0, 6)));' "$res")"
        fail=1
      fi
    done
  done
done

# llama.cpp runs every K-quant export of sotu-llama-8m (ptq's files, which the comparison above showed equal to
# llama-quantize's where it printed ok).
m=$tmp/sotu-llama-8m
fp=$(node "$npm_dir/llama_ppl.mjs" "$m.f32.gguf" "$tmp/sotu.ids.json" 256 4)
echo "ppl  sotu-llama-8m f32: $fp"
for c in "${cases[@]}"; do
  IFS=: read -r ours _ kind <<<"$c"
  [[ $ours == q[2-6]_k* && ! ($ours == q6_k && $kind == mix) ]] || continue
  [[ $full == 1 || $ours == q2_k || $ours == q4_k_m ]] || continue
  for imx in plain imatrix; do
    f=$m.$ours.$kind.$imx.ptq.gguf
    [[ -f $f ]] || continue
    if res=$(node "$npm_dir/llama_ppl.mjs" "$f" "$tmp/sotu.ids.json" 256 4) &&
        node -e 'process.exit(Number.isFinite(JSON.parse(process.argv[1]).ppl) ? 0 : 1)' "$res"; then
      echo "ppl  sotu-llama-8m $ours $imx ($(stat -c %s "$f") bytes): $res"
    else
      echo "FAIL llama.cpp cannot score sotu-llama-8m $ours $imx: $res"; fail=1
    fi
  done
done
exit $fail
