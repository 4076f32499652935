// int_linear() on AVX2, compiled for it by the target pragma below: vpmaddwd on 16 int16 lanes (one ymm), the
// columns past the last whole 16 of a group on scalars. Built with -ffp-contract=off (CMakeLists.txt): the double
// epilogue must not fuse into FMAs, so that it rounds as int_linear_ref does.
// Every standard header the kernel code uses is included before the target pragma: template instantiations then
// keep the baseline instruction set (with per-file -m flags, an AVX-512 copy of std::vector<float> or std::fill
// could be the one the linker keeps for every caller, and crash a machine without AVX-512).
#include <algorithm>
#include <cstdint>

#include <immintrin.h>

#include "kernels/int_linear.h"

#pragma GCC target("avx2,fma,f16c")
// clang ignores the GCC pragma; this is its equivalent (the fuzzing build, tests/fuzz, uses clang).
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#endif

#include "kernels/cpu/int_linear_impl.h"

namespace ptq::kernels {

namespace {

struct I256 {
  using I = __m256i;
  static constexpr int64_t kLanes = 16;
  static constexpr bool kMaskedTail = false;
  static I zero() { return _mm256_setzero_si256(); }
  static I madd(I acc, const int16_t* c, const int16_t* w) {
    const __m256i cv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(cv, wv));
  }
  static I madd_tail(I acc, const int16_t*, const int16_t*, int64_t) { return acc; }  // unused (kMaskedTail)
  static int32_t reduce(I v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
  }
};

}  // namespace

void int_linear_avx2(const IntWeights& w, const IntActivations& x, float* y, const float* bias, int32_t* acc) {
  cpu::IntLinearImpl<I256>::run(w, x, y, bias, acc);
}

}  // namespace ptq::kernels

#ifdef __clang__
#pragma clang attribute pop
#endif
