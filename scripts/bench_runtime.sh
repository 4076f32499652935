#!/usr/bin/env bash
# Runtime benchmark (not a test): ptq's runner (`ptq bench`) against llama.cpp (npm node-llama-cpp@3.22.1's prebuilt
# CPU build, tests/oracle/llama_bench.mjs) on the same weights, in the same run, with the same thread count, prompt
# and generation length. Pairs, each ptq checkpoint against the GGUF that holds the same weights:
#   FP16               ptq, the F16 safetensors checkpoint    llama.cpp, GGUF F16   (ptq export --gguf-type f16)
#   W8 (per channel)   ptq quantize configs/w8a16-rtn.yaml    llama.cpp, GGUF Q8_0  (ptq export --gguf-type q8_0)
#   W4 g32             ptq quantize configs/w4a16-rtn.yaml    llama.cpp, GGUF Q4_0  (ptq export --gguf-type q4_0)
#                        --group-size 32
#   W4 g128            ptq quantize configs/w4a16-rtn.yaml    (ptq only: no GGUF type holds it)
#   Q4_0 file, Q8_0 file   ptq on the GGUF files above       the same llama.cpp measurement as W4 g32 / W8
#                        (its packed runner on the blocks)
# With --activations, the activation-quantized recipes instead (issue: static activation quantization runs on
# integers), on the 1.1B shape with planted outliers (`ptq outlierize --channels 4 --scale 50`, so the migration
# methods do real work; calibrated on 8 windows of 128 tokens of data/sotu-train.txt, enough for speed): ptq FP16 (the
# F16 checkpoint: the outlierized copy is F32), W4A16 RTN g128, W8A8 static SmoothQuant, W8A8 per-token dynamic, W4A8
# static FPTQ, W6A6 OutlierTune, W4A4 static RTN and MergeQuant, W4A4 per-token dynamic with and without the online
# Hadamard (QuaRot-style); llama.cpp Q8_0 and Q4_0 of the F16 checkpoint for reference. Its table has each row's
# prefill and decode against ptq FP16 in the same run.
# Models (written once by `ptq synth` into the scratch directory; random weights, so only speed and memory mean
# anything here):
#   tinyllama-1.1b  TinyLlama-1.1B shapes (hidden 2048, 22 layers, 32/4 heads, ffn 5504, context 2048), F16, with
#                   sotu-llama-8m's tokenizer and its vocabulary of 8000 (GGUF embeds the tokenizer); ~10 min on 2 cores
#   llama2-7b       (--full only) Llama-2-7B shapes (hidden 4096, 32 layers, 32/32 heads, ffn 11008, vocab 32000,
#                   context 4096), F16 in two shards; sotu's tokenizer padded with control pieces to 32000; ~55 GB disk
#   sotu-llama-8m   (--small instead of the above) the bundled model itself: a quick check of the whole pipeline
# Output, stdout: one JSON line per baseline (each runtime with no model loaded: `ptq --version`; node with the
# llama.cpp binding loaded, and node alone) and one per measurement: {"shape", "pair", "runtime", "format",
# "prefill_tok_s", "decode_tok_s", "peak_rss_mb", "self_peak_rss_mb", "peak_rss_compared_mb", "peak_rss_net_mb", ...}.
# Memory, both runtimes measured alike: peak_rss_mb is /usr/bin/time -v's maximum resident set of the whole process;
# self_peak_rss_mb the same kernel counter (getrusage ru_maxrss) read by the process itself at the end of its
# measurement (ptq bench measures the machine's read bandwidth afterwards with a 256 MiB buffer, which the whole-process
# peak includes); peak_rss_compared_mb is the smaller of the two and peak_rss_net_mb that less the runtime's baseline.
# ptq's own JSON fields (weight_bytes, kv_cache, kv_cache_bytes, read_bandwidth_gbs, decode_bound_tok_s,
# decode_share_of_bound, ...) are passed through; where ptq gives read_bandwidth_gbs and weight_bytes but no share,
# decode_bound_tok_s = read_bandwidth_gbs * 1e9 / weight_bytes and decode_share_of_bound = decode_tok_s / that bound.
# llama.cpp lines get the same share from their own weight bytes per token (every tensor but token_embd) and the
# bandwidth ptq measured last for the shape in this run (bandwidth_from: "ptq").
# Then a Markdown table of the pairs (stderr, or --table FILE) to paste in the README.
# Caveats: ptq's GGUF export keeps token_embd and output in F32 for Q8_0/Q4_0 (tensor_bytes_by_type shows it), so
# llama.cpp reads more bytes per token than the ptq checkpoint of the same pair. Run it on an otherwise idle machine:
# ggml's worker threads spin at barriers, so with the cores busy elsewhere llama.cpp at 2+ threads slows down 10-100x
# (the script warns when the load average is high; --threads 1 is far less sensitive).
#
# Usage: scripts/bench_runtime.sh [--small | --full | --activations] [--keep] [--rebuild] [--threads N] [--prompt N]
#                                 [--gen N] [--repeats N] [--table FILE]
#   --small      sotu-llama-8m only (seconds)            --full     also the Llama-2-7B shapes (hours on 2 cores)
#   --activations  the activation recipes above instead of the weight-only pairs (about 35 min to build on 2 cores)
#   --keep       keep the checkpoints and GGUF files this run builds, in $PTQ_SCRATCH/ptq-bench-runtime/SHAPE
#                (default: each shape's are deleted once it is measured); kept ones are reused by later runs
#   --rebuild    build them again even where kept ones exist
#   --threads N  threads for both runtimes (default: nproc)  --prompt N (default 64)  --gen N (default 32)
#   --repeats N  timed runs per measurement, the best reported (default 2; llama.cpp also does one untimed warm-up)
#   --table FILE write the Markdown table to FILE instead of stderr
# Environment: PTQ (a ptq binary; default build/ptq, built by scripts/build.sh), PTQ_SCRATCH (default /tmp),
#              NPM_DIR (node packages; default build/npm-oracle, shared with scripts/check_gguf_llama_cpp.sh),
#              PTQ_BENCH_FLAGS (more `ptq bench` flags, e.g. "--activations f32"; default: ptq's defaults, F16 KV cache).
# Needs node + npm (node-llama-cpp is installed by scripts/lib_npm_oracle.sh) and /usr/bin/time (package `time`,
# installed with apt-get when missing and running as root).
# shellcheck disable=SC2016  # the node -e programs are single-quoted on purpose
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

