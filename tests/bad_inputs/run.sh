#!/usr/bin/env bash
# The catalogue of malformed inputs and faults. Each case builds its input under a fresh directory IN (copies of the
# bundled files, damaged one way), runs one ptq command whose outputs go under OUT, and asserts what a user must
# get: a non-zero exit below 128 (no crash), exactly one line on stderr containing the expected words, nothing
# created under OUT, and IN byte-identical afterwards (inputs are never modified).
# Usage: run.sh PTQ_BINARY REPO_ROOT [NAME_FILTER]
set -u
ptq=$(realpath "$1")
root=$(realpath "$2")
filter=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PTQ_CACHE_DIR=$work/cache
tiny=$root/data/models/stories260K
text=$root/data/tinystories-valid.txt
pass=0
fail=0
n=0
declare -a failed=()

snapshot() { (cd "$1" && find . -print0 | sort -z | xargs -0 -I{} sh -c 'if [ -f "{}" ]; then sha256sum "{}"; else echo "dir {}"; fi'); }

# case_ NAME EXPECTED -- SETUP_SHELL -- CMD...   (both run in IN; outputs go to ../out, which is OUT)
case_() {
  local name=$1 want=$2
  shift 2
  [[ $1 == -- ]] || { echo "case $name: missing --"; exit 2; }
  shift
  local setup=$1
  shift
  [[ $1 == -- ]] || { echo "case $name: missing -- before the command"; exit 2; }
  shift
  [[ -n $filter && $name != *$filter* ]] && return
  n=$((n + 1))
  local dir=$work/case$n
  export IN=$dir/in OUT=$dir/out
  mkdir -p "$IN" "$OUT"
  (cd "$IN" && eval "$setup") || { failed+=("$name: setup failed"); fail=$((fail + 1)); return; }
  local before
  before=$(snapshot "$IN")
  (cd "$IN" && "$@") >"$dir/stdout" 2>"$dir/stderr"
  local rc=$?
  local why=""
  if [[ $rc -eq 0 ]]; then why="exit 0"
  elif [[ $rc -ge 128 ]]; then why="crashed or was killed (rc $rc)"
  elif ! grep -qF -- "$want" "$dir/stderr"; then why="stderr lacks '$want'"
  elif [[ $(grep -c . "$dir/stderr") -ne 1 ]]; then why="error is not one line"
  elif [[ -n $(ls -A "$OUT") ]]; then why="wrote $(ls -A "$OUT" | head -3 | tr '\n' ' ')"
  elif [[ $(snapshot "$IN") != "$before" ]]; then why="modified its input"
  fi
  if [[ -z $why ]]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    failed+=("$name: $why; stderr: $(head -c 400 "$dir/stderr")")
  fi
  rm -rf "$dir"
}

