#!/usr/bin/env bash
# Set-up, build, and every test: the Catch2 suite + CLI checks (ctest), then the LibTorch-free layers
# (lib/core, lib/io: file parsing) rebuilt and re-tested under AddressSanitizer + UBSan, then a libFuzzer smoke
# of the parsers (scripts/fuzz.sh --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's wall time on stderr, so CI logs show where the time goes.
mark=$(date +%s)
phase() { echo "test.sh: $1 took $(( $(date +%s) - mark )) s" >&2; mark=$(date +%s); }
scripts/setup.sh
phase setup
scripts/build.sh
phase build
jobs=$(nproc)
(cd build && ctest --output-on-failure -j "$jobs")
phase ctest

# GGUF export checked by llama.cpp itself (npm: node-llama-cpp prebuilt CPU binary, @huggingface/gguf); exit 77 =
# npm unavailable, reported as skipped.
rc=0
scripts/check_gguf_llama_cpp.sh build/ptq build/npm-oracle || rc=$?
if [[ $rc -eq 77 ]]; then echo "llama.cpp GGUF check skipped (npm unavailable)"; elif [[ $rc -ne 0 ]]; then exit "$rc"; fi
phase "llama.cpp GGUF check"
# Every GGUF block type and K-quant mix, with and without the imatrix, byte for byte against llama-quantize; 77 = npm,
# g++ or the llama.cpp source bundle unavailable.
rc=0
scripts/check_gguf_kquants.sh build/ptq build/npm-oracle || rc=$?
if [[ $rc -eq 77 ]]; then echo "GGUF K-quant check skipped (npm/llama-quantize unavailable)"; elif [[ $rc -ne 0 ]]; then exit "$rc"; fi
phase "GGUF K-quant check"

# tokenizer.json ids against the npm reference tokenizers (GPT-2, Llama-2, Qwen3) + synthetic end-to-end runs;
# skips loudly when npm is unreachable.
tests/oracle/tokenizers/run.sh build
phase "tokenizer oracle"

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

# The CUDA backend (lib/kernels/cuda): every .cu file compiled by nvcc for sm_80 and sm_90 in the kernels-only build
# (no LibTorch), then its tests: the host emulation of the device code runs everywhere; the [cuda] tests run on a GPU
# and are reported by ctest as Skipped ("skipped: no CUDA device") where there is none.
# shellcheck source=scripts/lib_nvcc.sh
source scripts/lib_nvcc.sh
nvcc=$(usable_nvcc)
if [[ -n "$nvcc" ]]; then
  [[ -f build-cuda/CMakeCache.txt ]] || cmake -S . -B build-cuda "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DPTQ_KERNELS_ONLY=ON -DPTQ_WITH_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc"
  cmake --build build-cuda -j "$jobs"
  (cd build-cuda && ctest --output-on-failure -j "$jobs")
else
  echo "CUDA build skipped: no usable nvcc on this machine (PATH or /usr/local/cuda/bin; reason above if one was found)"
fi
phase "CUDA build + kernel tests"

[[ -f build-asan/CMakeCache.txt ]] || cmake -S . -B build-asan "${generator[@]}" -DCMAKE_BUILD_TYPE=Debug -DPTQ_SANITIZE=ON
cmake --build build-asan -j "$jobs"
phase "ASan build"
(cd build-asan && ctest --output-on-failure -j "$jobs")
phase "ASan ctest"

# Fuzz smoke: every LibTorch-free parser under libFuzzer + ASan/UBSan for a few seconds each, from the bundled seeds
# and the reproducers of past findings (clang build in build-fuzz; long runs: scripts/fuzz.sh SECONDS).
scripts/fuzz.sh --smoke
phase "fuzz smoke"
