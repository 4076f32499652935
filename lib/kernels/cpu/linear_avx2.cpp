// linear() for AVX2 + FMA + F16C, compiled for them by the target pragma below. A vector of 16 floats is two
// 256-bit registers.
// Every standard header the kernel code uses is included before the target pragma: template instantiations then
// keep the baseline instruction set (with per-file -m flags, an AVX-512 copy of std::vector<float> or std::fill
// could be the one the linker keeps for every caller, and crash a machine without AVX-512).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include <immintrin.h>

#include "kernels/linear.h"

#pragma GCC target("avx2,fma,f16c")
// clang ignores the GCC pragma; this is its equivalent (the fuzzing build, tests/fuzz, uses clang).
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#endif

#include "kernels/cpu/linear_impl.h"

namespace ptq::kernels {

namespace {

struct V256x2 {
  struct F {
    __m256 lo, hi;
  };
  // GEMM tile: 6 tokens x 16 rows = 12 accumulators + 2 weight + 1 broadcast of the 16 ymm registers.
  static constexpr int kMR = 6, kNR = 16;
  using Row = F;
  static Row row_zero() { return zero(); }
  static Row row_load(const float* p) { return load(p); }
  static void row_store(float* p, Row r) { store(p, r); }
  static __m256 bcast(float v) { return _mm256_set1_ps(v); }
  static Row row_fmadd(__m256 x, Row w, Row acc) { return {_mm256_fmadd_ps(x, w.lo, acc.lo), _mm256_fmadd_ps(x, w.hi, acc.hi)}; }
  static F zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static F load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v.lo), _mm256_storeu_ps(p + 8, v.hi); }
  static F set1(float s) { return {_mm256_set1_ps(s), _mm256_set1_ps(s)}; }
  static F add(F a, F b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  static F fmadd(F a, F b, F c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
  static float reduce(F v) {
    const __m256 s = _mm256_add_ps(v.lo, v.hi);
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
  }
  static __m256 codes8(const uint8_t* p, __m128i shift, __m256i mask) {
    __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(b, shift), mask));
  }
  static F codes(const uint8_t* block, int shift, int mask) {
    const __m128i s = _mm_cvtsi32_si128(shift);
    const __m256i mk = _mm256_set1_epi32(mask);
    return {codes8(block, s, mk), codes8(block + 8, s, mk)};
  }
  static F load_f16(const uint16_t* p) {
    return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)))};
  }
  static __m256 bf16x8(const uint16_t* p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
  static F load_bf16(const uint16_t* p) { return {bf16x8(p), bf16x8(p + 8)}; }
};

}  // namespace

void linear_avx2(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  cpu::LinearImpl<V256x2>::run(w, x, m, y, bias);
}

}  // namespace ptq::kernels

#ifdef __clang__
#pragma clang attribute pop
#endif