die() { echo "bench_runtime: $*" >&2; exit 1; }
usage() {
  echo "usage: $0 [--small | --full | --activations] [--keep] [--rebuild] [--threads N] [--prompt N] [--gen N] [--repeats N]" \
    "[--table FILE]" >&2
  exit 2
}
posint() {  # FLAG VALUE
  [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "bench_runtime: $1 needs a positive integer, got '$2'" >&2; usage; }
}

mode=default keep=0 rebuild=0 threads=$(nproc) prompt=64 gen=32 repeats=2 table=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --small) mode=small ;;
    --full) mode=full ;;
    --activations) mode=activations ;;
    --keep) keep=1 ;;
    --rebuild) rebuild=1 ;;
    --threads|--prompt|--gen|--repeats|--table)
      [[ $# -ge 2 ]] || { echo "bench_runtime: $1 needs a value" >&2; usage; }
      case "$1" in
        --threads) posint "$1" "$2"; threads=$2 ;;
        --prompt) posint "$1" "$2"; prompt=$2 ;;
        --gen) posint "$1" "$2"; gen=$2 ;;
        --repeats) posint "$1" "$2"; repeats=$2 ;;
        --table) table=$2 ;;
      esac
      shift ;;
    -h|--help) awk 'NR > 1 && /^#/ && !/shellcheck/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "bench_runtime: unknown argument '$1'" >&2; usage ;;
  esac
  shift
done
if [[ -n $table ]]; then
  touch "$table" 2>/dev/null || die "--table: cannot write $table"
  table=$(realpath "$table")
fi

# ---- tools ------------------------------------------------------------------------------------------------------
if [[ -z ${PTQ:-} ]]; then
  scripts/build.sh ptq >/dev/null || die "building ptq failed (scripts/build.sh ptq); set PTQ to an existing binary"
  PTQ=build/ptq