model_copy='cp -r "'$tiny'" m'
cfg_edit() { echo "$model_copy && python3 - <<'PY'
import json; p='m/config.json'; c=json.load(open(p)); $1; json.dump(c, open(p,'w'))
PY"; }

# ---- MODEL arguments and config.json ----------------------------------------------------------------------------
case_ "missing model directory" "no config.json" -- ':' -- $ptq inspect nope
case_ "model is a text file" "not a GGUF file" -- 'echo hello > m.txt' -- $ptq inspect m.txt
case_ "GGUF with a bad magic" "not a GGUF file" -- 'printf "GGUX0000000000000000" > m.gguf' -- $ptq inspect m.gguf
case_ "config.json not JSON" "not valid JSON" -- "$model_copy && echo '{oops' > m/config.json" -- $ptq inspect m
case_ "config.json a JSON array" "expected a JSON object" -- "$model_copy && echo '[]' > m/config.json" -- $ptq inspect m
case_ "unsupported model_type" "is not supported" -- "$(cfg_edit 'c["model_type"]="gpt_neox"')" -- $ptq inspect m
case_ "hidden_size zero" "hidden_size" -- "$(cfg_edit 'c["hidden_size"]=0')" -- $ptq inspect m
case_ "hidden_size a string" "hidden_size" -- "$(cfg_edit 'c["hidden_size"]="64"')" -- $ptq inspect m
case_ "heads not a multiple of kv heads" "num_key_value_heads" -- "$(cfg_edit 'c["num_key_value_heads"]=3')" -- $ptq inspect m
case_ "negative rms_norm_eps" "epsilon" -- "$(cfg_edit 'c["rms_norm_eps"]=-1e-5')" -- $ptq eval ppl m --data "$text" --max-windows 1
case_ "rope_theta zero" "rope_theta" -- "$(cfg_edit 'c["rope_theta"]=0')" -- $ptq eval ppl m --data "$text" --max-windows 1
case_ "rope_scaling set" "rope_scaling" -- "$(cfg_edit 'c["rope_scaling"]={"type":"linear","factor":2}')" -- $ptq inspect m
case_ "config with fewer layers than the file" "holds 5 layers" -- "$(cfg_edit 'c["num_hidden_layers"]=3')" -- \
  $ptq eval ppl m --data "$text" --max-windows 1
case_ "config with more layers than the file" "model.layers.5" -- "$(cfg_edit 'c["num_hidden_layers"]=6')" -- \
  $ptq eval ppl m --data "$text" --max-windows 1
case_ "vocab_size disagrees with the embedding" "expected" -- "$(cfg_edit 'c["vocab_size"]=500')" -- \
  $ptq eval ppl m --data "$text" --max-windows 1
case_ "hidden_act gelu on llama" "hidden_act" -- "$(cfg_edit 'c["hidden_act"]="gelu"')" -- $ptq inspect m

# ---- safetensors ------------------------------------------------------------------------------------------------
st='m/model.safetensors'
case_ "safetensors truncated" "model.safetensors" -- "$model_copy && head -c 100000 $st > t && mv t $st" -- \
  $ptq eval ppl m --data "$text" --max-windows 1
case_ "safetensors header length past the end" "model.safetensors" -- \
  "$model_copy && printf '\\xff\\xff\\xff\\xff\\x00\\x00\\x00\\x00{}' > $st" -- $ptq inspect m
case_ "safetensors header not JSON" "model.safetensors" -- \
  "$model_copy && printf '\\x04\\x00\\x00\\x00\\x00\\x00\\x00\\x00{{{{' > $st" -- $ptq inspect m
case_ "safetensors empty file" "model.safetensors" -- "$model_copy && : > $st" -- $ptq inspect m
case_ "no weights file" "safetensors" -- "$model_copy && rm $st" -- $ptq inspect m
case_ "NaN in a weight: eval refuses the logits" "not finite" -- \
  "$model_copy && python3 -c \"
import json,struct
p='$st'; b=bytearray(open(p,'rb').read()); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n])
o=h['model.layers.0.self_attn.q_proj.weight']['data_offsets'][0]
b[8+n+o:8+n+o+4]=struct.pack('<f',float('nan')); open(p,'wb').write(b)\"" -- \
  $ptq eval ppl m --data "$text" --seqlen 128 --max-windows 1
case_ "NaN in a norm: quantize refuses to copy it" "NaN or Inf" -- \
  "$model_copy && python3 -c \"
import json,struct
p='$st'; b=bytearray(open(p,'rb').read()); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n])
o=h['model.norm.weight']['data_offsets'][0]
b[8+n+o:8+n+o+4]=struct.pack('<f',float('inf')); open(p,'wb').write(b)\"" -- \
  $ptq quantize m --recipe w4a16-rtn --group-size 32 -o "../out/q"

# ---- tokenizers -------------------------------------------------------------------------------------------------
case_ "no tokenizer" "tokenizer" -- "$model_copy && rm m/tokenizer.model" -- $ptq tokenize m --text hi
case_ "tokenizer.model garbage" "tokenizer.model" -- "$model_copy && head -c 3000 /dev/urandom > m/tokenizer.model" -- \
  $ptq tokenize m --text hi
case_ "tokenizer.json not JSON" "tokenizer.json" -- "$model_copy && rm m/tokenizer.model && echo '{x' > m/tokenizer.json" -- \
  $ptq tokenize m --text hi
case_ "decode an id outside the vocabulary" "outside the tokenizer's vocabulary" -- ':' -- $ptq tokenize "$tiny" --decode --text "1 99999"
case_ "decode a non-number" "--text" -- ':' -- $ptq tokenize "$tiny" --decode --text "1 x 3"
case_ "tokenizer of another model" "m/tokenizer.model has 8000 tokens but m/config.json says vocab_size 512" -- \
  "$model_copy && cp '$root/data/models/sotu-llama-8m/tokenizer.model' m/" -- $ptq tokenize m --text hi

# ---- evaluation data and tasks ----------------------------------------------------------------------------------
case_ "eval data missing" "--data" -- ':' -- $ptq eval ppl "$tiny" --data none.txt
case_ "eval data is a directory" "directory" -- 'mkdir d' -- $ptq eval ppl "$tiny" --data d
case_ "eval data binary" "not UTF-8 text" -- 'head -c 5000 /dev/urandom > b.txt' -- $ptq eval ppl "$tiny" --data b.txt
case_ "eval data empty" "is empty" -- ': > e.txt' -- $ptq eval ppl "$tiny" --data e.txt
case_ "eval data shorter than a window" "fewer than one window" -- 'echo "Once upon a time." > s.txt' -- \
  $ptq eval ppl "$tiny" --data s.txt --seqlen 256
