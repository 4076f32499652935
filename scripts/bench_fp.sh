#!/usr/bin/env bash
# FP runner throughput and memory on the bundled models, as JSON lines (one object per model).
# Usage: scripts/bench_fp.sh [--prompt N --gen N ...]  (flags go to `ptq bench`; PTQ_BIN: an existing ptq binary)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -n ${PTQ_BIN:-} ]] || scripts/build.sh ptq >/dev/null
for m in data/models/stories260K data/models/sotu-llama-8m; do
  "${PTQ_BIN:-build/ptq}" bench "$m" "$@" --json | tr -d '\n ' ; echo
done
