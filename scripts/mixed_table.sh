#!/usr/bin/env bash
# Issue 14's mixed-precision evidence: perplexity and KL divergence from the FP model against bits/weight, for uniform
# GPTQ grids and for GPTQ on grids allocated per module under a budget (`ptq quantize --target-bpw`), on
# data/models/sotu-llama-8m and data/models/stories260K and on their outlierized variants (`ptq outlierize MODEL`:
# 4 channels per norm x 50, the consumers' columns / 50; the same function, activation outliers planted); then, at the
# sizes of llama.cpp's Q3_K_M and Q4_K_M mixes, ptq's allocated GGUF against llama-quantize's mix with an imatrix,
# both scored by llama.cpp. Writes an SVG plot (KL, log scale, against bits/weight; default
# docs/results/mixed_precision.svg) and prints Markdown tables, then the JSON lines (one per row) in a <details>
# block (scripts/update_readme.sh mixed-table puts the output in README.md).
#
# Part 1, ptq checkpoints, scored by ptq (`ptq eval ppl CK... --kl-reference FP`: packed runner, fp32 activations):
#   uniform    `ptq quantize M --recipe configs/w4a16-gptq.yaml --grid wB<G> --stats STATS`, B = 2, 3, 4, 5, 6
#   allocated  `ptq quantize M --recipe configs/mixed-3.5bit.yaml --target-bpw T --candidates w2<G>,...,w8<G>
#              --stats STATS` (GPTQ on each module's grid; candidates 2, 3, 4, 5, 6, 8 bits), T = 2.5, 3, 3.5, 4,
#              4.5, 5, 6; sensitivity: the recipe's rtn-kl (or --metric's), measured at the first budget
#              (--save-sensitivity) and reused at the others (--sensitivity: the same numbers, tests/pipeline)
#   <G>: sotu-llama-8m g128 (rows of 256 and 768); stories260K one group per output channel (its rows of 64 and 172
#   take no common group of 32 or more; a width the group does not divide would stay floating point).
#   bits/weight = as the allocator counts (lib/pipeline/allocate.h, WeightGrid::bytes_for): 8 x (codes + fp16 scales
#   + zeros) bytes / parameters over the quantized linear modules (q, k, v, o, gate, up, down; the embeddings, norms
#   and lm_head stay FP and are not counted; g_idx and packing padding not counted); `avg_bits_per_weight` of
#   `ptq quantize --json`, equal to the allocation's `achieved_bpw` (checkpoint quantization_config "allocation").
#   Target (issue 14), the last column of each allocated row: lower KL than the best uniform grid of no larger
#   bits/weight (perplexity compared when the binary has no --kl-reference).
# Part 2, GGUF at the sizes of llama.cpp's Q3_K_M and Q4_K_M mixes (sotu-llama-8m and stories260K), scored by
# llama.cpp (node-llama-cpp's CPU build, tests/oracle/gguf_kl.mjs, as scripts/gguf_table.sh):
#   llama-quantize --imatrix   llama.cpp's tool (scripts/lib_npm_oracle.sh) on ptq's F32 GGUF export, with the imatrix
#                              `ptq export STATS --format imatrix` wrote;
#   ptq GPTQ mix               `ptq quantize M --recipe configs/gguf-<t>-gptq.yaml --stats STATS` (the mix's types);
#   ptq allocated              the same recipe with `--target-bpw` = that checkpoint's bits/weight over its quantized
#                              linear modules (ggml bytes), choosing ggml block types per module by ptq quantize's
#                              default sensitivity rtn-kl (or --metric's) (sotu-llama-8m: the default q2_k, q3_k,
#                              q4_k, q5_k, q6_k, q8_0; stories260K, whose rows are no multiple of 256: q4_0, q4_1,
#                              q5_0, q5_1, q8_0; its down_proj (172 columns) keeps the mix's F16);
#   both ptq rows exported with `ptq export CK --format gguf --gguf-type <t>` (token_embd / output as the mix has them).
#   bits/weight here = 8 x tensor data bytes / parameters of the whole file, as llama.cpp counts BPW
#   (tests/oracle/gguf_sizes.mjs). Target: the allocated file has lower KL than llama-quantize --imatrix with no more
#   tensor data.
# Texts (scripts/lib_bench.sh bench_texts): STATS = `ptq calibrate M --hessian` on a calibration text disjoint from the
# scored one (40 windows, seed 0; the same windows make GPTQ's Hessians, the sensitivities and the imatrix).
#   sotu-llama-8m: calibrate on data/sotu-train.txt (256 tokens a window); score the first windows of 256 tokens of
#     data/sotu-test.txt: 20 in part 1 (5,100 predicted tokens), 40 in part 2 (10,200, as scripts/gguf_table.sh).
#   stories260K: calibrate on the first 1766 paragraphs of data/tinystories-valid.txt (512 tokens a window); score
#     the first windows of 512 tokens of the remaining 1767: 20 in part 1 (10,220 predicted tokens), 40 in part 2
#     (20,440). Part 1 runs every window twice (checkpoint and FP model) for 48 checkpoints: 20 windows keep the run
#     within the hour.
# KL: mean KL(p_FP || p_quantized) per predicted token, nats; the FP model of an outlierized variant is the
# outlierized FP model.
# Usage: scripts/mixed_table.sh [--quick] [--metric M] [--svg FILE]
#   --metric M: the allocations' --sensitivity-metric (rtn, gptq, kl, rtn-kl; default: rtn-kl, the recipes' and
#               ptq quantize's)
#   --quick: stories260K only; uniform w3, w4; budgets 3.5 and 4.5; the GGUF part at Q4_K_M only (~5 minutes)
#   --svg FILE: where the plot goes (default docs/results/mixed_precision.svg)
# Environment: PTQ (a ptq binary; default build/ptq, built by scripts/build.sh), NPM_DIR (default build/npm-oracle),
#              PTQ_SCRATCH (temporary files, default /tmp).
# Runtime on the project's 2-core machine: 12 minutes in full on an Intel Xeon (AVX-512), nice'd, another test run
# sharing the machine for the first 5 (29 minutes on an AMD EPYC under load 4-7, when the sensitivities were measured
# at every budget); about 5 of them llama.cpp scoring sotu-llama-8m's 6 GGUF files (one thread).
# Exit 0 when the tables were made (whatever the targets' verdicts; the GGUF part says "not run" when npm, g++ or the
# llama.cpp source bundle is unavailable), 1 on a failure of the setup (calibration, scoring).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/lib_bench.sh
source scripts/lib_bench.sh
# shellcheck source=scripts/lib_npm_oracle.sh
source scripts/lib_npm_oracle.sh
quick=0
metric_args=()
svg=$root/docs/results/mixed_precision.svg
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --metric) [[ $# -ge 2 ]] || { echo "--metric needs a name" >&2; exit 2; }; metric_args=(--sensitivity-metric "$2"); shift ;;
    --svg) [[ $# -ge 2 ]] || { echo "--svg needs a file" >&2; exit 2; }; svg=$(realpath -m "$2"); shift ;;
    *) echo "usage: $0 [--quick] [--metric M] [--svg FILE]" >&2; exit 2 ;;
  esac
  shift
done
PTQ=$(ptq_binary)
ptq() { "$PTQ" -q "$@"; }
work=$(mktemp -d "${PTQ_SCRATCH:-/tmp}/ptq-mixed-table.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

models=(sotu-llama-8m stories260K)
variants=(plain outlierized)
bits=(2 3 4 5 6)
budgets=(2.5 3 3.5 4 4.5 5 6)
mixes=(Q4_K_M:q4_k_m Q3_K_M:q3_k_m)  # llama-quantize type:ptq --gguf-type and recipe stem
if [[ $quick == 1 ]]; then
  models=(stories260K); variants=(plain); bits=(3 4); budgets=(3.5 4.5); mixes=(Q4_K_M:q4_k_m)
fi
windows=20 gguf_windows=40  # part 1 (ptq), part 2 (llama.cpp)
kl_flag=0
"$PTQ" eval ppl --help | grep -q -- --kl-reference && kl_flag=1

# llama.cpp for part 2; without it part 2 is reported as not run.
npm_dir=$(realpath -m "${NPM_DIR:-$root/build/npm-oracle}")
oracle=ok
skip=$(npm_oracle_quantize_setup "$npm_dir" "$root" gguf_kl gguf_sizes) || oracle="not run: ${skip#skip: }"
quantize=$npm_dir/llama-quantize

rows=$work/rows.jsonl
: >"$rows"
# row KEY=VALUE...: one JSON line (values that parse as JSON numbers are stored as numbers).
row() {
  python3 -c 'import json, sys
d = {}
for a in sys.argv[1:]:
    k, v = a.split("=", 1)
    try: d[k] = json.loads(v) if v[:1] in "-0123456789" else v
    except ValueError: d[k] = v
print(json.dumps(d))' "$@" >>"$rows"
}
# quantize_row PART MODEL METHOD LABEL CK LOG ARGS...: `ptq quantize ARGS -o CK --json`, one row (its bits/weight and
# chosen grids, or the failure).
quantize_row() {
  local part=$1 model=$2 method=$3 label=$4 ck=$5 log=$6
  shift 6
  if ptq quantize "$@" -o "$ck" --json >"$ck.json" 2>"$log"; then
    row part="$part" model="$model" method="$method" label="$label" file="$ck" status=score quantize_json="$ck.json"
  else
    row part="$part" model="$model" method="$method" label="$label" file="" status="failed: $(last_line "$log")"
  fi
}

for model in "${models[@]}"; do
  for variant in "${variants[@]}"; do
    name=$model
    [[ $variant == outlierized ]] && name=$model-outlierized
    m=$work/$name
    mkdir -p "$m"
    bench_texts "$model" "$m" "$root"  # calib, test, seqlen, calib_name, test_name
    dir=$root/data/models/$model
    if [[ $variant == outlierized ]]; then
      ptq outlierize "$dir" -o "$m/fp" >/dev/null
      dir=$m/fp
    fi
    case $model in
      sotu-llama-8m) group=g128; gguf_candidates=() ;;
      stories260K) group=""; gguf_candidates=(--candidates "q4_0,q4_1,q5_0,q5_1,q8_0") ;;
    esac
    ptq calibrate "$dir" --data "$calib" --nsamples 40 --seqlen "$seqlen" --seed 0 --hessian -o "$m/stats.safetensors" \
      >/dev/null
    python3 -c 'import json, sys; m, c, t, s = sys.argv[1:]
print(json.dumps({"model": m, "calib": c, "test": t, "seqlen": int(s)}))' \
      "$name" "$calib_name" "$test_name" "$seqlen" >"$m/setup.json"

    # Part 1: uniform grids and allocations, scored by ptq in one run.
    candidates=w2$group,w3$group,w4$group,w5$group,w6$group,w8$group
    for b in "${bits[@]}"; do
      quantize_row grid "$name" uniform "w$b$group" "$m/w$b" "$m/w$b.log" \
        "$dir" --recipe configs/w4a16-gptq.yaml --grid "w$b$group" --stats "$m/stats.safetensors"
    done
    sens=(--save-sensitivity "$m/sensitivity.json")  # measured at the first budget, reused at the others
    for t in "${budgets[@]}"; do
      quantize_row grid "$name" allocated "$t" "$m/a$t" "$m/a$t.log" "$dir" --recipe configs/mixed-3.5bit.yaml \
        --target-bpw "$t" --candidates "$candidates" --stats "$m/stats.safetensors" "${metric_args[@]}" "${sens[@]}"
      [[ -f $m/sensitivity.json ]] && sens=(--sensitivity "$m/sensitivity.json")
    done
    mapfile -t cks < <(python3 -c 'import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["model"] == sys.argv[2] and r["part"] == "grid" and r["status"] == "score": print(r["file"])' "$rows" "$name")
    # With --kl-reference the FP model runs beside every checkpoint (its ppl comes back as reference_ppl).
    fp=("$dir") kl=()
    [[ $kl_flag == 1 ]] && fp=() kl=(--kl-reference "$dir")
    echo "mixed_table: $name: scoring ${#cks[@]} checkpoints, $(( $(date +%s) - start )) s in" >&2
    ptq eval ppl "${fp[@]}" "${cks[@]}" --data "$test" --seqlen "$seqlen" --max-windows "$windows" "${kl[@]}" --json \
      >"$m/eval.json"

    # Part 2: GGUF at the mixes' sizes (the plain models: the outlierized ones would double llama.cpp's scoring).
    [[ $variant == plain ]] || continue
    if [[ $oracle != ok ]]; then
      row part=gguf model="$name" method=oracle label=llama.cpp file="" status="$oracle"
      continue
    fi
    ptq export "$dir" --format gguf -o "$m/f32.gguf" >/dev/null
    ptq export "$m/stats.safetensors" --format imatrix -o "$m/imatrix.gguf" >/dev/null
    ptq tokenize "$dir" --file "$test" --json >"$m/ids.json"
    for c in "${mixes[@]}"; do
      IFS=: read -r type ours <<<"$c"
      q=$m/$ours
      if "$quantize" --imatrix "$m/imatrix.gguf" "$m/f32.gguf" "$q.llama.gguf" "$type" 2 >"$q.llama.log" 2>&1 &&
          grep -q "loaded [0-9]* importance matrix entries" "$q.llama.log"; then
        row part=gguf model="$name" method=llama-quantize label="$type" file="$q.llama.gguf" status=score
      else
        row part=gguf model="$name" method=llama-quantize label="$type" file="" status="failed: $(last_line "$q.llama.log")"
      fi
      recipe=configs/gguf-$ours-gptq.yaml
      for method in mix allocated; do
        args=()
        if [[ $method == allocated ]]; then
          target=$(python3 -c 'import json, sys; print(repr(json.load(open(sys.argv[1]))["avg_bits_per_weight"]))' \
            "$q.mix.ck.json" 2>/dev/null) || { row part=gguf model="$name" method=allocated label="$type" file="" \
                                                   status="not run: no GPTQ mix to size the budget"; continue; }
          args=(--target-bpw "$target" "${gguf_candidates[@]}" "${metric_args[@]}")
        fi
        if ptq quantize "$dir" --recipe "$recipe" --stats "$m/stats.safetensors" "${args[@]}" -o "$q.$method.ck" \
              --json >"$q.$method.ck.json" 2>"$q.$method.log" &&
            ptq export "$q.$method.ck" --format gguf --gguf-type "$ours" -o "$q.$method.gguf" >>"$q.$method.log" 2>&1
        then
          row part=gguf model="$name" method="$method" label="$type" file="$q.$method.gguf" status=score \
            quantize_json="$q.$method.ck.json"
        else
          rm -f "$q.$method.ck.json"
          row part=gguf model="$name" method="$method" label="$type" file="" status="failed: $(last_line "$q.$method.log")"
        fi
      done
    done
    mapfile -t files < <(python3 -c 'import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["model"] == sys.argv[2] and r["part"] == "gguf" and r["status"] == "score": print(r["file"])' "$rows" "$name")
    if [[ ${#files[@]} -gt 0 ]]; then
      echo "mixed_table: $name: llama.cpp scoring ${#files[@]} GGUF files, $(( $(date +%s) - start )) s in" >&2
      (cd "$npm_dir" && node gguf_kl.mjs "$m/f32.gguf" "$m/ids.json" "$seqlen" "$gguf_windows" "${files[@]}") >"$m/kl.jsonl"
      (cd "$npm_dir" && node gguf_sizes.mjs "${files[@]}") >"$m/sizes.jsonl"
    fi
  done
done

isa=$("$PTQ" -q bench "$root/data/models/stories260K" --prompt 4 --gen 4 --repeats 1 --json 2>/dev/null |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["isa"])' 2>/dev/null) || isa=unknown
mkdir -p "$(dirname "$svg")"
python3 - "$work" "$rows" "$svg" "$root" "$("$PTQ" --version)" "$(( $(date +%s) - start ))" "$kl_flag" "$isa" <<'PY' || { trap - EXIT; echo "mixed_table: rendering failed; kept $work" >&2; exit 1; }
import collections, json, math, os, sys, time
work, rows_path, svg_path, root, version, seconds, kl_flag, isa = sys.argv[1:]
seconds, kl_flag = int(seconds), kl_flag == "1"
rows = [json.loads(l) for l in open(rows_path)]
names = list(dict.fromkeys(r["model"] for r in rows))
metric = "mean_kl" if kl_flag else "ppl"
metric_name = "KL" if kl_flag else "ppl"
svg_rel = os.path.relpath(svg_path, root)

def grids_of(q):  # "w3g128 x20, w4g128 x22" from a quantize --json's allocation (or its module formats)
    a = q.get("allocation")
    if a:
        c = collections.Counter(v["grid"] for v in a["modules"].values())
    else:
        c = collections.Counter(m["format"].replace("gguf:", "") for m in q["modules"])
    return ", ".join(f"{g} x{n}" for g, n in sorted(c.items()))

def pct(a, b):
    return f"{100 * (a / b - 1):+.0f}%"

out, panels = [], []
print(f"Made by `scripts/mixed_table.sh` ({version}) on {time.strftime('%Y-%m-%d', time.gmtime())} in "
      f"{seconds / 60:.0f} min on {os.cpu_count()} cores (ptq's kernels: {isa}). Part 1 scored by ptq (`ptq eval ppl CK... --kl-reference FP`, packed runner), part 2 by "
      "llama.cpp (node-llama-cpp 3.22.1's CPU build: one thread, no flash attention, F32 KV cache) on ptq's token ids. "
      "KL: mean KL(p_FP || p_quantized) per predicted token, nats. bits/weight (part 1): codes + fp16 scales + zeros "
      "over the quantized linear modules, as the allocator counts; (part 2) 8 x tensor data bytes / parameters of "
      "the whole GGUF, as llama.cpp counts. Targets: an allocated checkpoint has lower "
      f"{metric_name} than the best uniform grid of no larger bits/weight; ptq's allocated GGUF has lower KL than "
      "llama-quantize's mix with the imatrix, with no more tensor data.\n")
print(f"![KL divergence from FP against bits/weight]({svg_rel})\n")
print("The plot: part 1's points, and part 2's GGUF files at their linear modules' bits/weight (llama-quantize's at its "
      "mix's, the same types as ptq's mix); the GGUF points' KL is llama.cpp's, with token_embd and output quantized "
      "by the mix too.\n")
for name in names:
    m = os.path.join(work, name)
    setup = json.load(open(os.path.join(m, "setup.json")))
    grid_rows = [r for r in rows if r["model"] == name and r["part"] == "grid"]
    gguf_rows = [r for r in rows if r["model"] == name and r["part"] == "gguf"]
    ev = {d["model"]: d for d in json.load(open(os.path.join(m, "eval.json")))["results"]}
    fp = next(iter(ev.values()))
    fp_ppl = fp.get("reference_ppl", fp["ppl"])  # with --kl-reference the FP model is not scored on its own
    alloc = next((json.load(open(r["quantize_json"]))["allocation"] for r in grid_rows
                  if r["method"] == "allocated" and r["status"] == "score"), None)
    sens = f"; allocations' sensitivity: {alloc['metric']} ({alloc['sensitivity']})" if alloc else ""
    print(f"**{name}**: GPTQ Hessians and sensitivities from `ptq calibrate --hessian` on {setup['calib']} "
          f"(40 x {setup['seqlen']} tokens, seed 0){sens}; scored on the first {fp['windows']} windows of "
          f"{setup['seqlen']} tokens of {setup['test']} ({fp['predicted_tokens']:,} predicted tokens); FP ppl "
          f"{fp_ppl:.3f}.\n")
    print("| method | grids | bits/weight | ppl | KL from FP | target |")
    print("|---|---|---:|---:|---:|---|")
    print(f"| FP | - | - | {fp_ppl:.3f} | 0 | |")
    recs = []
    for r in grid_rows:
        rec = {k: v for k, v in r.items() if k not in ("file", "quantize_json")}
        if r["status"] == "score":
            q = json.load(open(r["quantize_json"]))
            e = ev[r["file"]]
            rec.update(bits_per_weight=q["avg_bits_per_weight"], grids=grids_of(q), ppl=e["ppl"])
            if "mean_kl" in e: rec["mean_kl"] = e["mean_kl"]
            if q.get("allocation"): rec["achieved_bpw"] = q["allocation"]["achieved_bpw"]
        recs.append(rec)
    uniform = [x for x in recs if x["method"] == "uniform" and metric in x]
    for rec in sorted(recs, key=lambda x: (x.get("bits_per_weight", 99), x["method"])):
        target = ""
        if rec["method"] == "allocated":
            if metric not in rec:
                target = "failed"
            else:
                below = [u for u in uniform if u["bits_per_weight"] <= rec["bits_per_weight"] + 1e-9]
                if not below:
                    target = "no uniform grid this small"
                else:
                    best = min(below, key=lambda u: u[metric])
                    rec["target_met"] = rec[metric] < best[metric]
                    rec["best_uniform"] = best["label"]
                    target = (("**yes**" if rec["target_met"] else "no") +
                              f" ({metric_name} {pct(rec[metric], best[metric])} vs {best['label']})")
        rec["target"] = target
        method = "uniform " + rec["label"] if rec["method"] == "uniform" else f"allocated, budget {rec['label']}"
        if metric in rec:
            kl = f"{rec['mean_kl']:.6f}" if "mean_kl" in rec else "-"
            print(f"| {method} | {rec['grids']} | {rec['bits_per_weight']:.3f} | {rec['ppl']:.3f} | {kl} | {target} |")
        else:
            print(f"| {method} | - | - | {rec['status']} | | {target} |")
        out.append(rec)
    print()
    panel = {"name": name, "uniform": [], "allocated": [], "gguf": collections.defaultdict(list)}
    for rec in recs:
        if metric in rec:
            panel[rec["method"]].append((rec["bits_per_weight"], rec[metric]))
    if gguf_rows:
        kl = {}
        if os.path.exists(os.path.join(m, "kl.jsonl")):
            kl = {d["file"]: d for d in map(json.loads, open(os.path.join(m, "kl.jsonl")))}
            ins = {d["file"]: d for d in map(json.loads, open(os.path.join(m, "sizes.jsonl")))}
        first = next(iter(kl.values()), None)
        scored = (f"the first {first['windows']} windows ({first['predicted']:,} predicted tokens); F32 ppl "
                  f"{first['ppl_fp']:.3f}") if first else "nothing scored"
        print(f"**{name}, GGUF** at the sizes of llama.cpp's mixes, scored by llama.cpp on {scored}:\n")
        print("| mix | producer | bits/weight (file) | linear modules' bits/weight | module types | ppl | KL from F32 "
              "| target |")
        print("|---|---|---:|---:|---|---:|---:|---|")
        by = {}
        for r in gguf_rows:
            rec = {k: v for k, v in r.items() if k not in ("file", "quantize_json")}
            f = r["file"]
            if r["status"] == "score":
                rec.update(ppl=kl[f]["ppl_q"], mean_kl=kl[f]["mean_kl"], ppl_fp=kl[f]["ppl_fp"],
                           tensor_bytes=ins[f]["tensor_bytes"], tensor_types=ins[f]["types"],
                           bits_per_weight=8 * ins[f]["tensor_bytes"] / ins[f]["parameters"])
                if r.get("quantize_json"):
                    q = json.load(open(r["quantize_json"]))
                    rec.update(linear_bpw=q["avg_bits_per_weight"], grids=grids_of(q))
            by[(r["label"], r["method"])] = rec
        for (label, method), rec in by.items():
            mix = by.get((label, "mix"), {})
            if method == "llama-quantize" and "tensor_bytes" in rec and rec["tensor_bytes"] == mix.get("tensor_bytes") \
                    and rec["tensor_types"] == mix.get("tensor_types"):
                rec["linear_bpw"], rec["grids"] = mix["linear_bpw"], mix["grids"]  # the same mix of types
            target = ""
            if method == "allocated":
                ref = by.get((label, "llama-quantize"), {})
                if "mean_kl" not in rec or "mean_kl" not in ref:
                    target = "not scored"
                else:
                    data_ok = rec["tensor_bytes"] <= ref["tensor_bytes"]
                    rec["target_met"] = rec["mean_kl"] < ref["mean_kl"] and data_ok
                    target = (("**yes**" if rec["target_met"] else "no") + f" (KL {pct(rec['mean_kl'], ref['mean_kl'])}"
                              + ("" if data_ok else f", tensor data +{rec['tensor_bytes'] - ref['tensor_bytes']:,} bytes")
                              + ")")
            rec["target"] = target
            producer = {"llama-quantize": f"llama-quantize --imatrix {label}", "mix": f"ptq GPTQ, {label}'s types",
                        "allocated": "ptq GPTQ, allocated types", "oracle": "llama.cpp"}[method]
            if "mean_kl" in rec:
                lin = f"{rec['linear_bpw']:.3f}" if "linear_bpw" in rec else "-"
                print(f"| {label} | {producer} | {rec['bits_per_weight']:.3f} | {lin} | {rec.get('grids', '-')} | "
                      f"{rec['ppl']:.3f} | {rec['mean_kl']:.6f} | {target} |")
                if "linear_bpw" in rec:
                    panel["gguf"][method].append((rec["linear_bpw"], rec["mean_kl"] if kl_flag else rec["ppl"]))
            else:
                print(f"| {label} | {producer} | - | - | - | {rec['status']} | | {target} |")
            out.append(rec)
        print()
    panels.append(panel)
print("<details><summary>JSON lines</summary>\n\n```")
for rec in out:
    print(json.dumps(rec))
print("```\n</details>")

# The plot: one panel per model, log-scale metric against bits/weight.
styles = {"uniform": ("#1f77b4", "circle", "ptq GPTQ, uniform grid"),
          "allocated": ("#d62728", "square", "ptq GPTQ, allocated (--target-bpw)"),
          "mix": ("#2ca02c", "triangle", "ptq GPTQ GGUF, llama.cpp's mix"),
          "gguf-allocated": ("#ff7f0e", "diamond", "ptq GPTQ GGUF, allocated types"),
          "llama-quantize": ("#000000", "cross", "llama-quantize --imatrix")}
def marker(kind, x, y, color):
    if kind == "circle": return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>'
    if kind == "square": return f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{color}"/>'
    if kind == "triangle": return f'<path d="M{x:.1f},{y - 5:.1f} L{x + 5:.1f},{y + 4:.1f} L{x - 5:.1f},{y + 4:.1f} Z" fill="{color}"/>'
    if kind == "diamond": return f'<path d="M{x:.1f},{y - 6:.1f} L{x + 5:.1f},{y:.1f} L{x:.1f},{y + 6:.1f} L{x - 5:.1f},{y:.1f} Z" fill="{color}"/>'
    return (f'<path d="M{x - 4:.1f},{y - 4:.1f} L{x + 4:.1f},{y + 4:.1f} M{x - 4:.1f},{y + 4:.1f} L{x + 4:.1f},{y - 4:.1f}" '
            f'stroke="{color}" stroke-width="2"/>')
pw, ph, ml, mr, mt, mb = 420, 300, 62, 14, 28, 42
cols = min(2, len(panels))
nrows = (len(panels) + cols - 1) // cols
legend_h = 16 * len(styles) + 36
W, H = cols * pw, nrows * ph + legend_h + 10
s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
     'font-family="sans-serif" font-size="11">', f'<rect width="{W}" height="{H}" fill="white"/>',
     f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">'
     f'{"KL from FP" if kl_flag else "perplexity"} vs bits/weight (scripts/mixed_table.sh)</text>']
for i, (k, (color, shape, label)) in enumerate(styles.items()):
    x, y = ml, 26 + 16 * i
    s.append(marker(shape, x + 6, y + 6, color))
    s.append(f'<text x="{x + 16}" y="{y + 10}">{label}</text>')
for i, p in enumerate(panels):
    ox, oy = (i % cols) * pw, legend_h + (i // cols) * ph
    pts = p["uniform"] + p["allocated"] + [xy for v in p["gguf"].values() for xy in v]
    pts = [(x, y) for x, y in pts if y > 0]
    if not pts: continue
    x0, x1 = math.floor(min(x for x, _ in pts) * 2) / 2, math.ceil(max(x for x, _ in pts) * 2) / 2
    y0, y1 = math.floor(math.log10(min(y for _, y in pts))), math.ceil(math.log10(max(y for _, y in pts)))
    if y1 == y0: y1 += 1
    X = lambda x: ox + ml + (x - x0) / max(x1 - x0, 1e-9) * (pw - ml - mr)
    Y = lambda y: oy + mt + (y1 - math.log10(y)) / (y1 - y0) * (ph - mt - mb)
    s.append(f'<text x="{ox + ml + (pw - ml - mr) / 2}" y="{oy + mt - 8}" text-anchor="middle" font-weight="bold">'
             f'{p["name"]}</text>')
    s.append(f'<rect x="{ox + ml}" y="{oy + mt}" width="{pw - ml - mr}" height="{ph - mt - mb}" fill="none" stroke="#888"/>')
    for e in range(y0, y1 + 1):
        for d in (range(1, 10) if y1 - y0 <= 4 else (1,)):
            v = d * 10 ** e
            if v > 10 ** y1: break
            y = Y(v)
            s.append(f'<line x1="{ox + ml}" x2="{ox + pw - mr}" y1="{y:.1f}" y2="{y:.1f}" stroke="{"#ccc" if d == 1 else "#eee"}"/>')
            if d == 1:
                s.append(f'<text x="{ox + ml - 4}" y="{y + 4:.1f}" text-anchor="end">1e{e}</text>')
    xt = x0
    while xt <= x1 + 1e-9:
        x = X(xt)
        s.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{oy + mt}" y2="{oy + ph - mb}" stroke="#eee"/>')
        s.append(f'<text x="{x:.1f}" y="{oy + ph - mb + 14}" text-anchor="middle">{xt:g}</text>')
        xt += 0.5
    s.append(f'<text x="{ox + ml + (pw - ml - mr) / 2}" y="{oy + ph - 10}" text-anchor="middle">bits/weight '
             '(quantized linear modules)</text>')
    s.append(f'<text transform="translate({ox + 14},{oy + mt + (ph - mt - mb) / 2}) rotate(-90)" text-anchor="middle">'
             f'{"mean KL (nats)" if kl_flag else "perplexity"}</text>')
    series = [("uniform", p["uniform"]), ("allocated", p["allocated"])] + \
             [("gguf-allocated" if k == "allocated" else k, v) for k, v in p["gguf"].items()]
    for k, v in series:
        color, shape, _ = styles[k]
        v = sorted(xy for xy in v if xy[1] > 0)
        if k in ("uniform", "allocated") and len(v) > 1:
            s.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' %
                     (color, " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in v)))
        for x, y in v:
            s.append(marker(shape, X(x), Y(y), color))
s.append("</svg>")
with open(svg_path, "w") as f:
    f.write("\n".join(s) + "\n")
PY
