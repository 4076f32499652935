#!/usr/bin/env bash
# Regenerates the measured tables in README.md and docs/RESULTS.md (between "<!-- BEGIN name -->" and
# "<!-- END name -->", in whichever of the two files holds the section) by running ptq on the bundled models and
# data. Nothing in those sections is typed by hand.
# Usage: scripts/update_readme.sh [SECTION...]   (default: every section; ~25 minutes on 2 cores)
#   sections: recipes fp-ppl fp-tasks quant-table fp-bench export-table activation-table runtime-bench act-bench
#             quantize-bench gguf-table mixed-table scale-bench fuzz
#   (gguf-table: scripts/gguf_table.sh, GGUF types from llama-quantize and ptq scored by llama.cpp, ~30 minutes;
#   PTQ_GGUF_TABLE=FILE renders a saved output of it instead)
#   (mixed-table: scripts/mixed_table.sh, mixed precision against uniform grids and llama.cpp's mixes, and its plot
#   docs/results/mixed_precision.svg, ~15-30 minutes; PTQ_MIXED_TABLE=FILE renders a saved output of it instead, the plot
#   being the one that run wrote)
#   (runtime-bench: scripts/bench_runtime.sh on the TinyLlama-1.1B shape, ~20 minutes; run it on an idle machine)
#   (act-bench: scripts/bench_runtime.sh --activations, the activation recipes on that shape, ~50 minutes the first
#   time; PTQ_ACT_BENCH_TABLE=FILE PTQ_ACT_BENCH_JSON=FILE render a saved run's --table file and stdout instead)
#   (quantize-bench: scripts/bench_quantize.sh, ptq RTN / GGUF export against llama-quantize, ~5 minutes; idle machine)
#   (scale-bench: scripts/bench_scale.sh, synthetic Llama-2-7B and TinyLlama-1.1B shapes quantized, the 7B one
#   evaluated, ~10 minutes and 19 GB of scratch disk; PTQ_SCALE_JSON=FILE renders a saved output of it instead)
#   (fuzz: renders the run `scripts/fuzz.sh --record` wrote to docs/results/fuzz.jsonl, or PTQ_FUZZ_RECORD; it
#   runs nothing itself, the run takes ~15 minutes; needs no ptq binary)
#   PTQ_BIN=path/to/ptq uses that binary (default: build/ptq, built by scripts/build.sh).
# Needs python3 (formatting only); export-table also uses npm (llama.cpp, see scripts/export_table.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
all=(recipes fp-ppl fp-tasks quant-table fp-bench export-table activation-table runtime-bench act-bench quantize-bench
     gguf-table mixed-table scale-bench fuzz)