fi
[[ -x $PTQ ]] || die "PTQ=$PTQ is not an executable ptq binary"
PTQ=$(realpath "$PTQ")
command -v node >/dev/null || die "node is needed (llama.cpp runs through npm node-llama-cpp)"
if [[ ! -x /usr/bin/time ]]; then
  echo "bench_runtime: /usr/bin/time is missing; installing the 'time' package with apt-get" >&2
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    die "/usr/bin/time is needed (apt-get install time); not root or no apt-get, so not installed here"
  fi
  apt_time() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null 2>&1; }
  apt_time || { apt-get update -qq >/dev/null 2>&1 && apt_time; } || die "apt-get install time failed; install it by hand"
  [[ -x /usr/bin/time ]] || die "the 'time' package did not provide /usr/bin/time"
fi
npm_dir=${NPM_DIR:-$root/build/npm-oracle}
# shellcheck source=scripts/lib_npm_oracle.sh
source "$root/scripts/lib_npm_oracle.sh"
# shellcheck source=scripts/lib_bench.sh
source "$root/scripts/lib_bench.sh"  # pad_tokenizer (its timed() is replaced by this script's own, below)
if ! msg=$(npm_oracle_install "$npm_dir"); then
  die "llama.cpp is not available: ${msg:-installing the npm packages into $npm_dir failed}"
fi
npm_oracle_scripts "$npm_dir" "$root" llama_bench || die "cannot copy tests/oracle/llama_bench.mjs into $npm_dir"

# The KV cache as llama.cpp's (F16), where this ptq has the choice; then $PTQ_BENCH_FLAGS (e.g. "--activations f32").
ptq_bench_flags=()
if "$PTQ" bench --help 2>/dev/null | grep -q -- --kv-cache; then ptq_bench_flags=(--kv-cache f16); fi
read -ra extra_flags <<<"${PTQ_BENCH_FLAGS:-}"
ptq_bench_flags+=("${extra_flags[@]}")

scratch_root=${PTQ_SCRATCH:-/tmp}
mkdir -p "$scratch_root" || die "cannot create PTQ_SCRATCH=$scratch_root"
base=$(realpath "$scratch_root")/ptq-bench-runtime
mkdir -p "$base"
work=$(mktemp -d "$base/run.XXXXXX")
results=$work/results.jsonl
: >"$results"
made=()  # shape directories this run created or rebuilt (deleted at exit without --keep)
cleanup() {
  local rc=$?
  rm -rf "$work"
  if [[ $keep == 0 ]]; then for d in "${made[@]}"; do rm -rf "$d"; done; fi
  rmdir "$base" 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT

log() { echo "bench_runtime: $*" >&2; }

# step LOG DESC CMD...: runs CMD with stdout+stderr in LOG; on failure says what failed and shows the log's end.
step() {
  local logf=$1 desc=$2
  shift 2
  if ! "$@" >"$logf" 2>&1; then
    echo "bench_runtime: $desc failed; command: $*" >&2
    tail -n 20 "$logf" | sed 's/^/  | /' >&2
    exit 1
  fi
}

# timed NAME CMD...: runs CMD under /usr/bin/time -v; its stdout in $work/NAME.out, its stderr in $work/NAME.err, the
# time report in $work/NAME.time. Fails with the command's stderr when it fails.
timed() {
  local name=$1
  shift
  if ! /usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err"; then
    echo "bench_runtime: $name failed; command: $*" >&2
    tail -n 20 "$work/$name.err" | sed 's/^/  | /' >&2
    exit 1
  fi
}

# Refuses to build what would fill the disk.
need_space() {  # WHAT GB DIR
  local avail_kb
  avail_kb=$(df -Pk "$3" | awk 'NR == 2 {print $4}')
  if (( avail_kb < $2 * 1024 * 1024 )); then
    die "$1 needs about $2 GB free in $3, only $((avail_kb / 1024 / 1024)) GB available;" \
      "set PTQ_SCRATCH to a larger disk"
  fi
}


# ---- models -----------------------------------------------------------------------------------------------------
# prepare SHAPE GB SYNTH_FLAGS: the FP16 checkpoint (synthetic unless SHAPE is the bundled model), its GGUF exports
# and the ptq checkpoints, in $base/SHAPE; sets fp to the FP16 checkpoint. Each artifact is marked done once written,
# so a kept directory is reused and an interrupted one resumed. Only what this run builds is deleted without --keep.
prepare() {
  local shape=$1 gb=$2 synth_flags=$3
  local dir=$base/$shape
  [[ $rebuild == 0 ]] || rm -rf "$dir"
  if [[ -f $dir/.complete ]]; then
    log "$shape: reusing the kept checkpoints in $dir (--rebuild to make them again)"
  else
    [[ -d $dir ]] || made+=("$dir")
    mkdir -p "$dir"
    need_space "$shape" "$gb" "$dir"
  fi
  if [[ $shape == sotu-llama-8m ]]; then
    fp=$root/data/models/sotu-llama-8m
  else
    fp=$dir/fp16
    if [[ ! -f $dir/fp16.done ]]; then
      log "$shape: ptq synth ($synth_flags)"
      local tok_from=$root/data/models/sotu-llama-8m
      rm -rf "$fp"  # an interrupted synth
      # shellcheck disable=SC2086
      step "$work/$shape.synth.log" "$shape: ptq synth" \
        "$PTQ" --quiet synth -o "$fp" --dtype F16 --tokenizer-from "$tok_from" $synth_flags
      local vocab
      vocab=$(node -p 'require(process.argv[1]).vocab_size' "$fp/config.json")
      if [[ $vocab != 8000 ]]; then  # sotu's tokenizer has 8000 pieces
        pad_tokenizer "$tok_from/tokenizer.model" "$fp/tokenizer.model" "$vocab" ||
          die "$shape: padding the tokenizer to $vocab pieces failed"
      fi
      touch "$dir/fp16.done"
    fi
  fi
  # --activations compares with llama.cpp Q8_0 and Q4_0 only, and has checkpoints of its own (bench_act).
  local t types=(f16 q8_0 q4_0) names=(w8 w4g32 w4g128)
  if [[ $mode == activations ]]; then types=(q8_0 q4_0); names=(); fi
  for t in "${types[@]}"; do
    [[ -f $dir/$t.done ]] && continue
    log "$shape: ptq export GGUF ${t^^}"
    step "$work/$shape.$t.log" "$shape: ptq export --gguf-type $t" \
      "$PTQ" --quiet export "$fp" --format gguf --gguf-type "$t" -o "$dir/$t.gguf" --force
    touch "$dir/$t.done"
  done
  local name recipe
  for name in "${names[@]}"; do
    [[ -f $dir/$name.done ]] && continue
    case $name in
      w8) recipe=(--recipe configs/w8a16-rtn.yaml) ;;
      w4g32) recipe=(--recipe configs/w4a16-rtn.yaml --group-size 32) ;;
      w4g128) recipe=(--recipe configs/w4a16-rtn.yaml --group-size 128) ;;
    esac
    log "$shape: ptq quantize ${recipe[*]}"
    step "$work/$shape.$name.log" "$shape: ptq quantize ${recipe[*]}" \
      "$PTQ" --quiet quantize "$fp" "${recipe[@]}" -o "$dir/$name" --force
    touch "$dir/$name.done"
  done
  touch "$dir/.complete"
}

