// linear_q8() on 256-bit integer instructions (AVX2; AVX-512 machines run it too), compiled for them by the
// target pragma below.
//
// Per 32-column block: the weight codes unpacked to 32 bytes (packed_weights.h block layout), multiplied with the
// activation codes on integers (exact int32 block sums), converted once and scaled by the activation step; per
// group by the weight step. 2/3/4-bit codes: vpmaddubsw (u8 code x s8 activation, pairs <= 2 * 15 * 127, no
// saturation) + vpmaddwd. 5..8-bit codes (8-bit container): vpmovzxbw + vpmaddwd against int16 activations (a
// u8 x s8 pair sum could reach 2 * 255 * 127 and saturate vpmaddubsw).
// Every standard header the kernel code uses is included before the target pragma: template instantiations then
// keep the baseline instruction set (with per-file -m flags, an AVX-512 copy of std::vector<float> or std::fill
// could be the one the linker keeps for every caller, and crash a machine without AVX-512).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <immintrin.h>

#include "kernels/linear.h"

#pragma GCC target("avx2,fma,f16c")

namespace ptq::kernels {

namespace {

constexpr int64_t kMaxTokens = 4;  // tokens sharing one unpack of a weight row

// Activations of one token in kernel order, rounded per 32-block; the group sums of x̂ for the offset term.
struct TokenQ8 {
  std::vector<int8_t> q;
  std::vector<int16_t> q16;  // 8-bit container only
  std::vector<float> d, xsum;
};

void prepare_token(const PackedWeights& w, const float* x, TokenQ8& t) {
  t.q.resize(w.kpad);
  t.d.resize(w.kpad / kQ8Block);
  quantize_q8_blocks(w, x, t.q.data(), t.d.data());
  if (w.container == 8) t.q16.assign(t.q.begin(), t.q.end());
  t.xsum.assign(w.groups, 0.0f);
  const int64_t blocks_per_group = w.groups == 1 ? w.kpad / kQ8Block : w.group / kQ8Block;
  for (int64_t b = 0; b < w.kpad / kQ8Block; ++b) {
    int s = 0;
    for (int64_t i = 0; i < kQ8Block; ++i) s += t.q[b * kQ8Block + i];
    t.xsum[std::min(b / blocks_per_group, w.groups - 1)] += t.d[b] * float(s);
  }
}

// The 32 codes of 32-column block b of a row with a 2- or 4-bit container, as bytes in column order.
inline __m256i small_codes(const uint8_t* row, int64_t b, int c) {
  const int pairs = 4 / c;  // 32-blocks per 16-byte block: 1 (c = 4), 2 (c = 2)
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + kBlockBytes * (b / pairs)));
  const int sh = 2 * c * int(b % pairs);
  const __m128i mask = _mm_set1_epi8(char((1 << c) - 1));
  const __m128i lo = _mm_and_si128(_mm_srl_epi16(v, _mm_cvtsi32_si128(sh)), mask);
  const __m128i hi = _mm_and_si128(_mm_srl_epi16(v, _mm_cvtsi32_si128(sh + c)), mask);
  return _mm256_set_m128i(hi, lo);
}

inline float hsum(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

// Block b's int32 partial sums (8 lanes) of codes x activation codes, for container C.
template <int C>
inline __m256i block_dot(const uint8_t* row, int64_t b, const TokenQ8& t) {
  if constexpr (C == 8) {
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + kQ8Block * b));
    const int16_t* xq = t.q16.data() + kQ8Block * b;
    return _mm256_add_epi32(
        _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(c)),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq))),
        _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(c, 1)),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 16))));
  } else {
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.q.data() + kQ8Block * b));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(small_codes(row, b, C), xq), _mm256_set1_epi16(1));
  }
}

