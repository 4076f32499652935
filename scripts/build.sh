#!/usr/bin/env bash
# Configures (once) and builds ptq, Release, into build/. Arguments name targets to build (default: all),
# e.g. `scripts/build.sh ptq`. Extra CMake options: PTQ_CMAKE_ARGS="-DPTQ_WITH_CUDA=ON" scripts/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f build/CMakeCache.txt || -n "${PTQ_CMAKE_ARGS:-}" ]]; then
  # shellcheck disable=SC2086
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${PTQ_CMAKE_ARGS:-} >/dev/null
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build -j "$(nproc)" "${targets[@]}"
