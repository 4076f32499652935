#!/usr/bin/env bash
# The bundled models in every export format (issue 7's evidence): FP and RTN w4 g32, exported to GGUF F32 / Q8_0 / Q4_K_M /
# Q4_0, gptq_v2 and compressed-tensors; per file its size, bits per weight (file bytes * 8 / model parameters) and
# perplexity measured by `ptq eval ppl` on the exported file itself, and for GGUF by llama.cpp (npm node-llama-cpp,
# tests/oracle/llama_ppl.mjs) on exactly the same token windows. Prints Markdown (scripts/update_readme.sh puts it in
# the README section "export-table"). Needs python3 (formatting) and npm (without it the llama.cpp column says so).
# A few windows per model keep it to a few minutes on 2 cores.
# Environment: PTQ_BIN (an existing ptq binary; default: build/ptq, built by scripts/build.sh),
#              NPM_DIR (node packages; default build/npm-oracle, shared with scripts/check_gguf_llama_cpp.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [[ -n ${PTQ_BIN:-} ]]; then
  ptq_bin=$(realpath "$PTQ_BIN")
else
  scripts/build.sh ptq >/dev/null
  ptq_bin=$root/build/ptq
fi
ptq="$ptq_bin --quiet"
npm_dir=${NPM_DIR:-$root/build/npm-oracle}
work=$(mktemp -d "${TMPDIR:-/tmp}/ptq-export-table.XXXXXX")
trap 'rm -rf "$work"' EXIT

# llama.cpp through npm, the pinned versions of scripts/check_gguf_llama_cpp.sh.
llama=1
mkdir -p "$npm_dir"
if [[ ! -d $npm_dir/node_modules/@node-llama-cpp/linux-x64 ]]; then
  [[ -f $npm_dir/package.json ]] || echo '{"name": "ptq-oracle", "private": true}' >"$npm_dir/package.json"
  if ! command -v npm >/dev/null || ! (cd "$npm_dir" && npm install --no-save --ignore-scripts --omit=optional \
      --no-audit --no-fund node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 @huggingface/gguf@0.4.6 \
      >npm-install.log 2>&1); then
    llama=0
  fi
fi
[[ $llama -eq 1 ]] && cp tests/oracle/llama_ppl.mjs "$npm_dir/"

