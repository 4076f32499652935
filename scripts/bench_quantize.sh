#!/usr/bin/env bash
# Quantization speed and memory against llama.cpp's llama-quantize, in one run on one machine with the same thread
# count (not a test: issue 13's benchmark). Input: a synthetic checkpoint of TinyLlama-1.1B's shapes (hidden 2048,
# 22 layers, 32/4 heads, ffn 5504; vocab 8000 so the bundled sotu-llama-8m tokenizer fits), F16, written by
# `ptq synth`; llama-quantize reads ptq's F16 GGUF export of it (the same weights). Runs, each under /usr/bin/time:
#   ptq_rtn_w4g32     ptq quantize --recipe w4a16-rtn --group-size 32   (a ptq checkpoint; llama.cpp's grid: Q4_0)
#   llama_q4_0        llama-quantize --pure F16.gguf Q4_0              (--pure: output.weight Q4_0 too, as ptq's q4_0)
#   ptq_gguf_q4_0     ptq export --format gguf --gguf-type q4_0         (the same tensors as llama_q4_0)
#   llama_q4_k_m      llama-quantize F16.gguf Q4_K_M
#   ptq_gguf_q4_k_m   ptq export --format gguf --gguf-type q4_k_m       (the same tensors as llama_q4_k_m)
# Prints one JSON object per run (seconds, peak RSS, output bytes) and a last one with the ratios ptq / llama.cpp
# (issue 13's target: RTN W4 g32 and Q4_K_M within 2x llama-quantize's time and peak RSS).
# llama-quantize is built from the llama.cpp source node-llama-cpp ships (scripts/lib_npm_oracle.sh).
#
# Usage: scripts/bench_quantize.sh [--threads N]   (default: all cores)
# Environment: PTQ (a ptq binary; default: build/ptq, built), PTQ_SCRATCH (default /tmp; ~6 GB), NPM_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
threads=$(nproc)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads=${2:?--threads needs a count}; shift ;;
    *) echo "usage: $0 [--threads N]" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=scripts/lib_bench.sh
source scripts/lib_bench.sh
PTQ=$(ptq_binary)
[[ -x /usr/bin/time ]] || { echo "bench_quantize: /usr/bin/time is needed (apt-get install time)" >&2; exit 1; }
npm_dir=${NPM_DIR:-$root/build/npm-oracle}
# shellcheck source=scripts/lib_npm_oracle.sh
source scripts/lib_npm_oracle.sh
scratch=$(mktemp -d "${PTQ_SCRATCH:-/tmp}/ptq-bench-quantize.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
npm_oracle_install "$npm_dir" >&2 || { echo "bench_quantize: npm packages unavailable" >&2; exit 77; }
skip=$(npm_oracle_llama_quantize "$npm_dir" "$scratch/quantize-build.log") || { echo "bench_quantize: $skip" >&2; exit 77; }
quantize=$npm_dir/llama-quantize

model=$scratch/tinyllama-1.1b
"$PTQ" -q synth -o "$model" --arch llama --hidden 2048 --layers 22 --heads 32 --kv-heads 4 --ffn 5504 --vocab 8000 \
  --context 2048 --dtype F16 --tokenizer-from "$root/data/models/sotu-llama-8m" >/dev/null
"$PTQ" -q export "$model" --format gguf --gguf-type f16 -o "$scratch/in.f16.gguf" --threads "$threads" >/dev/null

results=()
bench() {  # NAME OUTPUT CMD...
  local name=$1 output=$2
  shift 2
  local r
  r=$(timed "$scratch/$name.time" "$scratch/$name.out" "$@")
  local bytes
  bytes=$(du -sb "$output" | cut -f1)
  results+=("$name $r $bytes")
  python3 -c 'import json, sys; n, s, rss, b, t = sys.argv[1:]; print(json.dumps({"bench": "quantize", "run": n,
    "seconds": float(s), "peak_rss_mb": float(rss), "output_bytes": int(b), "threads": int(t)}))' "$name" $r "$bytes" "$threads"
  rm -rf "$output"
}

bench ptq_rtn_w4g32 "$scratch/w4g32" "$PTQ" -q quantize "$model" --recipe w4a16-rtn --group-size 32 --threads "$threads" \
  -o "$scratch/w4g32"
bench llama_q4_0 "$scratch/llama.q4_0.gguf" "$quantize" --pure "$scratch/in.f16.gguf" "$scratch/llama.q4_0.gguf" Q4_0 "$threads"
bench ptq_gguf_q4_0 "$scratch/ptq.q4_0.gguf" "$PTQ" -q export "$model" --format gguf --gguf-type q4_0 \
  --threads "$threads" -o "$scratch/ptq.q4_0.gguf"
bench llama_q4_k_m "$scratch/llama.q4_k_m.gguf" "$quantize" "$scratch/in.f16.gguf" "$scratch/llama.q4_k_m.gguf" Q4_K_M \
  "$threads"
bench ptq_gguf_q4_k_m "$scratch/ptq.q4_k_m.gguf" "$PTQ" -q export "$model" --format gguf --gguf-type q4_k_m \
  --threads "$threads" -o "$scratch/ptq.q4_k_m.gguf"

python3 - "$threads" "${results[@]}" <<'PY'
import json, sys
threads, rows = sys.argv[1], sys.argv[2:]
r = {n: (float(s), float(m)) for n, s, m, _ in (row.split() for row in rows)}
def ratio(a, b):
    return {"time": round(r[a][0] / r[b][0], 2), "peak_rss": round(r[a][1] / r[b][1], 2)}
print(json.dumps({"bench": "quantize", "threads": int(threads), "ratios_vs_llama_quantize": {
    "rtn_w4g32_vs_q4_0": ratio("ptq_rtn_w4g32", "llama_q4_0"),
    "gguf_q4_0": ratio("ptq_gguf_q4_0", "llama_q4_0"),
    "gguf_q4_k_m": ratio("ptq_gguf_q4_k_m", "llama_q4_k_m")}}))
PY
