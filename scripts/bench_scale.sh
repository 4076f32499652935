#!/usr/bin/env bash
# Scale benchmark (not a test): synthetic checkpoints with real model shapes, written by `ptq synth`, then
# quantized; prints one JSON object per run (shape, method, seconds, peak RSS, sizes).
#   llama2-7b  Llama-2-7B shapes (hidden 4096, 32 layers, 32/32 heads, ffn 11008, vocab 32000, context 4096),
#              F16 in two Hugging Face-style shards (13.5 GB) -> RTN W4 g128 (configs/w4a16-rtn.yaml).
#              The product promise: one decoder layer at a time from memory-mapped weights, peak RSS < 4 GB.
#              Then `ptq eval ppl` on the W4 g128 checkpoint (the packed runner: resident at its packed size), 2
#              windows of 512 tokens of data/sotu-test.txt (the checkpoint carries sotu-llama-8m's tokenizer padded
#              to 32000 pieces): seconds per window and peak RSS (target < 6 GB).
#   tinyllama  TinyLlama-1.1B shapes (hidden 2048, 22 layers, 32/4 heads, head_dim 64, ffn 5504, vocab 32000,
#              context 2048), F16 (2.2 GB) -> GPTQ W4 g128 (configs/w4a16-gptq.yaml) on synthetic calibration
#              tokens (the checkpoints have no tokenizer), GPTQ_NSAMPLES windows of GPTQ_SEQLEN tokens.
# Weights are random (lib/model/synthetic.h), so the quantization error is meaningless here; time and memory
# are what this measures. ~1 h on 2 cores.
#
# Usage: scripts/bench_scale.sh [--keep] [--only llama2-7b|tinyllama]
#   --keep   leave the checkpoints under the scratch directory (default: deleted after each run)
# Environment: PTQ_SCRATCH (default /tmp) for the checkpoints; PTQ, a ptq binary to use instead of building
# build/ptq; GPTQ_NSAMPLES (default 8), GPTQ_SEQLEN (default 256).
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
only=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --keep) keep=1 ;;
    --only) only=${2:?--only needs llama2-7b or tinyllama}; shift ;;
    *) echo "usage: $0 [--keep] [--only llama2-7b|tinyllama]" >&2; exit 2 ;;
  esac
  shift
done
case "$only" in ""|llama2-7b|tinyllama) ;; *) echo "--only: expected llama2-7b or tinyllama, got $only" >&2; exit 2 ;; esac

# shellcheck source=scripts/lib_bench.sh
source scripts/lib_bench.sh
root=$(pwd)
sotu=$root/data/models/sotu-llama-8m  # its tokenizer, padded, for the evaluation
PTQ=$(ptq_binary)
[[ -x /usr/bin/time ]] || { echo "bench_scale: /usr/bin/time is needed (apt-get install time)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench_scale: python3 is needed to format the results" >&2; exit 1; }
nsamples=${GPTQ_NSAMPLES:-8}
seqlen=${GPTQ_SEQLEN:-256}
scratch_root=${PTQ_SCRATCH:-/tmp}
mkdir -p "$scratch_root"
scratch=$(mktemp -d "$scratch_root/ptq-bench-scale.XXXXXX")
if [[ $keep == 0 ]]; then trap 'rm -rf "$scratch"' EXIT; fi

# Refuses to start a run that would fill the disk: input + output + 10% headroom.
need_space() {
  local what=$1 gb=$2 avail_kb
  avail_kb=$(df -Pk "$scratch" | awk 'NR == 2 {print $4}')
  if (( avail_kb < gb * 1024 * 1024 )); then
    echo "bench_scale: $what needs about $gb GB free in $scratch, only $((avail_kb / 1024 / 1024)) GB available;" \
      "set PTQ_SCRATCH to a larger disk" >&2
    exit 1
  fi
}


