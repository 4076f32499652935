#!/usr/bin/env bash
# Set-up, build, and every test: the Catch2 suite + CLI checks (ctest), then the LibTorch-free layers
# (lib/core, lib/io: file parsing) rebuilt and re-tested under AddressSanitizer + UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
jobs=$(nproc)
(cd build && ctest --output-on-failure -j "$jobs")

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
[[ -f build-asan/CMakeCache.txt ]] || cmake -S . -B build-asan "${generator[@]}" -DCMAKE_BUILD_TYPE=Debug -DPTQ_SANITIZE=ON
cmake --build build-asan -j "$jobs"
(cd build-asan && ctest --output-on-failure -j "$jobs")