// Rows [r0, r1) for MB tokens. Each block's sums are scaled by step_w(group) * step_x(block) in one fma into one
// of U accumulators per token (U independent chains hide the fma latency: with one chain a decode step is bound by
// it, not by the instruction count); the offset term is a scalar per group. block_group[b] = group of block b.
template <int MB, int C>
void rows(const PackedWeights& w, const TokenQ8* tok, const int32_t* block_group, float* y, int64_t ldy,
          const float* bias, int64_t r0, int64_t r1) {
  constexpr int U = MB >= 4 ? 1 : MB >= 2 ? 2 : 4;
  const int64_t blocks = w.groups == 1 ? w.kpad / kQ8Block : w.k / kQ8Block;
  const float zero_sym = float(1 << (w.bits - 1));
  const float* d[MB];
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i) d[i] = tok[i].d.data();
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.codes.data() + r * w.row_bytes();
    const float* sc = w.scales.data() + r * w.groups;
    float zt[MB];
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) zt[i] = 0.0f;
    for (int64_t g = 0; g < w.groups; ++g) {
      const float o = w.offsets.empty() ? sc[g] * zero_sym : w.offsets[r * w.groups + g];
#pragma GCC unroll 4
      for (int i = 0; i < MB; ++i) zt[i] += o * tok[i].xsum[g];
    }
    __m256 acc[MB][U];
#pragma GCC unroll 16
    for (int a = 0; a < MB * U; ++a) acc[a / U][a % U] = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + U <= blocks; b += U) {
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) {
        const float s = sc[block_group[b + u]];
#pragma GCC unroll 4
        for (int i = 0; i < MB; ++i)
          acc[i][u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_dot<C>(row, b + u, tok[i])),
                                      _mm256_set1_ps(s * d[i][b + u]), acc[i][u]);
      }
    }
    for (; b < blocks; ++b) {
      const float s = sc[block_group[b]];
#pragma GCC unroll 4
      for (int i = 0; i < MB; ++i)
        acc[i][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_dot<C>(row, b, tok[i])), _mm256_set1_ps(s * d[i][b]),
                                    acc[i][0]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) {
      __m256 t = acc[i][0];
#pragma GCC unroll 4
      for (int u = 1; u < U; ++u) t = _mm256_add_ps(t, acc[i][u]);
      y[i * ldy + r] = hsum(t) - zt[i] + (bias != nullptr ? bias[r] : 0.0f);
    }
  }
}

template <int MB>
void rows_any(const PackedWeights& w, const TokenQ8* tok, const int32_t* block_group, float* y, int64_t ldy,
              const float* bias, int64_t r0, int64_t r1) {
  switch (w.container) {
    case 2: return rows<MB, 2>(w, tok, block_group, y, ldy, bias, r0, r1);
    case 4: return rows<MB, 4>(w, tok, block_group, y, ldy, bias, r0, r1);
    default: return rows<MB, 8>(w, tok, block_group, y, ldy, bias, r0, r1);
  }
}

}  // namespace

void linear_q8_avx2(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  thread_local std::vector<TokenQ8> tok;
  thread_local std::vector<int32_t> block_group;
  if (int64_t(tok.size()) < m) tok.resize(m);
  for (int64_t i = 0; i < m; ++i) prepare_token(w, x + i * w.k, tok[i]);
  const int64_t blocks = w.kpad / kQ8Block, per_group = w.groups == 1 ? blocks : w.group / kQ8Block;
  block_group.resize(blocks);
  for (int64_t b = 0; b < blocks; ++b) block_group[b] = int32_t(std::min(b / per_group, w.groups - 1));
  // `tok` and `block_group` are thread_local: the worker threads must not name them.
  const TokenQ8* tp = tok.data();
  const int32_t* bg = block_group.data();
  // Rows in chunks of 16 over the threads; within a row, tokens in groups of up to kMaxTokens share one unpack
  // (the row's codes stay in L1 across the groups).
#pragma omp parallel for schedule(static)
  for (int64_t r0 = 0; r0 < w.n; r0 += 16) {
    const int64_t r1 = std::min(w.n, r0 + 16);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t i0 = 0; i0 < m; i0 += kMaxTokens) {
        float* yi = y + i0 * w.n;
        switch (std::min(kMaxTokens, m - i0)) {
          case 1: rows_any<1>(w, tp + i0, bg, yi, w.n, bias, r, r + 1); break;
          case 2: rows_any<2>(w, tp + i0, bg, yi, w.n, bias, r, r + 1); break;
          case 3: rows_any<3>(w, tp + i0, bg, yi, w.n, bias, r, r + 1); break;
          default: rows_any<4>(w, tp + i0, bg, yi, w.n, bias, r, r + 1); break;
        }
      }
  }
}

}  // namespace ptq::kernels
