// int_linear8() on AVX-512 VNNI, compiled for it by the target pragma below; runs only where has_avx512_vnni()
// (int_linear.cpp checks). The weights are 16-row tiles of bytes w + 128 (layout in kernels/int_linear.h): one 64-byte
// vector holds four consecutive columns of each of the tile's rows, so a vpdpbusd against a token's four codes
// (one dword, embedded {1to16} broadcast) adds four products to each row's int32 lane, and a group's sum never leaves
// the lanes. 4-bit weights are nibbles w + 8, eight columns per vector: its low and high nibbles make two such
// vectors. Per token and group: acc - 128 · Σ c (nibbles: 8 · Σ c; the exact int32 sum int_linear keeps), then the
// double epilogue of int_linear_ref, lane by lane in the same order: sum = 0.0; sum += double(s[n, g]) · double(acc)
// for g = 0, 1, ..; y = float(sum · double(a)) (+ bias in fp32). Built with -ffp-contract=off (CMakeLists.txt), as the other int_linear
// kernels are, so nothing fuses into an FMA.
// Every standard header the kernel code uses is included before the target pragma (see cpu/linear_avx512.cpp).
#include <algorithm>
#include <cstdint>
#include <vector>

#include <immintrin.h>

#include "kernels/int_linear.h"

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
// clang ignores the GCC pragma; this is its equivalent (the fuzzing build, tests/fuzz, uses clang).
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#endif

#include "kernels/cpu/dpbusd_bcast.h"

namespace ptq::kernels {

namespace {

// Tokens sharing one load of a weight vector (4 int32 and 8 double accumulators per token stay in registers).
constexpr int kTokens = 4;

using cpu::dpbusd_bcast;

// Tokens [t0, t0 + MB) against tile `tile` (rows 16 tile ..), weights of kBits (8: bytes w + 128; 4: nibbles w + 8).
template <int MB, int kBits>
void tile_tokens(const IntWeights8& w, const int8_t* c8, const int32_t* csum, const IntActivations& x, float* y,
                 const float* bias, int64_t tile, int64_t t0) {
  const int64_t width = w.k / w.groups;
  const uint8_t* wt = w.tiles.data() + tile * w.k * 16 * kBits / 8;
  const double* st = w.s8.data() + tile * w.groups * 16;
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  constexpr int32_t kOffset = kBits == 8 ? 128 : 8;
  __m512d lo[MB], hi[MB];
#pragma GCC unroll 8
  for (int i = 0; i < MB; ++i) lo[i] = hi[i] = _mm512_setzero_pd();
  for (int64_t g = 0; g < w.groups; ++g) {
    __m512i acc[MB];
#pragma GCC unroll 8
    for (int i = 0; i < MB; ++i) acc[i] = _mm512_setzero_si512();
    if constexpr (kBits == 8) {
      for (int64_t j = g * width / 4; j < (g + 1) * width / 4; ++j) {
        const __m512i v = _mm512_loadu_si512(wt + j * 64);
#pragma GCC unroll 8
        for (int i = 0; i < MB; ++i) acc[i] = dpbusd_bcast(acc[i], v, c8 + (t0 + i) * w.k + 4 * j);
      }
    } else {
      for (int64_t j = g * width / 8; j < (g + 1) * width / 8; ++j) {
        const __m512i v = _mm512_loadu_si512(wt + j * 64);
        const __m512i v_lo = _mm512_and_si512(v, low4), v_hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
#pragma GCC unroll 8
        for (int i = 0; i < MB; ++i) {
          acc[i] = dpbusd_bcast(acc[i], v_lo, c8 + (t0 + i) * w.k + 8 * j);
          acc[i] = dpbusd_bcast(acc[i], v_hi, c8 + (t0 + i) * w.k + 8 * j + 4);
        }
      }
    }
    const __m512d s_lo = _mm512_loadu_pd(st + g * 16), s_hi = _mm512_loadu_pd(st + g * 16 + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MB; ++i) {
      const __m512i exact = _mm512_sub_epi32(acc[i], _mm512_set1_epi32(kOffset * csum[(t0 + i) * w.groups + g]));
      lo[i] = _mm512_add_pd(lo[i], _mm512_mul_pd(s_lo, _mm512_cvtepi32_pd(_mm512_castsi512_si256(exact))));
      hi[i] = _mm512_add_pd(hi[i], _mm512_mul_pd(s_hi, _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(exact, 1))));
    }
  }
  const int64_t r0 = tile * 16, nr = std::min<int64_t>(16, w.n - r0);
  const __mmask16 lanes = _cvtu32_mask16((1u << nr) - 1u);
  const __m512 b = bias != nullptr ? _mm512_maskz_loadu_ps(lanes, bias + r0) : _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int i = 0; i < MB; ++i) {
    const __m512d a = _mm512_set1_pd(double(x.per_token ? x.a[t0 + i] : x.a[0]));
    const __m256 f_lo = _mm512_cvtpd_ps(_mm512_mul_pd(lo[i], a)), f_hi = _mm512_cvtpd_ps(_mm512_mul_pd(hi[i], a));
    __m512 f = _mm512_insertf32x8(_mm512_castps256_ps512(f_lo), f_hi, 1);
    if (bias != nullptr) f = _mm512_add_ps(f, b);
    _mm512_mask_storeu_ps(y + (t0 + i) * w.n + r0, lanes, f);
  }
}

