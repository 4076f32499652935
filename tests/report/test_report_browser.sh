#!/usr/bin/env bash
# The report in a real browser: `ptq quantize --report` and `ptq report` on the bundled stories260K, each page
# rendered by headless Chromium (Debian's `chromium`, scripts/setup.sh installs it) to a PNG and to its DOM; every
# section must be in the rendered DOM, the page's own check must have set data-report="ok" (no script error, no
# blocked resource: the page forbids itself the network) and the console must be empty.
# Usage: test_report_browser.sh PTQ_BINARY REPO_ROOT [KEEP_DIR]   (KEEP_DIR: keep the pages and PNGs there)
# Exit 77 (skipped, CMake SKIP_RETURN_CODE) where chromium is not installed.
set -u
ptq=$1
root=$2
keep=${3:-}
model="$root/data/models/stories260K"
text="$root/data/tinystories-valid.txt"
if ! command -v chromium >/dev/null; then
  echo "SKIP: chromium not installed (scripts/setup.sh installs it)"
  exit 77
fi
# shellcheck source=tests/cli/lib.sh
source "$root/tests/cli/lib.sh"
run() {  # NAME CMD...: must succeed
  local name=$1
  shift
  if "$@" >"$tmp/out" 2>"$tmp/err"; then ok; else bad "$name: rc $? $(tail -3 "$tmp/err")"; fi
}

# GPTQ from the stats file's Hessians: the report gets activation ranges and GPTQ-vs-RTN output errors.
run "calibrate" "$ptq" -q calibrate "$model" -o "$tmp/stats.safetensors" --data "$text" --nsamples 8 --seqlen 64 --hessian
run "quantize --report" "$ptq" -q quantize "$model" --recipe "$root/configs/w4a16-gptq.yaml" --group-size 32 \
  --stats "$tmp/stats.safetensors" -o "$tmp/q" --report "$tmp/quantize.html"
# SmoothQuant: the after-migration heatmaps; perplexity and a task against FP.
run "quantize smoothquant" "$ptq" -q quantize "$model" --recipe "$root/configs/w8a8-smoothquant.yaml" \
  --data "$text" --nsamples 4 --seqlen 64 -o "$tmp/sq"
run "report --json" "$ptq" -q report "$tmp/sq" -o "$tmp/smoothquant.html" --fp "$model" --stats "$tmp/stats.safetensors" \
  --data "$text" --seqlen 64 --max-windows 4 --tasks "$root/data/tasks/tinystories-cloze.jsonl" --limit 8 --json
cp "$tmp/out" "$tmp/smoothquant.json"
grep -q '"activation_ranges"' "$tmp/smoothquant.json" && ok || bad "report --json lacks activation_ranges"
grep -q '"ppl": [0-9]' "$tmp/smoothquant.json" && ok || bad "report --json has no perplexity"
[[ $(grep -c '<rect class="c"' "$tmp/quantize.html") -gt 0 ]] && ok || bad "quantize --report drew no heatmap"
grep -q 'after migration' "$tmp/smoothquant.html" && ok || bad "the SmoothQuant report has no after-migration map"
run "existing output refused" bash -c "! '$ptq' -q report '$tmp/q' -o '$tmp/quantize.html' 2>/dev/null"

for page in quantize smoothquant; do
  html="$tmp/$page.html"
  [[ -s $html ]] || { bad "$page: no page written"; continue; }
  grep -Eq 'https?://' "$html" && bad "$page: the page references a URL"
  flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
    --disable-component-update --disable-sync --hide-scrollbars --enable-logging=stderr --v=0)
  timeout 120 chromium "${flags[@]}" --user-data-dir="$tmp/profile-dom-$page" --dump-dom "file://$html" \
    >"$tmp/$page.dom" 2>"$tmp/$page.dom.err"
  timeout 120 chromium "${flags[@]}" --user-data-dir="$tmp/profile-png-$page" --window-size=1280,2000 \
    --screenshot="$tmp/$page.png" "file://$html" >/dev/null 2>"$tmp/$page.png.err"
  for id in provenance activation-ranges weight-error bits-map quality; do
    grep -q "<section id=\"$id\">" "$tmp/$page.dom" && ok || bad "$page: section $id not in the rendered DOM"
  done
  grep -q '<html[^>]*data-report="ok"' "$tmp/$page.dom" && ok ||
    bad "$page: the page's check did not pass: $(grep -o 'data-report="[^"]*"' "$tmp/$page.dom" || echo 'not run')"
  # Chromium logs the page's console (errors, CSP reports) as CONSOLE lines; the report writes none.
  if grep -h ':CONSOLE' "$tmp/$page.dom.err" "$tmp/$page.png.err"; then bad "$page: console messages (above)"; else ok; fi
  # A PNG: the 8-byte signature, and more than a blank page's few kilobytes.
  if [[ $(head -c 8 "$tmp/$page.png" 2>/dev/null | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a &&
        $(stat -c %s "$tmp/$page.png") -gt 20000 ]]; then ok; else bad "$page: no screenshot ($(tail -2 "$tmp/$page.png.err"))"; fi
done
if [[ -n $keep ]]; then mkdir -p "$keep" && cp "$tmp"/*.html "$tmp"/*.png "$tmp"/*.json "$keep"/ 2>/dev/null; fi

finish "report browser test"
