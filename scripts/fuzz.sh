#!/usr/bin/env bash
# Fuzzes every file parser with libFuzzer (tests/fuzz): builds the targets with Debian's clang (-DPTQ_FUZZ=ON:
# AddressSanitizer + UBSan, every report fatal), makes the seed corpora from the bundled files
# (tests/fuzz/make_seeds.py), runs each target for SECONDS, prints one JSON line per target
#   {"target", "seconds", "executions", "crashes", "corpus"}
# and exits 1 when any target crashed, leaked, hung past -timeout=10 s or grew past -rss_limit_mb=2048; the input
# that did it is in BUILD/fuzz/crashes/<target>/ (replay: BUILD/tests/fuzz/ptq_fuzz_<target> FILE).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   long runs, -O1 in build-fuzz (default 60 s, every target)
#   scripts/fuzz.sh --record [SECONDS] [TARGET...]     the same, and when every target has run, also writes the run
#                                                      to docs/results/fuzz.jsonl (replaced atomically; committed):
#                                                      one line {"run": command, "date", "commit", "dirty", "machine",
#                                                      "nice", "load_start", "load_end", "compiler", "build",
#                                                      "libfuzzer", "exit", "wall_s"}, then the targets' JSON lines.
#                                                      scripts/update_readme.sh fuzz renders it into README.md.
#   scripts/fuzz.sh --smoke                            CI (scripts/test.sh): 6 s per LibTorch-free target, -O0 in
#                                                      build-fuzz-smoke; 3 min from scratch on 2 cores, most of it
#                                                      compiling (measured 177 s without ccache)
# PTQ_FUZZ_BUILD overrides the build directory; PTQ_FUZZ_RECORD the file --record writes.
#
# Targets: safetensors safetensors_index gguf gguf_model config sentencepiece tokenizer_json tokenize_text task
# (LibTorch-free: ptq_base plus the parsers' own .cpp files) and recipe stats (linked with the whole ptq_lib built
# by clang with the sanitizers: ~17 min of compiling on 2 cores, so the smoke leaves them out).
# The corpus each run finds is kept in BUILD/fuzz/corpus/<target>/ and grows from run to run; the hand-made seeds
# and the reproducers of fixed crashes (tests/fuzz/corpus/<target>/) are replayed by every run.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=(safetensors safetensors_index gguf gguf_model config sentencepiece tokenizer_json tokenize_text task)
torch=(recipe stats)
seconds=60
targets=()
build=${PTQ_FUZZ_BUILD:-build-fuzz}
command="scripts/fuzz.sh${*:+ $*}"
record=""
if [[ ${1:-} == --record ]]; then
  record=${PTQ_FUZZ_RECORD:-docs/results/fuzz.jsonl}
  shift
fi
# -O1: libFuzzer's recommendation; line tables are enough for symbolized reports and compile ~20% faster than -g.
opt="-O1 -gline-tables-only"
if [[ ${1:-} == --smoke ]]; then
  # The smoke's time is mostly compiling: -O0 halves it (the seconds of fuzzing run slower, which matters less).
  seconds=6
  targets=("${fast[@]}")
  build=${PTQ_FUZZ_BUILD:-build-fuzz-smoke}
  opt="-O0 -gline-tables-only"
  shift
