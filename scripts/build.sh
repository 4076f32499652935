#!/usr/bin/env bash
# Configures (once) and builds ptq, Release, into build/. Arguments name targets to build (default: all),
# e.g. `scripts/build.sh ptq`. Extra CMake options: PTQ_CMAKE_ARGS="-DPTQ_BUILD_TESTS=OFF" scripts/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# The CUDA backend (lib/kernels/cuda, `--device cuda`) is compiled wherever a usable nvcc is (scripts/lib_nvcc.sh);
# PTQ_CUDA=0 leaves it out. Without it `--device cuda` says "built without CUDA".
cuda_args=()
# shellcheck source=scripts/lib_nvcc.sh
source scripts/lib_nvcc.sh
if [[ "${PTQ_CUDA:-1}" != 0 && ! -f build/CMakeCache.txt ]]; then
  nvcc=$(usable_nvcc)
  if [[ -n "$nvcc" ]]; then cuda_args=(-DPTQ_WITH_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc"); else echo "build.sh: building without CUDA" >&2; fi
fi
if [[ ! -f build/CMakeCache.txt || -n "${PTQ_CMAKE_ARGS:-}" ]]; then
  # shellcheck disable=SC2086
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}" ${PTQ_CMAKE_ARGS:-} >/dev/null
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build -j "$(nproc)" "${targets[@]}"