# ---- measurements -----------------------------------------------------------------------------------------------
# emit KIND SHAPE PAIR FORMAT MODEL NAME: one JSON line from $work/NAME.{out,time} (KIND: ptq | llama.cpp) to
# stdout and $results.
emit() {
  node -e '
    const fs = require("fs");
    const [kind, shape, pair, format, model, name, work, results, threads] = process.argv.slice(1);
    const t = fs.readFileSync(`${work}/${name}.time`, "utf8");
    const rssKb = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(t)[1]);
    const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)/.exec(t)[1].split(":").reverse()
      .reduce((s, x, i) => s + Number(x) * 60 ** i, 0);
    const r = JSON.parse(fs.readFileSync(`${work}/${name}.out`, "utf8"));
    const base = JSON.parse(fs.readFileSync(`${work}/baselines.json`, "utf8"));
    const size = (p) => fs.statSync(p).isDirectory()
      ? fs.readdirSync(p).reduce((s, f) => s + fs.statSync(`${p}/${f}`).size, 0) : fs.statSync(p).size;
    const round = (x, d) => Math.round(x * 10 ** d) / 10 ** d;
    const peak = rssKb / 1024;
    // The number compared: the peak the process reads itself (getrusage) at the end of the measurement, if any (ptq
    // measures its read bandwidth after the bench, with a 256 MiB buffer that the whole-process peak includes), else
    // the one of /usr/bin/time. Both are ru_maxrss, the high-water mark the kernel keeps for the process.
    const cmp = r.peak_rss_mb > 0 ? Math.min(peak, r.peak_rss_mb) : peak;
    const line = {bench: "runtime", shape, pair, runtime: kind, format, ...r, model, model_bytes: size(model),
                  threads: Number(threads), peak_rss_mb: round(peak, 1), self_peak_rss_mb: r.peak_rss_mb,
                  peak_rss_compared_mb: round(cmp, 1), baseline_rss_mb: base[kind],
                  peak_rss_net_mb: round(cmp - base[kind], 1), wall_s: round(wall, 2)};
    if (r.threads !== undefined && Number(r.threads) !== Number(threads))
      throw new Error(`${kind} ran ${r.threads} threads, asked for ${threads}`);
    // Decode bandwidth bound (ptq reports it; otherwise computed here): read bandwidth / weight bytes per token. The
    // llama.cpp lines use the bandwidth ptq measured last for this shape (the same machine, same run) and their own
    // weight bytes.
    if (!(r.decode_share_of_bound > 0)) {
      let bw = r.read_bandwidth_gbs;
      if (kind === "llama.cpp" && bw === undefined) {
        const prev = fs.readFileSync(results, "utf8").trim().split("\n").filter(Boolean).map(JSON.parse)
          .filter((x) => x.shape === shape && x.runtime === "ptq" && x.read_bandwidth_gbs > 0);
        if (prev.length) { bw = prev[prev.length - 1].read_bandwidth_gbs; line.bandwidth_from = "ptq"; }
      }
      if (bw > 0 && r.weight_bytes > 0) {
        line.read_bandwidth_gbs = bw;
        line.decode_bound_tok_s = round(bw * 1e9 / r.weight_bytes, 2);
        line.decode_share_of_bound = round(r.decode_tok_s / line.decode_bound_tok_s, 3);
      }
    }
    const s = JSON.stringify(line);
    fs.appendFileSync(results, s + "\n");
    console.log(s);' "$@" "$work" "$results" "$threads"
}

