// What one CUDA thread of the integer linear kernels (int_linear.cu) computes, compiled by nvcc and by the host
// compiler (the host emulation in tests/kernels/test_cuda_linear.cpp). Codes and weights are signed bytes, four
// consecutive columns per 32-bit word (dword d holds columns 4d .. 4d+3, byte b = column 4d + b).
#pragma once

#include <cstdint>

#include "core/host_device.h"

namespace ptq::kernels::cuda {

// acc + Σ_b a.byte[b] · b.byte[b], bytes signed: the dp4a instruction (exact in int32).
PTQ_HD int32_t dot4(uint32_t a, uint32_t b, int32_t acc) {
#if defined(__CUDA_ARCH__)
  return __dp4a(int(a), int(b), acc);
#else
  for (int i = 0; i < 4; ++i) acc += int32_t(int8_t(uint8_t(a >> (8 * i)))) * int32_t(int8_t(uint8_t(b >> (8 * i))));
  return acc;
#endif
}

// One lane's share of a group's sum: dwords d0 + lane, d0 + lane + lanes, ... below d1 of a weight row and a token.
PTQ_HD int32_t group_partial(const uint32_t* w_row, const uint32_t* c_row, int64_t d0, int64_t d1, int lane,
                             int lanes) {
  int32_t acc = 0;
  for (int64_t d = d0 + lane; d < d1; d += lanes) acc = dot4(w_row[d], c_row[d], acc);
  return acc;
}

// int_linear_ref's epilogue, one group at a time: sum + double(s) · double(acc), rounded as two separate operations
// (no fused multiply-add on either side, as int_linear_ref.cpp, built with -ffp-contract=off).
PTQ_HD double epilogue_add(double sum, float s, int32_t acc) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(sum, __dmul_rn(double(s), double(acc)));
#else
  const volatile double p = double(s) * double(acc);  // volatile: never contracted with the add
  return sum + p;
#endif
}

// y = float(sum · a) (+ bias) as int_linear_ref.
PTQ_HD float epilogue_finish(double sum, float a, const float* bias, int64_t r) {
#if defined(__CUDA_ARCH__)
  float v = float(__dmul_rn(sum, double(a)));
#else
  float v = float(sum * double(a));
#endif
  return bias != nullptr ? v + bias[r] : v;
}

}  // namespace ptq::kernels::cuda
