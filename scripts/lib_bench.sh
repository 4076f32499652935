# shellcheck shell=bash
# Shared by the benchmark scripts (sourced). Needs /usr/bin/time and python3 (pad_tokenizer: node).
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

# Pads a SentencePiece tokenizer.model with control pieces ("<unused_N>": encoding never produces them, ids of the
# first pieces unchanged) to VOCAB pieces: GGUF embeds one token per embedding row, and the repository has no
# 32000-piece tokenizer. Appended repeated field 1 entries of ModelProto are more pieces, in order.
pad_tokenizer() {  # IN OUT VOCAB
  node -e '
    const fs = require("fs");
    const [src, dst, vocab] = [process.argv[1], process.argv[2], Number(process.argv[3])];
    const varint = (n) => {
      const b = [];
      do { b.push((n & 0x7f) | (n >= 128 ? 0x80 : 0)); n = Math.floor(n / 128); } while (n);
      return Buffer.from(b);
    };
    const bytes = fs.readFileSync(src);
    let p = 0, pieces = 0;
    const rd = () => { let v = 0, m = 1, x; do { x = bytes[p++]; v += (x & 0x7f) * m; m *= 128; } while (x & 0x80); return v; };
    while (p < bytes.length) {  // count the pieces (field 1) of the top-level message
      const key = rd(), wire = key & 7;
      if (wire === 2) { const n = rd(); p += n; }
      else if (wire === 0) rd();
      else if (wire === 5 || wire === 1) p += wire === 5 ? 4 : 8;
      else throw new Error(`${src}: unexpected protobuf wire type ${wire}`);
      if (key >>> 3 === 1) ++pieces;
    }
    if (pieces > vocab) throw new Error(`${src} has ${pieces} pieces, more than ${vocab}`);
    const out = [bytes];
    const score = Buffer.alloc(4);
    score.writeFloatLE(-1e9);
    for (let i = pieces; i < vocab; ++i) {  // SentencePiece {1: piece, 2: score, 3: type CONTROL}
      const text = Buffer.from(`<unused_${i}>`);
      const body = Buffer.concat([Buffer.from([0x0a]), varint(text.length), text, Buffer.from([0x15]), score,
                                  Buffer.from([0x18, 3])]);
      out.push(Buffer.from([0x0a]), varint(body.length), body);
    }
    fs.writeFileSync(dst, Buffer.concat(out));' "$1" "$2" "$3"
}