case_ "seqlen past the context" "exceeds the model's context length" -- ':' -- $ptq eval ppl "$tiny" --data "$text" --seqlen 100000
case_ "negative seqlen" "--seqlen" -- ':' -- $ptq eval ppl "$tiny" --data "$text" --seqlen -3
case_ "task file not JSON" "not valid JSON" -- 'echo "{bad" > t.jsonl' -- $ptq eval tasks "$tiny" --tasks t.jsonl
case_ "task file empty" "no items" -- ': > t.jsonl' -- $ptq eval tasks "$tiny" --tasks t.jsonl
case_ "task item with one choice" "at least two" -- \
  'echo "{\"context\": \"a\", \"choices\": [\" b\"], \"label\": 0}" > t.jsonl' -- $ptq eval tasks "$tiny" --tasks t.jsonl
case_ "task label out of range" "out of range" -- \
  'echo "{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"label\": 5}" > t.jsonl' -- $ptq eval tasks "$tiny" --tasks t.jsonl
case_ "task format unknown" "--format: mmlu" -- ':' -- $ptq eval tasks "$tiny" --tasks "$root/data/tasks/tinystories-cloze.jsonl" --format mmlu
case_ "task line an array" "expected a JSON object" -- 'echo "[1,2]" > t.jsonl' -- $ptq eval tasks "$tiny" --tasks t.jsonl

# ---- recipes and quantize flags ---------------------------------------------------------------------------------
case_ "recipe missing" "neither a file nor a bundled recipe" -- ':' -- $ptq quantize "$tiny" --recipe nope.yaml -o "../out/q"
case_ "recipe not YAML" "not valid YAML" -- 'printf "a: [\n" > r.yaml' -- $ptq quantize "$tiny" --recipe r.yaml -o "../out/q"
case_ "recipe unknown key" "unknown key" -- 'printf "weights:\n  bitz: 4\n" > r.yaml' -- $ptq quantize "$tiny" --recipe r.yaml -o "../out/q"
case_ "recipe duplicate key" "appears twice" -- 'printf "weights:\n  bits: 4\n  bits: 8\n" > r.yaml' -- \
  $ptq quantize "$tiny" --recipe r.yaml -o "../out/q"
case_ "recipe bad regex" "regular expression" -- 'printf "ignore: [\"(\"]\n" > r.yaml' -- $ptq quantize "$tiny" --recipe r.yaml -o "../out/q"
case_ "recipe a directory" "is a directory" -- 'mkdir r' -- $ptq quantize "$tiny" --recipe r -o "../out/q"
case_ "9-bit weights" "9 weight bits; expected 2 to 8" -- ':' -- $ptq quantize "$tiny" --recipe w4a16-rtn --bits 9 -o "../out/q"
case_ "grid name malformed" "is not a weight grid" -- ':' -- $ptq quantize "$tiny" --recipe w4a16-rtn --grid w4g0 -o "../out/q"
case_ "group size zero" "group size 0" -- ':' -- $ptq quantize "$tiny" --recipe w4a16-rtn --group-size 0 -o "../out/q"
case_ "recipe grid name malformed" "weights.format" -- 'printf "weights:\n  format: q4_k\n" > r.yaml' -- \
  $ptq quantize "$tiny" --recipe r.yaml -o "../out/q"
case_ "group size fits no module" "use --group-size 64" -- ':' -- $ptq quantize "$tiny" --recipe w4a16-rtn -o "../out/q"
case_ "nsamples zero" "--nsamples" -- ':' -- $ptq quantize "$tiny" --recipe w4a16-gptq --group-size 32 --nsamples 0 -o "../out/q"
case_ "nsamples beyond memory (quantize)" "lower --nsamples to at most" -- ':' -- \
  $ptq quantize "$tiny" --recipe w4a16-gptq --group-size 32 --nsamples 2000000000 --seqlen 256 -o "../out/q"
case_ "nsamples beyond memory (calibrate)" "lower --nsamples to at most" -- ':' -- \
  $ptq calibrate "$tiny" --nsamples 2000000000 --seqlen 256 -o "../out/s.safetensors"
case_ "act method without activations" "needs activation quantization" -- ':' -- \
  $ptq quantize "$tiny" --recipe w4a16-rtn --act-method smoothquant -o "../out/q"
