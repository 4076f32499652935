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
