#!/usr/bin/env bash
# Installs ptq's build and test dependencies from Debian packages (bookworm). Idempotent: does nothing
# when everything is already installed; runs `apt-get update` at most once.
set -euo pipefail

packages=(
  g++ cmake ninja-build ccache pkg-config
  libtorch-dev            # LibTorch 1.13 (CPU): tensors, BLAS-backed matmul, Cholesky
  libopenblas0-openmp     # mandatory: without it LibTorch's fp32 matmul uses reference BLAS (~15x slower)
  libcli11-dev libfmt-dev nlohmann-json3-dev libyaml-cpp-dev
  catch2                  # Catch2 v2 (tests)
  sentencepiece           # spm_encode: the reference the tokenizer tests compare against
  libpcre2-dev libicu-dev  # tokenizer.json: split regexes with Unicode properties, NFC normalization
  python3                 # the CLI test and scripts/demo.sh read --json output with it
  chromium                # headless: renders `ptq report` pages in the browser test (tests/report)
  clang                   # clang 14: the libFuzzer build of the parsers (tests/fuzz, scripts/fuzz.sh)
  libclang-rt-14-dev      # clang's libFuzzer, ASan and UBSan runtimes
  libomp-dev              # OpenMP for clang (ptq_kernels needs it in the fuzzing build too)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# LibTorch links libblas.so.3; make sure the alternative points at OpenBLAS (OpenMP build).
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
case "$blas" in
  *openblas*) ;;
  *) echo "setup: warning: libblas.so.3 resolves to '$blas', not OpenBLAS; fp32 matmul will be slow" >&2 ;;
esac
