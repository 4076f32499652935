# shellcheck shell=bash
# Sourced, not run: the npm packages the llama.cpp oracles need (tests/oracle/*.mjs), pinned, installed once into a
# directory outside git (default build/npm-oracle): node-llama-cpp@3.22.1 with its prebuilt CPU binary
# @node-llama-cpp/linux-x64@3.22.1 (llama.cpp itself, no compiler needed: --ignore-scripts skips its build step),
# and @huggingface/gguf@0.4.6 (an independent GGUF parser).
# Usage: source scripts/lib_npm_oracle.sh
#        npm_oracle_install NPM_DIR || exit $?   # 0: installed; 77 (and a "skip: ..." line on stdout): unavailable
#        npm_oracle_scripts NPM_DIR ROOT NAME...  # copies tests/oracle/NAME.mjs next to node_modules
#        npm_oracle_llama_quantize NPM_DIR LOG    # builds NPM_DIR/llama-quantize once; 0 built, 77 + "skip: ..." line
# Used by scripts/check_gguf_llama_cpp.sh, scripts/check_gguf_kquants.sh and scripts/bench_runtime.sh.

npm_oracle_install() {  # NPM_DIR
  local dir=$1
  mkdir -p "$dir" || return 1
  if [[ ! -d $dir/node_modules/@node-llama-cpp/linux-x64 || ! -d $dir/node_modules/@huggingface/gguf ]]; then
    if ! command -v npm >/dev/null; then echo "skip: npm not installed"; return 77; fi
    [[ -f $dir/package.json ]] || echo '{"name": "ptq-oracle", "private": true}' >"$dir/package.json"
    if ! (cd "$dir" && npm install --no-save --ignore-scripts --omit=optional --no-audit --no-fund \
        node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 @huggingface/gguf@0.4.6 >npm-install.log 2>&1); then
      echo "skip: npm install failed (see $dir/npm-install.log)"; return 77
    fi
  fi
}

# ESM imports resolve next to the importing script, not through NODE_PATH: the oracle scripts run from NPM_DIR.
npm_oracle_scripts() {  # NPM_DIR ROOT NAME...
  local dir=$1 root=$2 name
  shift 2
  for name in "$@"; do cp "$root/tests/oracle/$name.mjs" "$dir/" || return 1; done
}

# llama.cpp's own llama-quantize, compiled from the llama.cpp source node-llama-cpp ships (its git bundle: the exact
# version of its prebuilt libraries) and linked against those libraries, so it quantizes with the very
# libggml-base.so the runtime loads. Built once into NPM_DIR/llama-quantize; needs g++.
npm_oracle_llama_quantize() {  # NPM_DIR LOG
  local dir=$1 log=$2
  local bins=$dir/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64 quantize=$dir/llama-quantize
  local src=$dir/llama.cpp-src
  [[ -x $quantize ]] && return 0
  command -v g++ >/dev/null || { echo "skip: no g++ to build llama-quantize"; return 77; }
  [[ -d $src ]] || git clone -q "$dir/node_modules/node-llama-cpp/llama/gitRelease.bundle" "$src" 2>/dev/null ||
    { echo "skip: no llama.cpp source bundle in node-llama-cpp"; return 77; }
  local libs=(-l:libllama-common.so "-l:$(cd "$bins" && ls libllama.*so | head -1)"
              "-l:$(cd "$bins" && ls libggml.*so | head -1)" -l:libggml-base.so)
  g++ -std=c++17 -O1 -I"$src/include" -I"$src/common" -I"$src/ggml/include" "$src/tools/quantize/quantize.cpp" \
    "$src/tools/quantize/main.cpp" -o "$quantize" -L"$bins" "${libs[@]}" -Wl,-rpath,"$bins" >"$log" 2>&1 ||
    { echo "skip: building llama-quantize failed ($(tail -1 "$log"))"; return 77; }
}
