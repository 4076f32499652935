#!/usr/bin/env bash
# Issue 13's GGUF evidence table: for data/models/sotu-llama-8m and data/models/stories260K, and each GGUF type Q8_0,
# Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q3_K_M, Q2_K, the file size, bits/weight, and the perplexity and mean KL divergence
# from the FP model's next-token distribution, computed by llama.cpp (node-llama-cpp's prebuilt CPU build: one
# thread, no flash attention, F32 KV cache; tests/oracle/gguf_kl.mjs) on a held-out text, for these producers:
#   llama-quantize            llama.cpp's own tool (built from the llama.cpp source node-llama-cpp ships,
#                             scripts/lib_npm_oracle.sh) on ptq's F32 GGUF export of the model, no imatrix;
#   llama-quantize --imatrix  the same with the imatrix `ptq export STATS --format imatrix` made;
#   ptq RTN                   `ptq export MODEL --format gguf --gguf-type T`: compared with llama-quantize's file,
#                             first with cmp, then tensor by tensor (tests/oracle/gguf_compare.mjs: same names, types,
#                             shapes and bytes; llama-quantize adds metadata of its own, so the files are never
#                             byte-identical); printed "= llama-quantize" when every tensor is identical, scored when not;
#   ptq RTN --stats           the same with `--stats STATS` (imatrix-weighted rounding), against llama-quantize --imatrix;
#   ptq GPTQ                  `ptq quantize MODEL --recipe configs/gguf-<t>-gptq.yaml --stats STATS -o CK`, then
#                             `ptq export CK --format gguf --gguf-type T`; "not run" when the recipe file is missing.
# Type names, llama-quantize / ptq --gguf-type: Q8_0 --pure / q8_0, Q6_K / q6_k_mix, Q5_K_M / q5_k_m, Q4_K_M / q4_k_m,
# Q4_0 --pure / q4_0, Q3_K_M / q3_k_m, Q2_K / q2_k_mix (lib/export/gguf_export.h). The F32 GGUF is also the FP
# reference of the KL. STATS = `ptq calibrate MODEL --hessian` on a calibration text disjoint from the scored one:
# the same windows make the imatrix and GPTQ's Hessians (a fair comparison).
#   sotu-llama-8m: calibrate on data/sotu-train.txt (40 x 256 tokens, seed 0); score the first 40 windows of 256
#     tokens of data/sotu-test.txt (10,200 predicted tokens).
#   stories260K (context 512): data/tinystories-valid.txt cut at a blank line into its first 1766 paragraphs
#     (calibration, 40 x 512 tokens, seed 0) and the remaining 1767 (scored: the first 40 windows of 512 tokens,
#     20,440 predicted tokens). Its rows of 64 and 172 columns are no multiple of 256: llama.cpp falls back (K-quants
#     to Q4_0/Q5_0/Q5_1/Q8_0, F16 when not a multiple of 32), and so does ptq.
# Target (issue 13), the last column of each GPTQ row: lower KL than llama-quantize without and with the imatrix at
# no larger size: tensor data no larger than either file's (the whole files also differ by their metadata, a few
# dozen bytes: ptq writes one provenance key, llama-quantize its file type and imatrix keys; shown beside the verdict).
# bits/weight = 8 x tensor data bytes / parameters, as llama.cpp counts BPW (tests/oracle/gguf_sizes.mjs; metadata and
# tokenizer not counted); file size: the whole file.
# Prints one Markdown table per model, then the JSON lines (one per row) in a <details> block
# (scripts/update_readme.sh gguf-table puts the output in README.md).
# Usage: scripts/gguf_table.sh [--quick]   (--quick: stories260K, Q4_K_M and Q4_0 only, ~4 minutes)
# Environment: PTQ (a ptq binary; default build/ptq, built by scripts/build.sh), NPM_DIR (default build/npm-oracle),
#              PTQ_SCRATCH (temporary files, default /tmp).
# Runtime on the project's 2-core machine: 32 minutes in full (measured nice'd, with other jobs sharing the machine,
# load 2.5-2.9), most of it llama.cpp scoring sotu-llama-8m (~75 s per file, one thread); peak RSS 1.2 GB.
# Exit 0 when the table was made (whatever the target's verdict), 77 when npm, g++ or the llama.cpp source bundle is
# unavailable (skipped), 1 on a failure of the setup (export, calibration, scoring).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
quick=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=scripts/lib_bench.sh
source scripts/lib_bench.sh
PTQ=$(ptq_binary)
ptq() { "$PTQ" -q "$@"; }
npm_dir=$(realpath -m "${NPM_DIR:-$root/build/npm-oracle}")
# shellcheck source=scripts/lib_npm_oracle.sh
source scripts/lib_npm_oracle.sh
skip=$(npm_oracle_quantize_setup "$npm_dir" "$root" gguf_compare gguf_kl gguf_sizes) || { rc=$?; echo "$skip"; exit $rc; }
quantize=$npm_dir/llama-quantize
work=$(mktemp -d "${PTQ_SCRATCH:-/tmp}/ptq-gguf-table.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

# TYPE:llama-quantize type:--pure or not:ptq --gguf-type:recipe stem
types=(Q8_0:Q8_0:pure:q8_0:q8_0 Q6_K:Q6_K:mix:q6_k_mix:q6_k Q5_K_M:Q5_K_M:mix:q5_k_m:q5_k_m
       Q4_K_M:Q4_K_M:mix:q4_k_m:q4_k_m Q4_0:Q4_0:pure:q4_0:q4_0 Q3_K_M:Q3_K_M:mix:q3_k_m:q3_k_m
       Q2_K:Q2_K:mix:q2_k_mix:q2_k)
models=(sotu-llama-8m stories260K)
if [[ $quick == 1 ]]; then
  types=(Q4_K_M:Q4_K_M:mix:q4_k_m:q4_k_m Q4_0:Q4_0:pure:q4_0:q4_0)
  models=(stories260K)
fi

rows=$work/rows.jsonl
: >"$rows"
# row MODEL TYPE PRODUCER FILE STATUS [SAME_AS]: STATUS is "score", "same" (byte-identical to SAME_AS's file) or a
# reason it was not run / failed.
row() {
  python3 -c 'import json, sys; m, t, p, f, s, same = sys.argv[1:]
print(json.dumps({"model": m, "type": t, "producer": p, "file": f, "status": s, "same_as": same}))' \
    "$1" "$2" "$3" "$4" "$5" "${6:-}" >>"$rows"
}

for model in "${models[@]}"; do
  dir=$root/data/models/$model
  m=$work/$model
  mkdir -p "$m"
  bench_texts "$model" "$m" "$root"  # calib, test, seqlen, calib_name, test_name
  windows=40
  ptq export "$dir" --format gguf -o "$m/f32.gguf" >/dev/null
  ptq calibrate "$dir" --data "$calib" --nsamples 40 --seqlen "$seqlen" --seed 0 --hessian -o "$m/stats.safetensors" \
    >/dev/null
  ptq export "$m/stats.safetensors" --format imatrix -o "$m/imatrix.gguf" >/dev/null
  ptq tokenize "$dir" --file "$test" --json >"$m/ids.json"
  row "$model" FP "F32 GGUF (ptq export)" "$m/f32.gguf" reference
  for c in "${types[@]}"; do
    IFS=: read -r type theirs kind ours stem <<<"$c"
    q=$m/$ours
    pure=()
    [[ $kind == pure ]] && pure=(--pure)
    lq="llama-quantize${pure:+ --pure} $theirs"
    for imx in plain imatrix; do
      largs=("${pure[@]}") pargs=() suffix=""
      [[ $imx == imatrix ]] && { largs+=(--imatrix "$m/imatrix.gguf"); pargs=(--stats "$m/stats.safetensors"); suffix=" --imatrix"; }
      if "$quantize" "${largs[@]}" "$m/f32.gguf" "$q.llama.$imx.gguf" "$theirs" 2 >"$q.llama.$imx.log" 2>&1 &&
          { [[ $imx == plain ]] || grep -q "loaded [0-9]* importance matrix entries" "$q.llama.$imx.log"; }; then
        row "$model" "$type" "$lq$suffix" "$q.llama.$imx.gguf" score
      else
        row "$model" "$type" "$lq$suffix" "" "failed: $(last_line "$q.llama.$imx.log")"
      fi
      psuffix=""
      [[ $imx == imatrix ]] && psuffix=" --stats"
      if ptq export "$dir" --format gguf --gguf-type "$ours" "${pargs[@]}" -o "$q.rtn.$imx.gguf" >"$q.rtn.$imx.log" 2>&1
      then
        if cmp -s "$q.rtn.$imx.gguf" "$q.llama.$imx.gguf"; then
          row "$model" "$type" "ptq RTN$psuffix" "$q.rtn.$imx.gguf" same "$lq$suffix (byte-identical file)"
        elif [[ -f $q.llama.$imx.gguf ]] &&
            node "$npm_dir/gguf_compare.mjs" "$q.rtn.$imx.gguf" "$q.llama.$imx.gguf" >"$q.cmp.$imx.json"; then
          row "$model" "$type" "ptq RTN$psuffix" "$q.rtn.$imx.gguf" same "$lq$suffix (every tensor byte-identical)"
        else
          row "$model" "$type" "ptq RTN$psuffix" "$q.rtn.$imx.gguf" score
        fi
      else
        row "$model" "$type" "ptq RTN$psuffix" "" "failed: $(last_line "$q.rtn.$imx.log")"
      fi
    done
    recipe=configs/gguf-$stem-gptq.yaml
    if [[ ! -f $recipe ]]; then
      row "$model" "$type" "ptq GPTQ ($recipe)" "" "not run: $recipe missing"
    elif ptq quantize "$dir" --recipe "$recipe" --stats "$m/stats.safetensors" -o "$q.gptq.ck" >"$q.gptq.log" 2>&1 &&
        ptq export "$q.gptq.ck" --format gguf --gguf-type "$ours" -o "$q.gptq.gguf" >>"$q.gptq.log" 2>&1; then
      row "$model" "$type" "ptq GPTQ ($recipe)" "$q.gptq.gguf" score
    else
      row "$model" "$type" "ptq GPTQ ($recipe)" "" "failed: $(last_line "$q.gptq.log")"
    fi
  done
  # llama.cpp scores every file to be scored in one run (the FP model evaluated once per window).
  mapfile -t files < <(python3 -c 'import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["model"] == sys.argv[2] and r["status"] == "score": print(r["file"])' "$rows" "$model")
  (cd "$npm_dir" && node gguf_kl.mjs "$m/f32.gguf" "$m/ids.json" "$seqlen" "$windows" "${files[@]}") >"$m/kl.jsonl"
  mapfile -t ggufs < <(ls "$m"/*.gguf | grep -v '/imatrix.gguf$')
  (cd "$npm_dir" && node gguf_sizes.mjs "${ggufs[@]}") >"$m/sizes.jsonl"
  python3 -c 'import json, sys; m, c, t, s, w = sys.argv[1:]
print(json.dumps({"model": m, "calib": c, "test": t, "seqlen": int(s), "windows": int(w)}))' \
    "$model" "$calib_name" "$test_name" "$seqlen" "$windows" >"$m/setup.json"
done

python3 - "$work" "$rows" "$("$PTQ" --version)" "$(( $(date +%s) - start ))" "${models[@]}" <<'PY'
import json, os, sys
work, rows_path, version, seconds, models = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
rows = [json.loads(l) for l in open(rows_path)]
out = []
print(f"Made by `scripts/gguf_table.sh` ({version}) in {seconds / 60:.0f} min on {os.cpu_count()} cores. "
      "Scored by llama.cpp (node-llama-cpp 3.22.1's CPU build: one thread, no flash attention, F32 KV cache) on ptq's "
      "token ids. KL: mean KL(p_F32 || p_quantized) per predicted token. bits/weight: tensor data bits / parameters. "
      "target: ptq GPTQ has lower KL than llama-quantize without and with the imatrix, with no more tensor data "
      "(whole files differ by a few dozen bytes of metadata, shown). "
      "Rows whose tensors equal llama-quantize's are not scored again.\n")
for model in models:
    m = os.path.join(work, model)
    setup = json.load(open(os.path.join(m, "setup.json")))
    kl = {d["file"]: d for d in map(json.loads, open(os.path.join(m, "kl.jsonl")))}
    ins = {d["file"]: d for d in map(json.loads, open(os.path.join(m, "sizes.jsonl")))}
    mrows = [r for r in rows if r["model"] == model]
    first = next(iter(kl.values()), None)
    params = ins[mrows[0]["file"]]["parameters"]
    scored = (f"the first {first['windows']} windows of {setup['seqlen']} tokens of {setup['test']} "
              f"({first['predicted']:,} predicted tokens)") if first else "nothing scored"
    print(f"**{model}** ({params:,} parameters): imatrix and GPTQ Hessians from `ptq calibrate --hessian` on "
          f"{setup['calib']} (40 x {setup['seqlen']} tokens, seed 0); scored on {scored}; F32 ppl "
          f"{first['ppl_fp']:.3f}.\n" if first else f"**{model}**: {scored}.\n")
    print("| type | producer | file size | bits/weight | ppl | KL from F32 | target |")
    print("|---|---|---:|---:|---:|---:|---|")
    by = {}
    for r in mrows:
        f = r["file"]
        rec = dict(r)
        if f and os.path.exists(f):
            rec["bytes"] = os.path.getsize(f)
            rec["bits_per_weight"] = 8 * ins[f]["tensor_bytes"] / ins[f]["parameters"]
            rec["tensor_types"] = ins[f]["types"]
        if r["status"] == "score":
            rec["ppl"] = kl[f]["ppl_q"]; rec["mean_kl"] = kl[f]["mean_kl"]
        by[(r["type"], r["producer"])] = rec
        size = f"{rec['bytes'] / 1e6:.3f} MB" if "bytes" in rec else "-"
        bpw = f"{rec['bits_per_weight']:.3f}" if "bits_per_weight" in rec else "-"
        if r["status"] == "reference":
            ppl, k = (f"{first['ppl_fp']:.3f}" if first else "-"), "0"
        elif r["status"] == "score":
            ppl, k = f"{rec['ppl']:.3f}", f"{rec['mean_kl']:.6f}"
        elif r["status"] == "same":
            ppl, k = "= " + r["same_as"], "(byte-identical)"
        else:
            ppl, k = r["status"], ""
        target = ""
        if r["producer"].startswith("ptq GPTQ"):
            refs = [v for (t, p), v in by.items() if t == r["type"] and p.startswith("llama-quantize")]
            if "mean_kl" not in rec:
                target = "not run" if r["status"].startswith("not run") else "failed"
            elif len(refs) != 2 or any("mean_kl" not in v for v in refs):
                target = "no llama-quantize reference"
            else:
                # Size: the tensor data (what bits/weight counts) no larger than either llama-quantize file's; whole
                # files also differ by metadata (ptq's provenance key, llama-quantize's imatrix keys), shown apart.
                kl_ok = all(rec["mean_kl"] < v["mean_kl"] for v in refs)
                data_ok = all(ins[rec["file"]]["tensor_bytes"] <= ins[v["file"]]["tensor_bytes"] for v in refs)
                rec["target_met"] = kl_ok and data_ok
                why = []
                if not kl_ok: why.append("KL not lower")
                if not data_ok: why.append("tensor data larger")
                extra = max(rec["bytes"] - v["bytes"] for v in refs)
                meta = f"; file +{extra:,} bytes of metadata" if extra > 0 and data_ok else ""
                target = ("**yes**" if rec["target_met"] else "no (" + ", ".join(why) + ")") + meta
        rec["target"] = target
        out.append(rec)
        print(f"| {r['type']} | {r['producer']} | {size} | {bpw} | {ppl} | {k} | {target} |")
    print()
print("<details><summary>JSON lines</summary>\n\n```")
for rec in out:
    rec = {k: v for k, v in rec.items() if k != "file"}
    print(json.dumps(rec))
print("```\n</details>")
PY