elif [[ ${1:-} =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
(($#)) && targets=("$@")
((${#targets[@]})) || targets=("${fast[@]}" "${torch[@]}")

scripts/setup.sh
if [[ ! -f $build/CMakeCache.txt ]]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$opt" -DPTQ_FUZZ=ON -DPTQ_BUILD_TESTS=OFF >&2
fi
# Build output to stderr: stdout carries only the JSON lines.
cmake --build "$build" -j "$(nproc)" --target "${targets[@]/#/ptq_fuzz_}" >&2

work=$build/fuzz
rm -rf "$work/seeds" "$work/dict"
python3 tests/fuzz/make_seeds.py . "$work"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ptq-fuzz.XXXXXX")
tmp=""
trap 'rm -rf "$scratch" ${tmp:+"$tmp"}' EXIT

if [[ -n $record ]]; then
  mkdir -p "$(dirname "$record")"
  started=$(date -u +%Y-%m-%dT%H:%M:%SZ) start_s=$SECONDS load_start=$(cut -d' ' -f1 /proc/loadavg)
  lines=$scratch/lines.jsonl
  : >"$lines"
fi

failed=0
for t in "${targets[@]}"; do
  corpus=$work/corpus/$t crashes=$work/crashes/$t
  mkdir -p "$corpus" "$crashes"
  dirs=("$corpus")
  for d in "$work/seeds/$t" "tests/fuzz/corpus/$t"; do [[ -d $d ]] && dirs+=("$d"); done
  opts=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$crashes/")
  [[ -f $work/dict/$t.dict ]] && opts+=(-dict="$work/dict/$t.dict")
  before=$(find "$crashes" -type f | wc -l)
  log=$work/$t.log
  rc=0
  # The outer timeout only guards against a target that stops answering libFuzzer's own limits.
  PTQ_FUZZ_SCRATCH=$scratch timeout $((seconds + 120)) "$build/tests/fuzz/ptq_fuzz_$t" "${opts[@]}" "${dirs[@]}" \
    >"$log" 2>&1 || rc=$?
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  crashed=$(($(find "$crashes" -type f | wc -l) - before))
  ((rc == 0 || crashed > 0)) || crashed=1  # died without writing an input (e.g. the outer timeout)
  line=$(printf '{"target": "%s", "seconds": %d, "executions": %d, "crashes": %d, "corpus": %d}' "$t" "$seconds" \
    "${executions:-0}" "$crashed" "$(find "$corpus" -type f | wc -l)")
  echo "$line"
  [[ -z $record ]] || echo "$line" >>"$lines"
  if ((crashed > 0)); then
    failed=1
    echo "fuzz: $t failed (exit $rc); log $log; inputs in $crashes/:" >&2
    grep -E -m 5 'ERROR|FINDING|runtime error|SUMMARY|Test unit written' "$log" >&2 || tail -n 20 "$log" >&2
  fi
done

if [[ -n $record ]]; then
  # Written only once every target has run, under a temporary name in the same directory, then renamed.
  compiler=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")
  commit=$(git rev-parse --short HEAD 2>/dev/null || true)
  dirty=false
  # Uncommitted changes to anything but the generated results (the record itself, README.md).
  git diff --quiet HEAD -- . ':(exclude)docs/results' ':(exclude)README.md' 2>/dev/null || dirty=true
  [[ -n $commit ]] || dirty=null
  tmp=$(mktemp "$(dirname "$record")/.$(basename "$record").XXXXXX")
  python3 - "$lines" "$command" "$started" "$commit" "$dirty" "$(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')" \
    "$(nice)" "$load_start" "$(cut -d' ' -f1 /proc/loadavg)" "$("${compiler:-clang++}" --version | head -1)" \
    "$(sed -n 's/^CMAKE_CXX_FLAGS_RELWITHDEBINFO:[A-Z]*=//p' "$build/CMakeCache.txt") -fsanitize=fuzzer,address,undefined" \
    "-max_total_time=$seconds -rss_limit_mb=2048 -timeout=10" "$failed" "$((SECONDS - start_s))" >"$tmp" <<'PY'
import json, sys
(lines, command, date, commit, dirty, machine, nice, load_start, load_end, compiler, build, libfuzzer, failed,
 wall) = sys.argv[1:]
run = {"run": command, "date": date, "commit": commit or None, "dirty": json.loads(dirty), "machine": machine,
       "nice": int(nice), "load_start": float(load_start), "load_end": float(load_end), "compiler": compiler,
       "build": build, "libfuzzer": libfuzzer, "exit": int(failed), "wall_s": int(wall)}
print(json.dumps(run))
sys.stdout.write(open(lines).read())
PY
  chmod 644 "$tmp"
  mv -f "$tmp" "$record"
  echo "fuzz: run recorded in $record (scripts/update_readme.sh fuzz puts it in README.md)" >&2
fi
exit "$failed"
