# shellcheck shell=bash
# Sourced, not run: the npm packages the llama.cpp oracles need (tests/oracle/*.mjs), pinned, installed once into a
# directory outside git (default build/npm-oracle): node-llama-cpp@3.22.1 with its prebuilt CPU binary
# @node-llama-cpp/linux-x64@3.22.1 (llama.cpp itself, no compiler needed: --ignore-scripts skips its build step),
# and @huggingface/gguf@0.4.6 (an independent GGUF parser).
# Usage: source scripts/lib_npm_oracle.sh
#        npm_oracle_install NPM_DIR || exit $?   # 0: installed; 77 (and a "skip: ..." line on stdout): unavailable
#        npm_oracle_scripts NPM_DIR ROOT NAME...  # copies tests/oracle/NAME.mjs next to node_modules
#        npm_oracle_llama_quantize NPM_DIR LOG    # builds NPM_DIR/llama-quantize once; 0 built, 77 + "skip: ..." line
#        npm_oracle_llama_imatrix NPM_DIR LOG     # the same for NPM_DIR/llama-imatrix
#        npm_oracle_quantize_setup NPM_DIR ROOT NAME...  # all three for llama-quantize + oracle scripts; 0 or 77
# Used by scripts/check_gguf_llama_cpp.sh, scripts/check_gguf_kquants.sh, scripts/check_imatrix_llama_cpp.sh,
# scripts/gguf_table.sh, scripts/mixed_table.sh and
# scripts/bench_runtime.sh.

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

# llama.cpp's own tools, compiled from the llama.cpp source node-llama-cpp ships (its git bundle: the exact version of
# its prebuilt libraries) and linked against those libraries (libllama-common.so holds common/: arg parsing, the
# imatrix loader), so they run the very libggml-base.so the runtime loads. Each is built once into NPM_DIR/NAME;
# needs g++.
npm_oracle_build_tool() {  # NPM_DIR LOG NAME SOURCE... (relative to the llama.cpp source)
  local dir log=$2 name=$3
  dir=$(realpath -m "$1")  # the rpath below must not depend on the working directory
  shift 3
  local bins=$dir/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64 exe=$dir/$name
  local src=$dir/llama.cpp-src s
  [[ -x $exe ]] && return 0
  command -v g++ >/dev/null || { echo "skip: no g++ to build $name"; return 77; }
  [[ -d $src ]] || git clone -q "$dir/node_modules/node-llama-cpp/llama/gitRelease.bundle" "$src" 2>/dev/null ||
    { echo "skip: no llama.cpp source bundle in node-llama-cpp"; return 77; }
  local libs=(-l:libllama-common.so "-l:$(cd "$bins" && ls libllama.*so | head -1)"
              "-l:$(cd "$bins" && ls libggml.*so | head -1)" -l:libggml-base.so)
  local sources=()
  for s in "$@"; do sources+=("$src/$s"); done
  g++ -std=c++17 -O1 -I"$src/include" -I"$src/common" -I"$src/ggml/include" "${sources[@]}" \
    -o "$exe" -L"$bins" "${libs[@]}" -Wl,-rpath,"$bins" -pthread >"$log" 2>&1 ||
    { echo "skip: building $name failed ($(tail -1 "$log"))"; return 77; }
}

npm_oracle_llama_quantize() {  # NPM_DIR LOG: NPM_DIR/llama-quantize; 0 built, 77 + "skip: ..." line
  npm_oracle_build_tool "$1" "$2" llama-quantize tools/quantize/quantize.cpp tools/quantize/main.cpp
}

npm_oracle_llama_imatrix() {  # NPM_DIR LOG: NPM_DIR/llama-imatrix; 0 built, 77 + "skip: ..." line
  npm_oracle_build_tool "$1" "$2" llama-imatrix tools/imatrix/imatrix.cpp
}

# npm_oracle_quantize_setup NPM_DIR ROOT NAME...: the packages, NPM_DIR/llama-quantize (its build log beside it) and
# tests/oracle/NAME.mjs copied next to node_modules; 0 ready, 77 + "skip: ..." line when unavailable.
npm_oracle_quantize_setup() {
  local dir=$1 root=$2
  shift 2
  npm_oracle_install "$dir" || return $?
  npm_oracle_llama_quantize "$dir" "$dir/llama-quantize-build.log" || return $?
  npm_oracle_scripts "$dir" "$root" "$@"
}