# ptq_bench NAME MODEL / llama_bench NAME GGUF: one timed measurement of each runtime, same prompt, length, threads
# and repeats (results in $work/NAME.*, turned into a JSON line by emit).
ptq_bench() {
  timed "$1" "$PTQ" --threads "$threads" --quiet bench "$2" --prompt "$prompt" --gen "$gen" --repeats "$repeats" \
    "${ptq_bench_flags[@]}" --json
}
llama_bench() { timed "$1" node "$npm_dir/llama_bench.mjs" "$2" "$prompt" "$gen" "$threads" "$repeats"; }

baselines() {
  timed base.ptq "$PTQ" --version
  timed base.node node -e 0
  timed base.llama node "$npm_dir/llama_bench.mjs" --baseline
  node -e '
    const fs = require("fs");
    const w = process.argv[1];
    const rss = (n) => Math.round(Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(
      fs.readFileSync(`${w}/${n}.time`, "utf8"))[1]) / 1024 * 10) / 10;
    const b = {ptq: rss("base.ptq"), "llama.cpp": rss("base.llama"), node: rss("base.node")};
    fs.writeFileSync(`${w}/baselines.json`, JSON.stringify(b));
    const v = fs.readFileSync(`${w}/base.ptq.out`, "utf8").trim();
    console.log(JSON.stringify({bench: "runtime", baseline: true, runtime: "ptq", what: "ptq --version (no model)",
                                peak_rss_mb: b.ptq, version: v}));
    console.log(JSON.stringify({bench: "runtime", baseline: true, runtime: "llama.cpp",
                                what: "node with the node-llama-cpp binding loaded (no model)", peak_rss_mb: b["llama.cpp"],
                                node_alone_rss_mb: b.node, node: process.version}));' "$work" | tee -a "$results"
}