case_ "unknown weight method" "gptq" -- ':' -- $ptq quantize "$tiny" --recipe w4a16-rtn --method awq -o "../out/q"
case_ "calibration text binary" "not UTF-8 text" -- 'head -c 5000 /dev/urandom > b.txt' -- \
  $ptq quantize "$tiny" --recipe w4a16-gptq --group-size 32 --data b.txt -o "../out/q"
case_ "quantize a quantized checkpoint" "already quantized" -- \
  "$ptq -q quantize $tiny --recipe w4a16-rtn --group-size 32 -o q >/dev/null 2>&1" -- $ptq quantize q -o "../out/q2"
case_ "act-order checkpoint without g_idx" "no \"model.layers.0.self_attn.q_proj.g_idx\"" -- \
  "$ptq -q quantize $root/data/models/sotu-llama-8m --recipe w4a16-gptq --act-order --nsamples 2 --seqlen 32 -o q >/dev/null 2>&1 && python3 -c \"
import json,struct
p='q/model.safetensors'; b=open(p,'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n])
h['model.layers.0.self_attn.q_proj.g_idy']=h.pop('model.layers.0.self_attn.q_proj.g_idx')  # same length: offsets hold
hb=json.dumps(h,separators=(',',':')).encode(); hb+=b' '*(n-len(hb)); open(p,'wb').write(b[:8]+hb+b[8+n:])\"" -- \
  $ptq eval ppl q --data "$text" --seqlen 128 --max-windows 1

# ---- calibration stats ------------------------------------------------------------------------------------------
case_ "stats file garbage" "s.safetensors" -- 'head -c 2000 /dev/urandom > s.safetensors' -- \
  $ptq quantize "$tiny" --recipe w4a16-gptq --group-size 32 --stats s.safetensors -o "../out/q"
case_ "stats of another model" "another model" -- \
  "$ptq -q calibrate $root/data/models/sotu-llama-8m -o s.safetensors --nsamples 2 --seqlen 32 --hessian >/dev/null 2>&1" -- \
  $ptq quantize "$tiny" --recipe w4a16-gptq --group-size 32 --stats s.safetensors -o "../out/q"
case_ "imatrix export of a model, not stats" "ptq calibrate MODEL -o STATS" -- ':' -- \
  $ptq export "$tiny" --format imatrix -o "../out/i.gguf"

# ---- exports and outputs ----------------------------------------------------------------------------------------
case_ "export format unknown" "imatrix" -- ':' -- $ptq export "$tiny" --format onnx -o "../out/x"
case_ "gptq export of an FP model" "quantize" -- ':' -- $ptq export "$tiny" --format gptq -o "../out/g"
case_ "gguf export of a g128 checkpoint" "--group-size 32" -- \
  "$ptq -q quantize $root/data/models/sotu-llama-8m --recipe w4a16-rtn -o q >/dev/null 2>&1" -- \
  $ptq export q --format gguf -o "../out/q.gguf"
case_ "output is the input" "is the input" -- "$model_copy" -- $ptq quantize m --recipe w4a16-rtn --group-size 32 -o m --force
case_ "output contains the input" "contains the input" -- "$model_copy" -- $ptq quantize m --recipe w4a16-rtn --group-size 32 -o . --force
case_ "output inside the input" "lies inside the input" -- "$model_copy" -- $ptq export m --format gguf -o m/model.safetensors --force
case_ "--force onto a foreign directory" "was not written by ptq" -- "$model_copy && mkdir -p theirs && echo x > theirs/f" -- \
  $ptq quantize m --recipe w4a16-rtn --group-size 32 -o theirs --force
case_ "existing output without --force" "--force" -- "$model_copy && mkdir -p o && echo x > o/f" -- \
  $ptq quantize m --recipe w4a16-rtn --group-size 32 -o o
case_ "stats output is a directory" "is a directory" -- 'mkdir s' -- $ptq calibrate "$tiny" -o s --nsamples 2 --seqlen 32

# ---- flags ------------------------------------------------------------------------------------------------------
case_ "unknown flag" "--bogus" -- ':' -- $ptq inspect "$tiny" --bogus
case_ "no subcommand" "subcommand" -- ':' -- $ptq
case_ "negative threads" "--threads" -- ':' -- $ptq --threads -2 inspect "$tiny"
case_ "kv cache type unknown" "--kv-cache" -- ':' -- $ptq generate "$tiny" --prompt hi --kv-cache f8

echo "bad inputs: $pass passed, $fail failed ($n cases)"
for f in "${failed[@]}"; do echo "FAIL: $f"; done
[[ $fail -eq 0 ]]
