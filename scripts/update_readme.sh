#!/usr/bin/env bash
# Regenerates the measured tables in README.md (between "<!-- BEGIN name -->" and "<!-- END name -->")
# by running ptq on the bundled models and data. Nothing in those sections is typed by hand.
# Needs python3 (formatting only). Takes ~20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh ptq >/dev/null
ptq="build/ptq --quiet"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

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

{
  echo '```'
  echo "\$ ptq eval tasks data/models/stories260K --tasks data/tasks/tinystories-{continuation,cloze}.jsonl data/tasks/moby-{continuation,cloze}.jsonl"
  $ptq eval tasks data/models/stories260K --tasks data/tasks/tinystories-{continuation,cloze}.jsonl data/tasks/moby-{continuation,cloze}.jsonl
  echo
  echo "\$ ptq eval tasks data/models/sotu-llama-8m --tasks data/tasks/sotu-{continuation,cloze}.jsonl data/tasks/moby-{continuation,cloze}.jsonl"
  $ptq eval tasks data/models/sotu-llama-8m --tasks data/tasks/sotu-{continuation,cloze}.jsonl data/tasks/moby-{continuation,cloze}.jsonl
  echo '```'
} >"$tmp/fp-tasks"

scripts/quant_table.sh >"$tmp/quant-table"

{
  echo '```'
  echo "\$ scripts/bench_fp.sh   # ptq bench MODEL --json (prompt 128, gen 128, best of 3), $(nproc) threads, $(lscpu | sed -n 's/^Model name: *//p')"
  scripts/bench_fp.sh
  echo '```'
} >"$tmp/fp-bench"

python3 - "$tmp" <<'PY'
import re, sys, pathlib
tmp = pathlib.Path(sys.argv[1])
readme = pathlib.Path("README.md")
text = readme.read_text()
for section in ("fp-ppl", "fp-tasks", "quant-table", "fp-bench"):
    body = (tmp / section).read_text()
    pattern = re.compile(r"(<!-- BEGIN %s -->\n).*?(<!-- END %s -->)" % (section, section), re.S)
    if not pattern.search(text):
        sys.exit("README.md has no <!-- BEGIN %s --> section" % section)
    text = pattern.sub(lambda m: m.group(1) + body + m.group(2), text)
readme.write_text(text)
PY
echo "README.md updated"