bench_shape() {  # SHAPE GB SYNTH_FLAGS
  local shape=$1 dir=$base/$1 fp
  prepare "$@"
  # pair | ptq format | ptq model | GGUF type | GGUF file
  local pairs=(
    "FP16 vs F16|ptq fp16|$fp|F16|$dir/f16.gguf"
    "W8 vs Q8_0|ptq w8 (RTN, per channel)|$dir/w8|Q8_0|$dir/q8_0.gguf"
    "W4 g32 vs Q4_0|ptq w4g32 (RTN)|$dir/w4g32|Q4_0|$dir/q4_0.gguf"
    "W4 g128|ptq w4g128 (RTN)|$dir/w4g128||"
    "Q4_0 file|ptq on q4_0.gguf (packed from its blocks)|$dir/q4_0.gguf|Q4_0|$dir/q4_0.gguf"
    "Q8_0 file|ptq on q8_0.gguf (packed from its blocks)|$dir/q8_0.gguf|Q8_0|$dir/q8_0.gguf"
  )
  local p pair pfmt pmodel gtype gguf label n=0
  local -A llama_label=()  # GGUF file -> the label of its llama.cpp measurement (each file is measured once)
  # ptq's decoded F32 views of the GGUF files (made on first use, not read by the packed runner) stay with the shape.
  export PTQ_CACHE_DIR=$dir/ptq-cache
  for p in "${pairs[@]}"; do
    IFS='|' read -r pair pfmt pmodel gtype gguf <<<"$p"
    n=$((n + 1))
    log "$shape: $pair: ptq bench"
    # A GGUF input is decoded once to its F32 view before the timed run, so that run's peak RSS is the runner's.
    if [[ $pmodel == *.gguf ]]; then "$PTQ" --quiet inspect "$pmodel" >/dev/null; fi
    ptq_bench "$shape.$n.ptq" "$pmodel"
    emit ptq "$shape" "$pair" "$pfmt" "$pmodel" "$shape.$n.ptq"
    [[ -n $gguf ]] || continue
    label=${llama_label[$gguf]:-}
    if [[ -z $label ]]; then
      label=$shape.$n.llama
      log "$shape: $pair: llama.cpp"
      llama_bench "$label" "$gguf"
      llama_label[$gguf]=$label
    fi
    emit llama.cpp "$shape" "$pair" "GGUF $gtype" "$gguf" "$label"
  done
  # Without --keep, what this run built goes as soon as its shape is measured (disk).
  if [[ $keep == 0 && " ${made[*]} " == *" $dir "* ]]; then rm -rf "$dir"; fi
}

# The activation recipes (--activations): name | row label | quantize flags (on the outlierized model).
act_rows=(
  "w4a16|W4A16 RTN g128|--recipe w4a16-rtn"
  "w8a8-smoothquant|W8A8 static, SmoothQuant|--recipe w8a8-smoothquant"
  "w8a8-dynamic|W8A8 per-token dynamic, RTN|--recipe w8a8-rtn-static --act-granularity per_token"
  "w4a8-fptq|W4A8 static, FPTQ|--recipe w4a8-fptq"
  "w6a6-outliertune|W6A6 static, OutlierTune (o, down dynamic)|--recipe w6a6-outliertune"
  "w4a4-static|W4A4 static, RTN|--recipe w4a4-rtn-static"
  "w4a4-mergequant|W4A4 static, MergeQuant|--recipe w4a4-mergequant"
  "w4a4-dynamic|W4A4 per-token dynamic, RTN|--recipe w4a4-rtn-dynamic"
  "w4a4-dynamic-hadamard|W4A4 per-token dynamic + Hadamard (QuaRot-style)|--recipe w4a4-rtn-dynamic --hadamard"
)

bench_act() {  # SHAPE GB SYNTH_FLAGS
  local shape=$1 dir=$base/$1 fp
  prepare "$@"
  local act=$dir/act row name label flags n=0
  mkdir -p "$act"
  if [[ ! -f $act/outl.done ]]; then
    need_space "$shape: the outlierized F32 copy and the activation checkpoints" 8 "$act"
    log "$shape: ptq outlierize --channels 4 --scale 50"
    rm -rf "$act/outl"
    step "$work/$shape.outl.log" "$shape: ptq outlierize" \
      "$PTQ" --quiet outlierize "$fp" -o "$act/outl" --channels 4 --scale 50 --force
    touch "$act/outl.done"
  fi
  for row in "${act_rows[@]}"; do
    IFS='|' read -r name label flags <<<"$row"
    [[ -f $act/$name.done ]] && continue
    log "$shape: ptq quantize $flags"
    # shellcheck disable=SC2086  # flags are words
    step "$work/$shape.$name.log" "$shape: ptq quantize $flags" \
      "$PTQ" --quiet quantize "$act/outl" -o "$act/$name" --force --data "$root/data/sotu-train.txt" --nsamples 8 \
      --seqlen 128 $flags
    touch "$act/$name.done"
  done
  export PTQ_CACHE_DIR=$dir/ptq-cache
  local runs=("fp16|FP16|$fp")
  for row in "${act_rows[@]}"; do
    IFS='|' read -r name label flags <<<"$row"
    runs+=("$name|$label|$act/$name")
  done
  for row in "${runs[@]}"; do
    IFS='|' read -r name label model <<<"$row"
    n=$((n + 1))
    log "$shape: $label: ptq bench"
    ptq_bench "$shape.a$n.ptq" "$model"
    emit ptq "$shape" "$label" "ptq $name" "$model" "$shape.a$n.ptq"
  done
  local t
  for t in q8_0 q4_0; do
    log "$shape: llama.cpp ${t^^}"
    llama_bench "$shape.$t.llama" "$dir/$t.gguf"
    emit llama.cpp "$shape" "llama.cpp ${t^^} (reference)" "GGUF ${t^^}" "$dir/$t.gguf" "$shape.$t.llama"
  done
  if [[ $keep == 0 && " ${made[*]} " == *" $dir "* ]]; then rm -rf "$dir"; fi
}

