#!/usr/bin/env bash
# FP vs RTN vs GPTQ on the bundled models: perplexity in-domain and out-of-domain, average bits per
# quantized weight, checkpoint size, quantization time and peak RSS. Prints a Markdown table per model
# (scripts/update_readme.sh puts it in the README). Needs python3 for the formatting. ~15 min on 2 cores.
# PTQ_BIN: an existing ptq binary (default: build/ptq, built by scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -n ${PTQ_BIN:-} ]] || scripts/build.sh ptq >/dev/null
ptq="${PTQ_BIN:-build/ptq} --quiet"
work=$(mktemp -d "${TMPDIR:-/tmp}/ptq-quant-table.XXXXXX")
trap 'rm -rf "$work"' EXIT

# model | in-domain text | seqlen | ood text | ood windows | settings (name:flags)
run_model() {
  local model=$1 indomain=$2 seqlen=$3 ood=$4 ood_windows=$5
  shift 5
  local tag
  tag=$(basename "$model")
  local models=("$model")
  : >"$work/$tag.quant.jsonl"
  for setting in "$@"; do
    local name=${setting%%:*} flags=${setting#*:}
    for method in rtn gptq; do
      local out="$work/$tag-$name-$method"
      # shellcheck disable=SC2086
      $ptq quantize "$model" --recipe configs/w4a16-$method.yaml $flags -o "$out" --json \
        | python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({'setting':'$name','method':'$method','path':'$out','bits':d['avg_bits_per_weight'],'bytes':d['output_bytes'],'seconds':d['seconds'],'rss':d['peak_rss_mb'],'fp_modules':len(d['unquantized'])}))" \
        >>"$work/$tag.quant.jsonl"
      models+=("$out")
    done
  done
  $ptq eval ppl "${models[@]}" --data "$indomain" --seqlen "$seqlen" --json >"$work/$tag.in.json"
  $ptq eval ppl "${models[@]}" --data "$ood" --seqlen "$seqlen" --max-windows "$ood_windows" --json >"$work/$tag.ood.json"
  python3 - "$work" "$tag" "$model" "$indomain" "$ood" "$ood_windows" "$seqlen" <<'PY'
import json, sys, os
work, tag, model, indomain, ood, ood_windows, seqlen = sys.argv[1:]
quant = [json.loads(l) for l in open(os.path.join(work, tag + ".quant.jsonl"))]
ppl_in = {r["model"]: r["ppl"] for r in json.load(open(os.path.join(work, tag + ".in.json")))["results"]}
ppl_ood = {r["model"]: r["ppl"] for r in json.load(open(os.path.join(work, tag + ".ood.json")))["results"]}
fp_size = sum(os.path.getsize(os.path.join(model, f)) for f in os.listdir(model) if f.endswith(".safetensors"))
print(f"**{tag}** — ppl on `{os.path.basename(indomain)}` (in-domain, all windows) and `{os.path.basename(ood)}` "
      f"(out-of-domain, first {ood_windows} windows), seqlen {seqlen}; GPTQ calibrated on 128 windows of "
      f"`sotu-train.txt`.\n")
print("| weights | method | ppl in-domain | ppl out-of-domain | bits/weight | FP modules | size | quant time | peak RSS |")
print("|---|---|---|---|---|---|---|---|---|")
fp_dtype = json.load(open(os.path.join(model, "config.json"))).get("torch_dtype", "float32")
fp_bits = {"float16": 16, "bfloat16": 16, "float32": 32}.get(fp_dtype, 32)
print(f"| FP ({fp_dtype}) | - | {ppl_in[model]:.3f} | {ppl_ood[model]:.3f} | {fp_bits} | all | "
      f"{fp_size / 1e6:.2f} MB | - | - |")
for q in quant:
    p_in, p_ood = ppl_in[q["path"]], ppl_ood[q["path"]]
    d_in = 100 * (p_in / ppl_in[model] - 1)
    print(f"| {q['setting']} | {q['method'].upper()} | {p_in:.3f} ({d_in:+.1f}%) | {p_ood:.3f} "
          f"({100 * (p_ood / ppl_ood[model] - 1):+.1f}%) | {q['bits']:.3f} | {q['fp_modules']} | "
          f"{q['bytes'] / 1e6:.2f} MB | {q['seconds']:.1f} s | {q['rss']:.0f} MB |")
print()
PY
}

echo "RTN ignores --act-order (it has no Hessian to order columns by)."
echo
echo "Measured by \`scripts/quant_table.sh\` on $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p'))."
echo
run_model data/models/sotu-llama-8m data/sotu-test.txt 256 data/moby-dick.txt 200 \
  "W4 g128:--bits 4 --group-size 128 --sym" "W3 g128 act-order:--bits 3 --group-size 128 --sym --act-order" \
  "W4 per-channel:--bits 4 --group-size -1 --sym" "W2 g64 asym:--bits 2 --group-size 64 --asym"
run_model data/models/stories260K data/tinystories-valid.txt 512 data/moby-dick.txt 50 \
  "W4 per-channel:--bits 4 --group-size -1 --sym" "W3 per-channel act-order:--bits 3 --group-size -1 --sym --act-order" \
  "W4 g32:--bits 4 --group-size 32 --sym" "W2 g64 asym:--bits 2 --group-size 64 --asym"
echo "stories260K's down_proj reads 172 columns, which no group of 32/64/128 divides: with group formats it"
echo "stays floating point (the \"FP modules\" column), as the quantize policy logs; 128-column groups fit no module."
