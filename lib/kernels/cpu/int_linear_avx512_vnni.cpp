// int_linear() on AVX-512 with VNNI, compiled for it by the target pragma below; runs where best_isa() is AVX-512
// and the CPU has VNNI (int_linear.cpp), else cpu/int_linear_avx512.cpp does. The same kernel as that file with
// vpdpwssd (int16 pairs multiplied and added into the int32 lanes, wrapping, no saturation) in place of vpmaddwd +
// vpaddd: one instruction instead of two, the same int32 sums bit for bit. Built with -ffp-contract=off
// (CMakeLists.txt), as the plain AVX-512 file is.
// Every standard header the kernel code uses is included before the target pragma (see cpu/linear_avx512.cpp).
#include <algorithm>
#include <cstdint>

#include <immintrin.h>

#include "kernels/int_linear.h"

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
// clang ignores the GCC pragma; this is its equivalent (the fuzzing build, tests/fuzz, uses clang).
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#endif

#include "kernels/cpu/int_linear_impl.h"

namespace ptq::kernels {

namespace {

struct I512Vnni {
  using I = __m512i;
  static constexpr int64_t kLanes = 32;
  static constexpr bool kMaskedTail = true;
  static I zero() { return _mm512_setzero_si512(); }
  static I madd(I acc, const int16_t* c, const int16_t* w) {
    return _mm512_dpwssd_epi32(acc, _mm512_loadu_si512(c), _mm512_loadu_si512(w));
  }
  // count < 32 columns: lanes at and past count are zero in both operands.
  static I madd_tail(I acc, const int16_t* c, const int16_t* w, int64_t count) {
    const __mmask32 mask = _cvtu32_mask32((1u << count) - 1u);
    return _mm512_dpwssd_epi32(acc, _mm512_maskz_loadu_epi16(mask, c), _mm512_maskz_loadu_epi16(mask, w));
  }
  static int32_t reduce(I v) { return _mm512_reduce_add_epi32(v); }
};

}  // namespace

void int_linear_avx512_vnni(const IntWeights& w, const IntActivations& x, float* y, const float* bias, int32_t* acc) {
  cpu::IntLinearImpl<I512Vnni>::run(w, x, y, bias, acc);
}

}  // namespace ptq::kernels

#ifdef __clang__
#pragma clang attribute pop
#endif