# ---- run --------------------------------------------------------------------------------------------------------
log "threads $threads, prompt $prompt, gen $gen, best of $repeats; ptq $PTQ; scratch $base"
# Both runtimes are sensitive to other load (ggml's worker threads spin at barriers: with every core busy elsewhere,
# llama.cpp slows down by 10-100x on small models); say so rather than print quiet nonsense.
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
if awk -v l="$load" -v n="$(nproc)" 'BEGIN {exit !(l > 0.25 * n)}'; then
  log "warning: load average $load on $(nproc) cores before starting; the measurements will be noisy"
fi
# Both runtimes need the prompt and the generated tokens in the model's context (checked before building anything).
case $mode in
  small) ctx=$(node -p 'require(process.argv[1]).max_position_embeddings' "$root/data/models/sotu-llama-8m/config.json") ;;
  *) ctx=2048 ;;  # tinyllama-1.1b; llama2-7b has 4096
esac
(( prompt + gen <= ctx )) || die "--prompt $prompt + --gen $gen exceed the model context of $ctx tokens"

baselines
case $mode in
  small) bench_shape sotu-llama-8m 1 "" ;;
  activations)
    bench_act tinyllama-1.1b 18 \
      "--arch llama --hidden 2048 --layers 22 --heads 32 --kv-heads 4 --ffn 5504 --vocab 8000 --context 2048" ;;
  default|full)
    bench_shape tinyllama-1.1b 10 \
      "--arch llama --hidden 2048 --layers 22 --heads 32 --kv-heads 4 --ffn 5504 --vocab 8000 --context 2048"
    if [[ $mode == full ]]; then
      bench_shape llama2-7b 58 \
        "--arch llama --hidden 4096 --layers 32 --heads 32 --kv-heads 32 --ffn 11008 --vocab 32000 --context 4096 --shard-size 10GB"
    fi ;;
esac