sections=("$@")
[[ ${#sections[@]} -gt 0 ]] || sections=("${all[@]}")
for s in "${sections[@]}"; do
  [[ " ${all[*]} " == *" $s "* ]] || { echo "unknown section $s (sections: ${all[*]})" >&2; exit 2; }
done
if [[ -n ${PTQ_BIN:-} ]]; then
  PTQ_BIN=$(realpath "$PTQ_BIN")
elif [[ " ${sections[*]} " != " fuzz " ]]; then  # every section but fuzz runs ptq
  scripts/build.sh ptq >/dev/null
  PTQ_BIN=$PWD/build/ptq
fi
export PTQ_BIN=${PTQ_BIN:-}
ptq="$PTQ_BIN --quiet"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
wanted() { [[ " ${sections[*]} " == *" $1 "* ]]; }

if wanted recipes; then
  $ptq recipes --json | python3 -c '
import json, sys
rs = json.load(sys.stdin)["recipes"]
print("| recipe | grid | paper | needs | llama.cpp | vLLM / transformers |")
print("|---|---|---|---|---|---|")
for r in rs:
    rt = r["runtimes"]
    cell = lambda k: rt[k]["how"].replace("|", "\\|")
    name = "`%s`%s" % (r["name"], " (default)" if r["default"] else "")
    print("| %s | %s | %s | %s | %s | %s |" % (name, r["grid"], r["paper"], r["needs"], cell("llama.cpp"), cell("vLLM / transformers")))
' >"$tmp/recipes"
fi

if wanted fp-ppl; then
  {
    echo '```'
    echo "\$ ptq eval ppl data/models/stories260K --data data/tinystories-valid.txt --seqlen 512"
    $ptq eval ppl data/models/stories260K --data data/tinystories-valid.txt --seqlen 512
    echo
    echo "\$ ptq eval ppl data/models/sotu-llama-8m --data data/sotu-test.txt --seqlen 256"
    $ptq eval ppl data/models/sotu-llama-8m --data data/sotu-test.txt --seqlen 256
    echo
    echo "\$ ptq eval ppl data/models/stories260K --data data/moby-dick.txt --seqlen 512 --max-windows 50"
    $ptq eval ppl data/models/stories260K --data data/moby-dick.txt --seqlen 512 --max-windows 50
    echo
    echo "\$ ptq eval ppl data/models/sotu-llama-8m --data data/moby-dick.txt --seqlen 256 --max-windows 200"
    $ptq eval ppl data/models/sotu-llama-8m --data data/moby-dick.txt --seqlen 256 --max-windows 200
    echo '```'
  } >"$tmp/fp-ppl"
fi

if wanted fp-tasks; then
  {
    echo '```'
    echo "\$ ptq eval tasks data/models/stories260K --tasks data/tasks/tinystories-{continuation,cloze}.jsonl data/tasks/moby-{continuation,cloze}.jsonl"
    $ptq eval tasks data/models/stories260K --tasks data/tasks/tinystories-{continuation,cloze}.jsonl data/tasks/moby-{continuation,cloze}.jsonl
    echo
    echo "\$ ptq eval tasks data/models/sotu-llama-8m --tasks data/tasks/sotu-{continuation,cloze}.jsonl data/tasks/moby-{continuation,cloze}.jsonl"
    $ptq eval tasks data/models/sotu-llama-8m --tasks data/tasks/sotu-{continuation,cloze}.jsonl data/tasks/moby-{continuation,cloze}.jsonl
    echo '```'
  } >"$tmp/fp-tasks"
fi

if wanted quant-table; then scripts/quant_table.sh >"$tmp/quant-table"; fi

if wanted fp-bench; then
  {
    echo '```'
    echo "\$ scripts/bench_fp.sh   # ptq bench MODEL --json (prompt 128, gen 128, best of 3), $(nproc) threads, $(lscpu | sed -n 's/^Model name: *//p')"
    scripts/bench_fp.sh
    echo '```'
  } >"$tmp/fp-bench"
fi

if wanted export-table; then scripts/export_table.sh >"$tmp/export-table"; fi

if wanted activation-table; then scripts/activation_table.sh "$PTQ_BIN" >"$tmp/activation-table"; fi

if wanted quantize-bench; then
  PTQ=$PTQ_BIN scripts/bench_quantize.sh >"$tmp/quantize-json"
  {
    echo "\$ scripts/bench_quantize.sh   # $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%Y-%m-%d)"
    echo
    python3 - "$tmp/quantize-json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
what = {"ptq_rtn_w4g32": "ptq quantize, RTN w4g32 (ptq checkpoint)",
        "llama_q4_0": "llama-quantize --pure Q4_0",
        "ptq_gguf_q4_0": "ptq export --gguf-type q4_0",
        "llama_q4_k_m": "llama-quantize Q4_K_M",
        "ptq_gguf_q4_k_m": "ptq export --gguf-type q4_k_m"}
print("TinyLlama-1.1B-shaped synthetic checkpoint (F16, 2.2 GB), both tools in one run with the same threads; target "
      "(issue 13): ptq within 2x llama-quantize's time and peak RSS.")
print()
print("| run | seconds | peak RSS | output |")
print("|---|---:|---:|---:|")
for r in rows:
    if "run" in r:
        print(f"| {what.get(r['run'], r['run'])} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} MB | {r['output_bytes'] / 1e6:.0f} MB |")
ratios = next(r["ratios_vs_llama_quantize"] for r in rows if "ratios_vs_llama_quantize" in r)
print()
names = {"rtn_w4g32_vs_q4_0": "RTN w4g32 / llama Q4_0", "gguf_q4_0": "GGUF Q4_0", "gguf_q4_k_m": "GGUF Q4_K_M"}
print("ptq / llama-quantize: " + "; ".join(f"{names[k]}: time {v['time']}x, peak RSS {v['peak_rss']}x" for k, v in ratios.items()))
PY
    echo
    echo '<details><summary>JSON lines</summary>'
    echo
    echo '```'
    cat "$tmp/quantize-json"
    echo '```'
    echo '</details>'
  } >"$tmp/quantize-bench"
fi

# bench_section NAME FLAGS TABLE JSON: scripts/bench_runtime.sh FLAGS, its table and its JSON lines (folded), or those
# of a saved run when TABLE and JSON name its files.
bench_section() {
  local name=$1 flags=$2 table=$3 json=$4
  if [[ -z $table || -z $json ]]; then
    table=$tmp/$name-table json=$tmp/$name-json
    # shellcheck disable=SC2086  # flags are words
    PTQ=$PTQ_BIN scripts/bench_runtime.sh $flags --table "$table" >"$json"
  fi
  {
    echo "\$ scripts/bench_runtime.sh${flags:+ $flags}   # $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%Y-%m-%d)"
    echo
    cat "$table"
    echo
    echo '<details><summary>JSON lines</summary>'
    echo
    echo '```'
    cat "$json"
    echo '```'
    echo '</details>'
  } >"$tmp/$name"
}
if wanted runtime-bench; then bench_section runtime-bench "" "" ""; fi
if wanted act-bench; then bench_section act-bench --activations "${PTQ_ACT_BENCH_TABLE:-}" "${PTQ_ACT_BENCH_JSON:-}"; fi

# table_section NAME SCRIPT SAVED: "$ SCRIPT   # the machine", then SAVED (a saved output of SCRIPT) when given, else
# SCRIPT's output.
table_section() {
  local name=$1 script=$2 saved=$3
  {
    echo "\$ $script   # $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%Y-%m-%d)"
    echo
    if [[ -n $saved ]]; then cat "$saved"; else PTQ=$PTQ_BIN "$script"; fi
  } >"$tmp/$name"
}
if wanted gguf-table; then table_section gguf-table scripts/gguf_table.sh "${PTQ_GGUF_TABLE:-}"; fi
if wanted mixed-table; then table_section mixed-table scripts/mixed_table.sh "${PTQ_MIXED_TABLE:-}"; fi

if wanted scale-bench; then
  json=${PTQ_SCALE_JSON:-}
  if [[ -z $json ]]; then json=$tmp/scale-json; PTQ=$PTQ_BIN scripts/bench_scale.sh >"$json"; fi
  {
    echo "\$ scripts/bench_scale.sh   # $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%Y-%m-%d)"
    echo
    python3 - "$json" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
names = {"llama2-7b": "Llama-2-7B (4096/11008, 32 layers, vocab 32000; 2 HF-style shards)",
         "tinyllama": "TinyLlama-1.1B (2048/5504, 22 layers, 32/4 heads)"}
gb = lambda b: "%.2f GB" % (b / 1e9)
print("| model shape | method | synth write | quantize time | quantize peak RSS | input | output | "
      "`eval ppl`, 512-token windows: s per window | `eval ppl` peak RSS |")
print("|---|---|---|---|---|---|---|---|---|")
for r in runs:
    method = "%s W%d g%d" % (r["method"].upper(), r["bits"], r["group_size"])
    if "--synthetic" in r["flags"]:
        method += ", `%s`" % r["flags"][r["flags"].index("--synthetic"):]
    e = r.get("eval")
    print("| %s | %s | %.1f s | %.0f s | %.0f MB | %s | %s | %s | %s |" % (
        names.get(r["run"], r["run"]), method, r["synth_seconds"], r["seconds"], r["peak_rss_mb"],
        gb(r["input_bytes"]), gb(r["output_bytes"]),
        "%.1f s (%d windows, %.1f s in all with loading)" % (e["seconds_per_window"], e["windows"], e["seconds"]) if e else "-",
        "%.0f MB" % e["peak_rss_mb"] if e else "-"))
PY
  } >"$tmp/scale-bench"
fi

if wanted fuzz; then
  record=${PTQ_FUZZ_RECORD:-docs/results/fuzz.jsonl}
  [[ -f $record ]] || { echo "fuzz: no $record; run scripts/fuzz.sh --record first" >&2; exit 1; }
  python3 - "$record" >"$tmp/fuzz" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
run, rows = lines[0], lines[1:]
if "run" not in run or not rows or any("target" not in r for r in rows):
    sys.exit("fuzz: %s is not a scripts/fuzz.sh --record file" % sys.argv[1])
commit = run["commit"] or "unknown"
if run["dirty"]:
    commit += " + uncommitted changes"
print("`$ %s` on %s (nice %d, load average %.2f at the start, %.2f at the end), %s, %s, commit %s" % (
    run["run"], run["machine"], run["nice"], run["load_start"], run["load_end"], run["compiler"],
    run["date"][:10], commit))
print()
dur = lambda s: "%d s" % s if s < 120 else "%.0f min" % (s / 60)
print("Recorded by `scripts/fuzz.sh --record` in [%s](%s): each target runs under libFuzzer (`%s`, built with `%s`) "
      "for %s, %s of fuzzing in all. executions: inputs run (libFuzzer's `number_of_executed_units`); crashes: "
      "inputs that crashed, leaked, hung or passed the memory limit (each one, fixed, becomes a reproducer in "
      "`tests/fuzz/corpus/<target>/`); corpus: files in the target's corpus directory after the run (kept from "
      "run to run and replayed first, redundant inputs included)." % (
          sys.argv[1], sys.argv[1], run["libfuzzer"], run["build"], dur(rows[0]["seconds"]),
          dur(sum(r["seconds"] for r in rows))))
print()
print("| target | seconds | executions | exec/s | crashes | corpus |")
print("|---|---:|---:|---:|---:|---:|")
fmt = lambda r, name: "| %s | %d | %s | %s | %d | %s |" % (
    name, r["seconds"], format(r["executions"], ","), format(round(r["executions"] / max(r["seconds"], 1)), ","),
    r["crashes"], format(r["corpus"], ","))
for r in rows:
    print(fmt(r, "`%s`" % r["target"]))
total = {k: sum(r[k] for r in rows) for k in ("seconds", "executions", "crashes", "corpus")}
print(fmt(total, "**total** (%d targets)" % len(rows)))
PY
fi

python3 - "$tmp" "${sections[@]}" <<'PY'
import re, sys, pathlib
tmp = pathlib.Path(sys.argv[1])
files = [pathlib.Path("README.md"), pathlib.Path("docs/RESULTS.md")]
texts = {f: f.read_text() for f in files}
for section in sys.argv[2:]:
    body = (tmp / section).read_text()
    pattern = re.compile(r"(<!-- BEGIN %s -->\n).*?(<!-- END %s -->)" % (section, section), re.S)
    holders = [f for f in files if pattern.search(texts[f])]
    if len(holders) != 1:
        sys.exit("section %s must be in exactly one of README.md, docs/RESULTS.md (found in %d)" % (section, len(holders)))
    texts[holders[0]] = pattern.sub(lambda m: m.group(1) + body + m.group(2), texts[holders[0]])
for f, t in texts.items():
    f.write_text(t)
PY
echo "README.md / docs/RESULTS.md updated: ${sections[*]}"
