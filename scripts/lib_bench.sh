# shellcheck shell=bash
# Shared by the benchmark scripts (sourced). Needs /usr/bin/time and python3.
# ptq_binary: $PTQ as an absolute path, or build/ptq (built by scripts/build.sh) when PTQ is unset; run from the
# repository root.
ptq_binary() {
  if [[ -z "${PTQ:-}" ]]; then
    scripts/build.sh ptq >/dev/null || { echo "building ptq failed (scripts/build.sh ptq); set PTQ to a binary" >&2; return 1; }
    PTQ=build/ptq
  fi
  realpath "$PTQ"
}

# timed LOG STDOUT CMD...: runs CMD under /usr/bin/time -v, its stdout into STDOUT; prints "seconds peak_rss_mb".
timed() {
  local log=$1 stdout=$2; shift 2
  /usr/bin/time -v -o "$log" "$@" >"$stdout"
  python3 - "$log" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1).split(":")
secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
print(f"{secs:.1f} {rss_kb / 1024:.1f}")
PY
}

# bench_texts MODEL DIR ROOT: the calibration and held-out texts of a bundled model for the quality tables
# (scripts/gguf_table.sh, scripts/mixed_table.sh). Sets calib and test (files), seqlen (the model's context) and
# calib_name / test_name (Markdown, for the tables' captions); stories260K's texts are cut into DIR.
#   sotu-llama-8m: data/sotu-train.txt / data/sotu-test.txt, 256 tokens.
#   stories260K (context 512): data/tinystories-valid.txt cut at a blank line into its first 1766 paragraphs
#     (calibration) and the remaining 1767 (held out).
# shellcheck disable=SC2016,SC2034  # Markdown backquotes; the variables are the caller's
bench_texts() {
  local model=$1 dir=$2 root=$3
  case $model in
    sotu-llama-8m)
      calib=$root/data/sotu-train.txt; test=$root/data/sotu-test.txt; seqlen=256
      calib_name='`data/sotu-train.txt`'; test_name='`data/sotu-test.txt`' ;;
    stories260K)
      awk -v RS= -v ORS='\n\n' 'NR <= 1766' "$root/data/tinystories-valid.txt" >"$dir/calib.txt"
      awk -v RS= -v ORS='\n\n' 'NR > 1766' "$root/data/tinystories-valid.txt" >"$dir/test.txt"
      calib=$dir/calib.txt; test=$dir/test.txt; seqlen=512
      calib_name='the first 1766 paragraphs of `data/tinystories-valid.txt`'
      test_name='its remaining 1767 paragraphs' ;;
    *) echo "bench_texts: no calibration / held-out texts for $model" >&2; return 1 ;;
  esac
}

# last_line LOG: a log's last line, quotes and backslashes removed, cut to 160 characters (for a table's status cell).
last_line() { tail -n 1 "$1" | tr -d '"\\' | cut -c1-160; }