# name | disk GB needed | synth flags | quantize flags | eval windows (0: no eval)
run() {
  local name=$1 gb=$2 synth_flags=$3 quant_flags=$4 eval_windows=$5
  [[ -z "$only" || "$only" == "$name" ]] || return 0
  need_space "$name" "$gb"
  local model="$scratch/$name" out="$scratch/$name-quantized"
  local synth quant
  # shellcheck disable=SC2086
  synth=$(timed "$scratch/$name.synth.time" /dev/null "$PTQ" --quiet synth -o "$model" --dtype F16 $synth_flags)
  if (( eval_windows > 0 )); then  # a tokenizer of the model's vocabulary, for the evaluation
    local vocab
    vocab=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$model/config.json")
    cp "$sotu"/tokenizer_config.json "$model/" 2>/dev/null || true
    pad_tokenizer "$sotu/tokenizer.model" "$model/tokenizer.model" "$vocab"
  fi
  # shellcheck disable=SC2086
  quant=$(timed "$scratch/$name.quant.time" "$scratch/$name.quant.json" \
    "$PTQ" --quiet quantize "$model" $quant_flags -o "$out" --json)
  local ev="0 0"
  if (( eval_windows > 0 )); then
    ev=$(timed "$scratch/$name.eval.time" "$scratch/$name.eval.json" "$PTQ" --quiet eval ppl "$out" \
      --data "$root/data/sotu-test.txt" --seqlen 512 --max-windows "$eval_windows" --json)
  fi
  python3 - "$name" "$model" "$out" "$scratch/$name.quant.json" "$synth" "$quant" "$quant_flags" "$ev" \
    "$eval_windows" "$scratch/$name.eval.json" <<'PY'
import json, os, sys
name, model, out, report, synth, quant, flags, ev, eval_windows, eval_json = sys.argv[1:]
cfg = json.load(open(os.path.join(model, "config.json")))
r = json.load(open(report))
def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
synth_s, synth_rss = map(float, synth.split())
quant_s, quant_rss = map(float, quant.split())
eval_s, eval_rss = map(float, ev.split())
evaluation = None
if int(eval_windows) > 0:
    e = json.load(open(eval_json))["results"][0]
    evaluation = {"command": "ptq eval ppl --seqlen 512 --max-windows " + eval_windows, "windows": e["windows"],
                  "seconds": eval_s,  # wall clock of the whole process, loading included
                  "seconds_per_window": round(e["seconds"] / e["windows"], 1),  # the evaluation alone
                  "peak_rss_mb": eval_rss, "ppl": e["ppl"]}
print(json.dumps({
    "run": name,
    "shape": {k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                   "intermediate_size", "vocab_size", "max_position_embeddings", "torch_dtype")},
    "method": r["recipe"]["weights"]["method"],
    "bits": r["recipe"]["weights"]["bits"],
    "group_size": r["recipe"]["weights"]["group_size"],
    "flags": flags,
    "calibration": r["calibration"],
    "threads": os.cpu_count(),
    "seconds": quant_s,                     # wall clock of the whole ptq process
    "quantize_seconds": round(r["seconds"], 1),
    "peak_rss_mb": quant_rss,               # /usr/bin/time: maximum resident set size
    "input_bytes": dir_bytes(model),
    "output_bytes": dir_bytes(out),
    "quantized_params": r["quantized_params"],
    "avg_bits_per_weight": r["avg_bits_per_weight"],
    "synth_seconds": synth_s,
    "synth_peak_rss_mb": synth_rss,
    "eval": evaluation,
}))
PY
  [[ $keep == 1 ]] || rm -rf "$model" "$out"
}

run llama2-7b 19 \
  "--arch llama --hidden 4096 --layers 32 --heads 32 --kv-heads 32 --ffn 11008 --vocab 32000 --context 4096 --shard-size 10GB" \
  "--recipe configs/w4a16-rtn.yaml" 2
run tinyllama 4 \
  "--arch llama --hidden 2048 --layers 22 --heads 32 --kv-heads 4 --ffn 5504 --vocab 32000 --context 2048" \
  "--recipe configs/w4a16-gptq.yaml --synthetic --nsamples $nsamples --seqlen $seqlen" 0
if [[ $keep == 1 ]]; then echo "bench_scale: checkpoints kept in $scratch" >&2; fi