# ---- Markdown table ---------------------------------------------------------------------------------------------
md=$(node -e '
  const fs = require("fs");
  const [results, threads, prompt, gen, repeats, load, mode] = process.argv.slice(1);
  const nt = `${threads} thread${threads === "1" ? "" : "s"}`;
  const lines = fs.readFileSync(results, "utf8").trim().split("\n").map(JSON.parse);
  const base = Object.fromEntries(lines.filter((l) => l.baseline).map((l) => [l.runtime, l]));
  const runs = lines.filter((l) => !l.baseline);
  const f = (x, d = 1) => (x === undefined || x === null ? "-" : Number(x).toFixed(d));
  const mb = (b) => (b === undefined ? "-" : (b / 1e6).toFixed(b >= 1e9 ? 0 : 1));
  const rss = (l) => (l ? `${f(l.peak_rss_compared_mb, 0)} (${f(l.peak_rss_net_mb, 0)})` : "-");
  const share = (l) => (l && l.decode_share_of_bound > 0 ? `${(100 * l.decode_share_of_bound).toFixed(0)}%` : "-");
  const ratio = (a, b) => (a && b && b > 0 ? `${(a / b).toFixed(2)}x` : "-");
  const out = [];
  out.push(`Measured by \`scripts/bench_runtime.sh${mode === "activations" ? " --activations" : ""}\`: ${nt}, ${prompt}-token prompt (random ids), ` +
           `${gen} greedy tokens, best of ${repeats}. llama.cpp is node-llama-cpp@3.22.1${"\u2019"}s prebuilt CPU build ` +
           `(F16 KV cache, flash attention off, one untimed warm-up). Peak RSS: the process${"\u2019"}s maximum ` +
           `resident set (ru_maxrss, at the end of the measurement), in brackets less that runtime${"\u2019"}s ` +
           `baseline with no model loaded (ptq --version: ${f(base.ptq?.peak_rss_mb, 0)} MB; node with the ` +
           `llama.cpp binding: ${f(base["llama.cpp"]?.peak_rss_mb, 0)} MB, node alone ` +
           `${f(base["llama.cpp"]?.node_alone_rss_mb, 0)} MB). ` +
           `Bound: decode tok/s as a share of read bandwidth (measured by ptq bench) / weight bytes read per token.` +
           (Number(load) > 0.25 * Number(threads) ? ` Load average ${load} when the run started: numbers are noisy.` : ""));
  const p0 = runs.find((l) => l.runtime === "ptq");
  const pq = runs.find((l) => l.runtime === "ptq" && !l.pair.startsWith("FP16") && l.activations !== undefined);
  const how = ["runner", "isa", "kv_cache"].filter((k) => p0?.[k] !== undefined)
    .map((k) => `${k.replace("_", " ")} ${p0[k]}`)
    .concat(pq ? [`activations in quantized matmuls ${pq.activations}`] : [])
    .concat(p0?.omp_wait ? [`threads waiting ${p0.omp_wait}`] : []).join(", ");
  if (how) out[out.length - 1] += ` ptq: ${how}.`;
  out.push("");
  if (mode === "activations") {
    // One row per runtime and recipe, each against ptq FP16 of the same run.
    const fp = runs.find((l) => l.runtime === "ptq" && l.pair === "FP16");
    out.push("| model | scheme | size MB | prefill tok/s | decode tok/s | prefill vs ptq FP16 | decode vs ptq FP16 | " +
             "peak RSS MB |");
    out.push("|---|---|---|---|---|---|---|---|");
    for (const l of runs)
      out.push(`| ${l.shape} | ${l.runtime === "ptq" ? "ptq " : ""}${l.pair} | ${mb(l.model_bytes)} | ` +
               `${f(l.prefill_tok_s)} | ${f(l.decode_tok_s, 2)} | ${ratio(l.prefill_tok_s, fp?.prefill_tok_s)} | ` +
               `${ratio(l.decode_tok_s, fp?.decode_tok_s)} | ${rss(l)} |`);
    console.log(out.join("\n"));
    process.exit(0);
  }
  out.push("| model | weights | size ptq / GGUF MB | prefill tok/s ptq / llama.cpp | decode tok/s ptq / llama.cpp | " +
           "decode ptq vs llama.cpp | decode % of bound ptq / llama.cpp | peak RSS MB ptq / llama.cpp |");
  out.push("|---|---|---|---|---|---|---|---|");
  const keys = [...new Set(runs.map((l) => `${l.shape}\u0000${l.pair}`))];
  for (const k of keys) {
    const [shape, pair] = k.split("\u0000");
    const p = runs.find((l) => l.shape === shape && l.pair === pair && l.runtime === "ptq");
    const q = runs.find((l) => l.shape === shape && l.pair === pair && l.runtime === "llama.cpp");
    out.push(`| ${shape} | ${pair} | ${mb(p?.model_bytes)} / ${q ? mb(q.model_bytes) : "-"} | ` +
             `${f(p?.prefill_tok_s)} / ${f(q?.prefill_tok_s)} | ${f(p?.decode_tok_s, 2)} / ${f(q?.decode_tok_s, 2)} | ` +
             `${ratio(p?.decode_tok_s, q?.decode_tok_s)} | ${share(p)} / ${q ? share(q) : "-"} | ${rss(p)} / ${rss(q)} |`);
  }
  console.log(out.join("\n"));' "$results" "$threads" "$prompt" "$gen" "$repeats" "$load" "$mode") || die "formatting the table failed"
if [[ -n $table ]]; then
  printf '%s\n' "$md" >"$table"
  log "table written to $table"
else
  printf '\n%s\n' "$md" >&2
fi
if [[ $keep == 1 ]]; then log "checkpoints kept in $base (reused by the next --keep run; --rebuild to replace)"; fi
