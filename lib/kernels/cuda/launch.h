// What the .cu files share to launch kernels (CUDA code only: includes cuda_runtime.h).
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <type_traits>

#include "kernels/cuda/device.h"

namespace ptq::kernels::cuda {

constexpr int kWarp = 32;

// Throws Error "what: <the CUDA error string>" where e is not cudaSuccess.
inline void check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error(what + ": " + cudaGetErrorString(e));
}

inline cudaStream_t stream_of(const Stream* s) {
  return s != nullptr ? static_cast<cudaStream_t>(s->handle()) : nullptr;
}

// Calls f(std::integral_constant<int, m>{}) for a token count 1 <= m <= 4 (the GEMV kernels' instances; larger m
// takes the last).
template <class F>
void with_token_count(int64_t m, F&& f) {
  switch (m) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    default: return f(std::integral_constant<int, 4>{});
  }
}

}  // namespace ptq::kernels::cuda
