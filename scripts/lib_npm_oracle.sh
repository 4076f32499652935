# shellcheck shell=bash
# Sourced, not run: the npm packages the llama.cpp oracles need (tests/oracle/*.mjs), pinned, installed once into a
# directory outside git (default build/npm-oracle): node-llama-cpp@3.22.1 with its prebuilt CPU binary
# @node-llama-cpp/linux-x64@3.22.1 (llama.cpp itself, no compiler needed: --ignore-scripts skips its build step),
# and @huggingface/gguf@0.4.6 (an independent GGUF parser).
# Usage: source scripts/lib_npm_oracle.sh
#        npm_oracle_install NPM_DIR || exit $?   # 0: installed; 77 (and a "skip: ..." line on stdout): unavailable
#        npm_oracle_scripts NPM_DIR ROOT NAME...  # copies tests/oracle/NAME.mjs next to node_modules
# Used by scripts/check_gguf_llama_cpp.sh and scripts/bench_runtime.sh.

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
