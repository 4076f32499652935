#!/usr/bin/env bash
# The CUDA backend's check on a GPU machine (the `device` tool's H200, or any Linux machine with an NVIDIA driver),
# in two steps, because the device machine has nvcc and cmake but not the Debian -dev packages ptq builds with:
#
#   scripts/device_cuda.sh prepare   here: builds the kernels-only CUDA binaries (build-cuda/, sm_80 + sm_90, CUDA
#                                    runtime linked statically) and copies them with the shared libraries they load
#                                    (libfmt, libgomp, libstdc++) into device-carry/ (ignored by git)
#   scripts/device_cuda.sh run       there (carry device-carry): the [cuda] and [cuda-host] kernel tests, then
#                                    ptq_kernel_bench; writes $OUT/cuda_tests.txt and $OUT/kernel_bench.jsonl
#                                    (JSON lines: device, GEMV GB/s vs peak, GEMM TFLOP/s, a 7B-shaped layer's linear
#                                    modules per scheme at batch 1 / 16 / 512 tokens, FP16 on cuBLAS and on the own
#                                    kernel); the first and last lines say which FP16 GEMM ran
#
# With the device tool: scripts/device_cuda.sh prepare, then run(command="scripts/device_cuda.sh run",
# carry=["device-carry"], timeout_s=420). The whole run takes a few minutes on an H200 (bench: 5 repeats).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  prepare)
    generator=()
    command -v ninja >/dev/null && generator=(-G Ninja)
    # shellcheck source=scripts/lib_nvcc.sh
    source scripts/lib_nvcc.sh
    nvcc=$(usable_nvcc)
    [[ -n "$nvcc" ]] || { echo "device_cuda.sh: no usable nvcc here" >&2; exit 1; }
    [[ -f build-cuda/CMakeCache.txt ]] || cmake -S . -B build-cuda "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DPTQ_KERNELS_ONLY=ON -DPTQ_WITH_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc"
    cmake --build build-cuda -j "$(nproc)" --target ptq_kernel_tests ptq_kernel_bench
    rm -rf device-carry && mkdir -p device-carry/lib
    cp build-cuda/ptq_kernel_tests build-cuda/ptq_kernel_bench device-carry/
    for lib in libfmt.so libgomp.so libstdc++.so; do
      ldd build-cuda/ptq_kernel_tests | awk -v l="$lib" 'index($1, l) == 1 {print $3}' | xargs -r -I{} cp -L {} device-carry/lib/
    done
    grep -qx '/device-carry/' .git/info/exclude 2>/dev/null || echo '/device-carry/' >> .git/info/exclude
    du -sh device-carry
    ;;
  run)
    out=${OUT:-out}
    mkdir -p "$out"
    export LD_LIBRARY_PATH="$PWD/device-carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # cuBLAS is dlopen'ed from the machine's toolkit (lib/kernels/cuda/cublas.h), not carried.
    [[ -d /usr/local/cuda/lib64 ]] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/cuda/lib64"
    nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv > "$out/nvidia_smi.csv" 2>&1 || true
    device-carry/ptq_kernel_bench --cuda-check
    rc=0
    device-carry/ptq_kernel_tests "[cuda],[cuda-host]" 2>&1 | tee "$out/cuda_tests.txt" || rc=$?
    device-carry/ptq_kernel_bench 2>&1 | tee "$out/kernel_bench.jsonl"
    echo "FP16 GEMMs measured:"
    grep '"bench":"cuda_gemm","weights":"f16"' "$out/kernel_bench.jsonl" || echo "  none (no cuda_gemm f16 line)"
    exit "$rc"
    ;;
  *)
    echo "usage: scripts/device_cuda.sh prepare|run" >&2
    exit 2
    ;;
esac