# model | text | seqlen | windows
run_model() {
  local model=$1 text=$2 seqlen=$3 windows=$4
  local tag w rows
  tag=$(basename "$model")
  w=$work/$tag
  rows=$w.rows.jsonl
  : >"$rows"
  row() { printf '{"weights": "%s", "format": "%s", "path": "%s"}\n' "$1" "$2" "$3" >>"$rows"; }
  # Unquantized tensors of the gptq / compressed-tensors exports keep the model's own dtype (values unchanged).
  local fdt
  fdt=$(python3 -c "import json,sys; print({'float32':'F32','bfloat16':'BF16'}.get(json.load(open(sys.argv[1])).get('torch_dtype'),'F16'))" "$model/config.json")

  row FP "HF safetensors ($(tr '[:upper:]' '[:lower:]' <<<"$fdt"))" "$model"
  for t in f32 q8_0 q4_0 q4_k_m; do
    $ptq export "$model" --format gguf --gguf-type $t -o "$w-$t.gguf" >/dev/null 2>&1
    local how="quantized as llama-quantize --pure"
    [[ $t == f32 ]] && how="converted"
    [[ $t == q4_k_m ]] && how="llama-quantize's mix"
    row FP "GGUF ${t^^} ($how)" "$w-$t.gguf"
  done
  $ptq quantize "$model" --recipe configs/w4a16-rtn.yaml --group-size 32 -o "$w-rtn" >/dev/null 2>&1
  row "RTN w4 g32" "ptq checkpoint" "$w-rtn"
  $ptq export "$w-rtn" --format gguf -o "$w-rtn.gguf" >/dev/null 2>&1
  row "RTN w4 g32" "GGUF Q4_0 (mapped, no re-quantization)" "$w-rtn.gguf"
  $ptq export "$w-rtn" --format gptq_v2 --float-dtype "$fdt" --keep-unpackable-float -o "$w-gptq_v2" >/dev/null 2>&1
  row "RTN w4 g32" "gptq_v2" "$w-gptq_v2"
  $ptq export "$w-rtn" --format compressed-tensors --float-dtype "$fdt" --keep-unpackable-float -o "$w-ct" >/dev/null 2>&1
  row "RTN w4 g32" "compressed-tensors (pack-quantized)" "$w-ct"
  $ptq export "$w-gptq_v2" --format gguf -o "$w-gptq_v2.gguf" >/dev/null 2>&1
  row "RTN w4 g32" "GGUF from the gptq_v2 export (GPTQ -> GGUF)" "$w-gptq_v2.gguf"

  local paths
  mapfile -t paths < <(python3 -c "import json,sys; [print(json.loads(l)['path']) for l in open(sys.argv[1])]" "$rows")
  $ptq eval ppl "${paths[@]}" --data "$text" --seqlen "$seqlen" --max-windows "$windows" --json >"$w.ppl.json"
  $ptq inspect "$model" --json >"$w.inspect.json"
  : >"$w.llama.jsonl"
  if [[ $llama -eq 1 ]]; then
    $ptq tokenize "$model" --file "$text" --json >"$w.ids.json"
    for p in "${paths[@]}"; do
      [[ $p == *.gguf ]] || continue
      printf '{"path": "%s", "result": %s}\n' "$p" \
        "$(node "$npm_dir/llama_ppl.mjs" "$p" "$w.ids.json" "$seqlen" "$windows")" >>"$w.llama.jsonl"
    done
  fi
  python3 - "$w" "$tag" "$text" "$seqlen" "$windows" "$llama" <<'PY'
import json, os, sys
w, tag, text, seqlen, windows, llama = sys.argv[1:]
rows = [json.loads(l) for l in open(w + ".rows.jsonl")]
ppl = {r["model"]: r for r in json.load(open(w + ".ppl.json"))["results"]}
lcpp = {}
for l in open(w + ".llama.jsonl"):
    d = json.loads(l)
    lcpp[d["path"]] = d["result"]
params = json.load(open(w + ".inspect.json"))["parameters"]

def size(p):
    if os.path.isfile(p):
        return os.path.getsize(p)
    return sum(os.path.getsize(os.path.join(p, f)) for f in os.listdir(p) if f.endswith(".safetensors"))

first = ppl[rows[0]["path"]]
print(f"**{tag}** ({params:,} parameters) — ppl on the first {first['windows']} windows of {seqlen} tokens of "
      f"`{os.path.basename(text)}` ({first['predicted_tokens']:,} predicted tokens)\n")
print("| weights | format | file size | bits/weight | ppl (ptq) | ppl (llama.cpp) |")
print("|---|---|---|---|---|---|")
for r in rows:
    p = ppl[r["path"]]
    assert p["windows"] == first["windows"] and p["tokens"] == first["tokens"], r["path"]
    b = size(r["path"])
    if r["path"].endswith(".gguf"):
        if llama != "1":
            lc = "npm unavailable"
        else:
            l = lcpp[r["path"]]
            assert l["windows"] == p["windows"] and l["predicted"] == p["predicted_tokens"], r["path"]
            lc = f"{l['ppl']:.4f}"
    else:
        lc = "-"
    print(f"| {r['weights']} | {r['format']} | {b / 1e6:.3f} MB | {8 * b / params:.3f} | {p['ppl']:.4f} | {lc} |")
print()
PY
}

echo "Measured by \`scripts/export_table.sh\` ($($ptq_bin --version)); llama.cpp is node-llama-cpp@3.22.1's"
echo "prebuilt CPU build (F32 KV cache, no flash attention), fed ptq's token ids window by window. bits/weight = file bytes x 8 /"
echo "model parameters (tokenizer and metadata included for GGUF)."
echo
run_model data/models/stories260K data/tinystories-valid.txt 512 20
run_model data/models/sotu-llama-8m data/sotu-test.txt 256 40
echo "stories260K's down_proj (172 input columns) stays floating point in the w4 g32 checkpoint and is F16 in the GGUF"
echo "types (no 32-block fits: llama.cpp's fallback), and its gate/up (172 rows) cannot fill GPTQ's int32 qzeros words along"
echo "the output dimension: the gptq_v2 export keeps them as float weights (\`--keep-unpackable-float\`), and so does the"
echo "GGUF made from it. \`--gguf-type\` quantizes token_embd and output too, as llama-quantize does; the GGUF mapped from a"
echo "quantized checkpoint keeps them F32 (for sotu-llama-8m 4.1M of its 8.8M parameters, hence that file's size). Every"
echo "export of the RTN checkpoint has its perplexity exactly under ptq (the same stored values); llama.cpp rounds"
echo "activations to 8 bits in quantized matmuls."
