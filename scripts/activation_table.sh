#!/usr/bin/env bash
# Activation quantization table (issue 6): perplexity of every method at W8A8 / W6A6 / W4A8 / W4A4 on the bundled
# models and their outlierized variants (ptq outlierize --channels 4 --scale 50 --seed 0), in-domain and
# out-of-domain. Prints Markdown (the README's "activation-table" section, via scripts/update_readme.sh).
# Usage: scripts/activation_table.sh [PTQ_BINARY]   (default build/ptq; runs ~20 min on 2 cores)
# Settings: calibration = each recipe's (32 windows of the model context from data/sotu-train.txt, seed 0);
# evaluation = the first $WINDOWS windows of 256 tokens. Weight grids: W8 / W6 / W4 per output channel, W4A8 with
# groups of 128 (FPTQ's grid; per channel on stories260K, whose widths 64/172 take no group of 128).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ptq=$(realpath "${1:-$root/build/ptq}")
WINDOWS=${WINDOWS:-40}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$root"

# method label | recipe | settings it runs at
cells=(
  "RTN per-tensor static|w8a8-rtn-static|W8A8 W6A6 W4A8 W4A4"
  "RTN per-token dynamic|w4a4-rtn-dynamic|W8A8 W6A6 W4A8 W4A4"
  "SmoothQuant (a=0.5, static)|w8a8-smoothquant|W8A8 W6A6 W4A8 W4A4"
  "FPTQ (LAE + policy)|w4a8-fptq|W8A8 W4A8"
  "OutlierTune|w8a8-outliertune|W8A8 W6A6 W4A8 W4A4"
  "MergeQuant (QSM + DR + clip)|w4a4-mergequant|W8A8 W6A6 W4A8 W4A4"
  "MergeQuant, paper's split rule (split_on: step)|w4a4-mergequant-step|W4A8 W4A4"
  "QuaRot-RTN (Hadamard, dynamic)|w4a4-rtn-dynamic --hadamard|W8A8 W4A4"
)
settings=(W8A8 W6A6 W4A8 W4A4)

flags_for() {  # SETTING MODEL -> weight/activation override flags
  local wg=-1
  case $1 in
    W8A8) echo "--bits 8 --group-size -1 --act-bits 8" ;;
    W6A6) echo "--bits 6 --group-size -1 --act-bits 6" ;;
    W4A8) [[ $2 == sotu-llama-8m ]] && wg=128; echo "--bits 4 --group-size $wg --act-bits 8" ;;
    W4A4) echo "--bits 4 --group-size -1 --act-bits 4" ;;
  esac
}

ppl_json() {  # DATA MODELS... -> "model ppl" lines
  local data=$1
  shift
  "$ptq" -q eval ppl "$@" --data "$data" --seqlen 256 --max-windows "$WINDOWS" --json |
    python3 -c 'import json,sys; [print(r["model"], "%.2f" % r["ppl"]) for r in json.load(sys.stdin)["results"]]'
}

echo "| model | method | setting | ppl in-domain | ppl out-of-domain (moby-dick) |"
echo "|---|---|---|---|---|"
for model in sotu-llama-8m stories260K; do
  case $model in
    sotu-llama-8m) indomain=data/sotu-test.txt ;;
    stories260K) indomain=data/tinystories-valid.txt ;;
  esac
  "$ptq" -q outlierize "data/models/$model" -o "$tmp/$model-outlier" --channels 4 --scale 50 --seed 0 >/dev/null
  for variant in "" "-outlier"; do
    src="data/models/$model"
    [[ -n $variant ]] && src="$tmp/$model$variant"
    name="$model$variant"
    outs=("$src")
    labels=("FP|-")
    for cell in "${cells[@]}"; do
      IFS='|' read -r label recipe sets <<<"$cell"
      read -r recipe_name extra <<<"$recipe"
      recipe_file=configs/$recipe_name.yaml
      if [[ $recipe_name == w4a4-mergequant-step ]]; then  # the shipped recipe with the paper's split criterion
        recipe_file=$tmp/$recipe_name.yaml
        sed 's/^  split_on: weight/  split_on: step/' configs/w4a4-mergequant.yaml >"$recipe_file"
      fi
      for s in $sets; do
        out="$tmp/q-$name-${recipe_name}${extra:+-rot}-$s"
        # shellcheck disable=SC2046
        "$ptq" -q quantize "$src" --recipe "$recipe_file" $extra $(flags_for "$s" "$model") \
          -o "$out" --force >/dev/null
        outs+=("$out")
        labels+=("$label|$s")
      done
    done
    ppl_json "$indomain" "${outs[@]}" >"$tmp/in.txt"
    ppl_json data/moby-dick.txt "${outs[@]}" >"$tmp/ood.txt"
    for i in "${!outs[@]}"; do
      IFS='|' read -r label s <<<"${labels[$i]}"
      pin=$(sed -n "$((i + 1))p" "$tmp/in.txt" | awk '{print $2}')
      pood=$(sed -n "$((i + 1))p" "$tmp/ood.txt" | awk '{print $2}')
      echo "| $name | $label | $s | $pin | $pood |"
    done
  done
done
echo
echo "Outlierized: \`ptq outlierize --channels 4 --scale 50 --seed 0\` (FP perplexity unchanged). Calibration: each recipe's"
echo "32 windows of data/sotu-train.txt (seed 0). Evaluation: first $WINDOWS windows of 256 tokens."
echo "Produced by \`scripts/activation_table.sh\` (ptq built from $(git -C "$root" describe --always --dirty)), $(nproc) cores."
