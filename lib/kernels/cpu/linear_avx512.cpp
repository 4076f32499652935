// linear() for AVX-512 (F/BW/VL/DQ), compiled for it by the target pragma below; runs only when best_isa() says so.
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

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
// clang ignores the GCC pragma; this is its equivalent (the fuzzing build, tests/fuzz, uses clang).
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), apply_to = function)
#endif

#include "kernels/cpu/linear_impl.h"

namespace ptq::kernels {

namespace {

struct V512 {
  using F = __m512;
  // GEMM tile: 8 tokens x 32 rows = 16 accumulators + 2 weight + 1 broadcast registers of 32.
  static constexpr int kMR = 8, kNR = 32;
  struct Row {
    __m512 a, b;
  };
  static Row row_zero() { return {_mm512_setzero_ps(), _mm512_setzero_ps()}; }
  static Row row_load(const float* p) { return {_mm512_loadu_ps(p), _mm512_loadu_ps(p + 16)}; }
  static void row_store(float* p, Row r) { _mm512_storeu_ps(p, r.a), _mm512_storeu_ps(p + 16, r.b); }
  static F bcast(float v) { return _mm512_set1_ps(v); }
  static Row row_fmadd(F x, Row w, Row acc) { return {_mm512_fmadd_ps(x, w.a, acc.a), _mm512_fmadd_ps(x, w.b, acc.b)}; }
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F set1(float s) { return _mm512_set1_ps(s); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static float reduce(F v) { return _mm512_reduce_add_ps(v); }
  static F codes(const uint8_t* block, int shift, int mask) {
    __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
    b = _mm512_and_si512(_mm512_srl_epi32(b, _mm_cvtsi32_si128(shift)), _mm512_set1_epi32(mask));
    return _mm512_cvtepi32_ps(b);
  }
  static F load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static F load_bf16(const uint16_t* p) {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
};

}  // namespace

void linear_avx512(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  cpu::LinearImpl<V512>::run(w, x, m, y, bias);
}

}  // namespace ptq::kernels

#ifdef __clang__
#pragma clang attribute pop
#endif
