#!/usr/bin/env bash
# The main job on the bundled default model (stories260K, pretrained on TinyStories), in a few minutes after the
# build: set-up and build, then three steps, each a table with Δ% against the first row and a one-line verdict:
#   1. weights: 4-bit GPTQ vs round-to-nearest (RTN), groups of 32: perplexity and zero-shot accuracy vs FP;
#   2. activations: the model with planted outlier channels (function-preserving), W8A8 and W4A4, naive vs the
#      migration methods (SmoothQuant, MergeQuant);
#   3. export: the GPTQ checkpoint as a GGUF Q4_0 file (mapped, not re-quantized), checked by llama.cpp itself
#      (node-llama-cpp from npm) on the same token windows; skipped, saying so, when npm is unavailable.
# Perplexities use --max-windows so the demo stays short; the README's tables use whole files.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh ptq >/dev/null
start=$(date +%s)
ptq="build/ptq -q"
model=data/models/stories260K
out=out/demo
mkdir -p $out
text=data/tinystories-valid.txt
windows=25

# `eval ppl --json` of [baseline, a, b, ...] on the demo's windows.
ppl_json() { $ptq eval ppl "$@" --data $text --seqlen 512 --max-windows $windows --json; }
show_ppl() {  # JSON LABEL... : the table with Δ% vs the first row
  python3 - "$@" <<'EOF'
import json, sys
res = json.loads(sys.argv[1])["results"]
labels = sys.argv[2:]
base = res[0]["ppl"]
print(f"  {'model':<34} {'ppl':>9} {'Δ% vs FP':>10}")
for label, r in zip(labels, res):
    q = r["ppl"] / base
    d = "-" if r is res[0] else (f"{100 * (q - 1):+.1f}" if q < 10 else f"x{q:.3g}")
    print(f"  {label:<34} {r['ppl']:>9.4g} {d:>10}")
EOF
}

echo "== 1. weights: 4-bit, groups of 32, GPTQ vs RTN"
$ptq quantize $model --recipe w4a16-gptq --group-size 32 -o $out/w4-gptq --force >/dev/null
$ptq quantize $model --recipe w4a16-rtn --group-size 32 -o $out/w4-rtn --force >/dev/null
j=$(ppl_json $model $out/w4-rtn $out/w4-gptq)
echo "perplexity, TinyStories validation ($windows windows of 512 tokens):"
show_ppl "$j" "FP (stories260K)" "W4 g32 RTN" "W4 g32 GPTQ"
python3 - "$j" <<'EOF'
import json, sys
fp, rtn, gptq = (r["ppl"] for r in json.loads(sys.argv[1])["results"])
kept = 100 * (1 - (gptq - fp) / (rtn - fp)) if rtn > fp else 0
print(f"verdict: GPTQ costs {100*(gptq/fp-1):+.1f}% perplexity where RTN costs {100*(rtn/fp-1):+.1f}%"
      + (f": it removes {kept:.0f}% of RTN's damage at the same size." if gptq < rtn else ": no gain here."))
EOF
echo "zero-shot accuracy (Δ acc pt: percentage points against FP):"
$ptq eval tasks $model $out/w4-rtn $out/w4-gptq --tasks data/tasks/tinystories-continuation.jsonl \
  data/tasks/tinystories-cloze.jsonl --limit 150 | grep -v "items/s\|truncated"
echo

echo "== 2. activations: 4 planted outlier channels x50 (FP output unchanged), then W8A8 and W4A4"
$ptq outlierize $model -o $out/outlier --channels 4 --scale 50 --force >/dev/null
acts=(w8a8-rtn-static w8a8-smoothquant w4a4-rtn-dynamic w4a4-mergequant)
for r in "${acts[@]}"; do
  $ptq quantize $out/outlier --recipe $r -o $out/outlier-$r --force --nsamples 32 >/dev/null
done
j=$(ppl_json $out/outlier "${acts[@]/#/$out/outlier-}")
show_ppl "$j" "FP (with outliers)" "W8A8 naive per-tensor static" "W8A8 SmoothQuant" "W4A4 naive per-token dynamic" \
  "W4A4 MergeQuant (static)"
python3 - "$j" <<'EOF'
import json, sys
fp, w8, sq, w4, mq = (r["ppl"] for r in json.loads(sys.argv[1])["results"])
d = lambda x: f"{100*(x/fp-1):+.1f}%" if x / fp < 10 else f"x{x/fp:.3g} perplexity"
better = lambda a, b: "beats" if a < b else "does not beat"
print(f"verdict: naive static W8A8 costs {d(w8)}, SmoothQuant {d(sq)} ({better(sq, w8)} naive); "
      f"W4A4: static MergeQuant {d(mq)} {better(mq, w4)} dynamic per-token scales ({d(w4)}).")
EOF
echo

echo "== 3. export: the GPTQ checkpoint as GGUF Q4_0 (mapped bit for bit), run by llama.cpp"
$ptq export $out/w4-gptq --format gguf -o $out/w4-gptq.gguf --force >/dev/null
ls -l $out/w4-gptq.gguf | awk '{print "  " $NF ": " $5 " bytes"}'
# shellcheck source=scripts/lib_npm_oracle.sh
source scripts/lib_npm_oracle.sh
npm_dir=build/npm-oracle
if msg=$(npm_oracle_install $npm_dir); then
  npm_oracle_scripts $npm_dir "$PWD" llama_ppl
  $ptq tokenize $model --file $text --json >$out/ids.json
  llama=$(node $npm_dir/llama_ppl.mjs "$PWD/$out/w4-gptq.gguf" "$PWD/$out/ids.json" 512 $windows)
  ours=$(ppl_json $out/w4-gptq.gguf)
  python3 - "$llama" "$ours" <<'EOF'
import json, sys
llama = json.loads(sys.argv[1])["ppl"]
ours = json.loads(sys.argv[2])["results"][0]["ppl"]
print(f"  llama.cpp perplexity {llama:.4f}   ptq on the same GGUF {ours:.4f}   ({100*(llama/ours-1):+.3f}%)")
same = abs(llama / ours - 1) < 0.01
print("verdict: " + ("llama.cpp loads the export and agrees with ptq within 1% (it rounds activations to 8 bits "
                     "inside Q4_0 matmuls; ptq's eval runs them in fp32)." if same else
                     "llama.cpp and ptq DISAGREE by more than 1%: the export is wrong."))
EOF
else
  echo "  skipped: llama.cpp from npm is unavailable ($msg)"
fi
echo

echo "== a sample from the GPTQ checkpoint (greedy)"
build/ptq generate $out/w4-gptq --prompt "Once upon a time" -n 60 2>/dev/null
echo
echo "demo: $(( $(date +%s) - start )) s after the build"
