# shellcheck shell=bash
# usable_nvcc: prints the nvcc that can build ptq's CUDA kernels here (PATH, then /usr/local/cuda/bin), or nothing,
# with the reason on stderr: it must compile a kernel for sm_80 and sm_90 with this host compiler (an older toolkit
# refuses a newer g++). Sourced by scripts/build.sh and scripts/test.sh.
usable_nvcc() {
  local nvcc probe
  nvcc=$(command -v nvcc || true)
  [[ -z "$nvcc" && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
  [[ -z "$nvcc" ]] && return 0
  probe=$(mktemp -d)
  echo '__global__ void k(int* p) { *p = 1; } int main() { return 0; }' > "$probe/probe.cu"
  if "$nvcc" -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -c "$probe/probe.cu" \
       -o "$probe/probe.o" > "$probe/log" 2>&1; then
    echo "$nvcc"
  else
    echo "$nvcc cannot build the CUDA kernels here: $(head -n 1 "$probe/log")" >&2
  fi
  rm -rf "$probe"
}
