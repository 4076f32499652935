// acc + the products of w's 64 bytes (u8) with the four signed bytes at p, in every int32 lane: vpdpbusd with an
// embedded {1to16} broadcast, one fused load (the intrinsic on _mm512_set1_epi32 compiles to a separate vpbroadcastd
// per product). Include after the file's AVX-512 VNNI target pragma (cpu/linear_q8_avx512.cpp,
// cpu/int_linear8_avx512.cpp).
#pragma once

#include <cstdint>

#include <immintrin.h>

namespace ptq::kernels::cpu {

inline __m512i dpbusd_bcast(__m512i acc, __m512i w, const int8_t* p) {
  __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(p)));
  return acc;
}

}  // namespace ptq::kernels::cpu