template <int kBits>
void tile(const IntWeights8& w, const int8_t* c8, const int32_t* csum, const IntActivations& x, float* y,
          const float* bias, int64_t t) {
  for (int64_t t0 = 0; t0 < x.m; t0 += kTokens) {
    switch (std::min<int64_t>(kTokens, x.m - t0)) {
      case 1: tile_tokens<1, kBits>(w, c8, csum, x, y, bias, t, t0); break;
      case 2: tile_tokens<2, kBits>(w, c8, csum, x, y, bias, t, t0); break;
      case 3: tile_tokens<3, kBits>(w, c8, csum, x, y, bias, t, t0); break;
      default: tile_tokens<4, kBits>(w, c8, csum, x, y, bias, t, t0); break;
    }
  }
}

void run_tile(const IntWeights8& w, const int8_t* c8, const int32_t* csum, const IntActivations& x, float* y,
              const float* bias, int64_t t) {
  if (w.bits == 4) tile<4>(w, c8, csum, x, y, bias, t);
  else tile<8>(w, c8, csum, x, y, bias, t);
}

}  // namespace

bool row_min_max_avx512_vnni(const float* x, int64_t k, float* mn, float* mx) {
  __m512 lo = _mm512_set1_ps(x[0]), hi = lo;
  __mmask16 bad = 0;
  for (int64_t j = 0; j < k; j += 16) {
    const __mmask16 lanes = k - j >= 16 ? __mmask16(0xFFFF) : _cvtu32_mask16((1u << (k - j)) - 1u);
    const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(x[0]), lanes, x + j);
    bad |= _mm512_fpclass_ps_mask(v, 0x99);  // QNaN, +Inf, -Inf, SNaN
    lo = _mm512_min_ps(lo, v);
    hi = _mm512_max_ps(hi, v);
  }
  *mn = _mm512_reduce_min_ps(lo);
  *mx = _mm512_reduce_max_ps(hi);
  return bad == 0;
}

bool quantize_row8_avx512_vnni(const float* x, int64_t k, int64_t groups, float inv, int qmin, int qmax, int8_t* c8,
                               int32_t* csum) {
  const int64_t width = k / groups;
  const __m512 vinv = _mm512_set1_ps(inv), vmin = _mm512_set1_ps(float(qmin)), vmax = _mm512_set1_ps(float(qmax));
  __mmask16 bad = 0;
  for (int64_t g = 0; g < groups; ++g) {
    __m512i sum = _mm512_setzero_si512();
    for (int64_t j = g * width; j < (g + 1) * width; j += 16) {
      const int64_t left = (g + 1) * width - j;
      const __mmask16 lanes = left >= 16 ? __mmask16(0xFFFF) : _cvtu32_mask16((1u << left) - 1u);
      const __m512 v = _mm512_maskz_loadu_ps(lanes, x + j);
      bad |= _mm512_fpclass_ps_mask(v, 0x99);
      // nearbyint (round half to even, the default mode) of x · inv, clamped: quantize_activation's rounding.
      __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(v, vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm512_min_ps(_mm512_max_ps(q, vmin), vmax);
      const __m512i qi = _mm512_maskz_mov_epi32(lanes, _mm512_cvtps_epi32(q));
      sum = _mm512_add_epi32(sum, qi);
      _mm_mask_storeu_epi8(c8 + j, lanes, _mm512_cvtepi32_epi8(qi));
    }
    csum[g] = _mm512_reduce_add_epi32(sum);
  }
  return bad == 0;
}

void int_linear8_avx512_vnni(const IntWeights8& w, const int8_t* c8, const int32_t* csum, const IntActivations& x,
                             float* y, const float* bias) {
  const int64_t tiles = (w.n + 15) / 16;
  // Tiles over the threads; the region holds no vector code itself (clang outlines it without the target attributes).
#pragma omp parallel for schedule(static) if (w.n * w.k * x.m >= (int64_t(1) << 18))
  for (int64_t t = 0; t < tiles; ++t) run_tile(w, c8, csum, x, y, bias, t);
}

}  // namespace ptq::kernels

#ifdef __clang__
#pragma clang attribute pop
#endif
