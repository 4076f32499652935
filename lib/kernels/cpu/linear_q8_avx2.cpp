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
#include <memory>
#include <string_view>
#include <vector>

#include <immintrin.h>

#include "kernels/linear.h"
#include "kernels/cpu/linear_q8_common.h"

#pragma GCC target("avx2,fma,f16c")
// clang ignores the GCC pragma; this is its equivalent (the fuzzing build, tests/fuzz, uses clang).
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#endif

namespace ptq::kernels {

namespace {

// How far ahead of the code loads to prefetch. Measured on the 1B shape's ffn matrix, 2 threads, 4-bit g32:
// none 4.7 ms, 512 B 3.9 ms, 1 KiB 3.3 ms, 2 KiB 2.5 ms, 4 KiB 2.8 ms, 8 KiB 3.0 ms.
constexpr int64_t kPrefetchBytes = 2048;  // tokens sharing one unpack of a weight row

// Activations of one token in kernel order, rounded per 32-block; the group sums of x̂ for the offset term.
struct TokenQ8 {
  std::vector<int8_t> q;
  std::vector<int8_t> q_pairs;  // 4-bit container only: see pair_dot
  std::vector<int16_t> q16;     // 8-bit container only
  std::vector<float> d, xsum;
};

void prepare_token(const PackedWeights& w, const float* x, TokenQ8& t) {
  t.q.resize(w.kpad);
  t.d.resize(w.kpad / kQ8Block);
  quantize_q8_blocks(w, x, t.q.data(), t.d.data());
  if (w.container == 8) t.q16.assign(t.q.begin(), t.q.end());
  if (w.container == 4) {
    // Per pair of blocks (b, b+1): [b 0..15 | b+1 0..15 | b 16..31 | b+1 16..31], the order in which one 32-byte
    // load of the pair's codes yields them as low and high nibbles (pair_dot).
    t.q_pairs.resize(w.kpad);
    for (int64_t p = 0; p + 1 < w.kpad / kQ8Block; p += 2)
      for (int64_t i = 0; i < 16; ++i) {
        const int8_t* src = t.q.data() + p * kQ8Block;
        int8_t* dst = t.q_pairs.data() + p * kQ8Block;
        dst[i] = src[i];
        dst[16 + i] = src[32 + i];
        dst[32 + i] = src[16 + i];
        dst[48 + i] = src[48 + i];
      }
  }
  q8_group_sums(w, t.q.data(), t.d.data(), t.xsum);
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

inline float hsum(__m256 v);

// Σ a[i] b[i] over n floats.
inline float dot(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float s = hsum(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
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

// Blocks b and b + 1 (b even) of a 4-bit-container row in one go: one 32-byte load holds both blocks' codes, its
// low nibbles are codes 0..15 of b and of b + 1, its high nibbles codes 16..31; against the activations in pair
// order (TokenQ8::q_pairs) two vpmaddubsw and one vpmaddwd give int32 sums whose lanes 0..3 belong to block b and
// 4..7 to block b + 1 (int16 pair sums stay <= 2 * 2 * 15 * 127). About 2/3 of the instructions of two block_dot.
inline __m256i pair_dot(const uint8_t* row, int64_t b, const TokenQ8& t) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + kBlockBytes * b));
  const __m256i mask = _mm256_set1_epi8(0x0F);
  const __m256i lo = _mm256_and_si256(v, mask), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
  const int8_t* xq = t.q_pairs.data() + kQ8Block * b;
  const __m256i s16 =
      _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq))),
                       _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32))));
  return _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
}

// Rows [r0, r1) for MB tokens. Each block's sums are scaled by step_w(group) * step_x(block) in one fma into one
// of U accumulators per token (U independent chains hide the fma latency: with one chain a decode step is bound by
// it, not by the instruction count); the offset term is a scalar per group. block_group[b] = group of block b.
template <int MB, int C>
void rows(const PackedWeights& w, const TokenQ8* tok, const int32_t* block_group, float* y, int64_t ldy,
          const float* bias, int64_t r0, int64_t r1) {
  constexpr int U = MB >= 4 ? 1 : MB >= 2 ? 2 : 4;
  const int64_t blocks = w.groups == 1 ? w.kpad / kQ8Block : w.k / kQ8Block;
  const float* d[MB];
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i) d[i] = tok[i].d.data();
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.codes.data() + r * w.row_bytes();
    const float* sc = w.scales.data() + r * w.groups;
    // Offset term Σ_g offset_g · Σx̂_g: a dot product over the groups.
    const Q8RowOffsets off = q8_row_offsets(w, r);
    float zt[MB];
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) zt[i] = off.mul * dot(off.off, tok[i].xsum.data(), w.groups);
    __m256 acc[MB][U];
#pragma GCC unroll 16
    for (int a = 0; a < MB * U; ++a) acc[a / U][a % U] = _mm256_setzero_ps();
    int64_t b = 0;
    if constexpr (C == 4) {
      // Pairs of blocks, U pairs per step; the scale vector holds block b's factor in lanes 0..3, b+1's in 4..7.
      for (; b + 2 * U <= blocks; b += 2 * U) {
        // The codes stream from memory: ask for them ahead (measured: the code loads were where decode waited).
        _mm_prefetch(reinterpret_cast<const char*>(row + kBlockBytes * b) + kPrefetchBytes, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(row + kBlockBytes * b) + kPrefetchBytes + 64, _MM_HINT_T0);
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) {
          const int64_t bb = b + 2 * u;
          const float s0 = sc[block_group[bb]], s1 = sc[block_group[bb + 1]];
#pragma GCC unroll 4
          for (int i = 0; i < MB; ++i) {
            const __m256 f = _mm256_set_m128(_mm_set1_ps(s1 * d[i][bb + 1]), _mm_set1_ps(s0 * d[i][bb]));
            acc[i][u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pair_dot(row, bb, tok[i])), f, acc[i][u]);
          }
        }
      }
    }
    for (; b + U <= blocks; b += U) {
      // U blocks of C * 4 bytes: one cache line per step, two for bytes (C = 8, U = 4).
      _mm_prefetch(reinterpret_cast<const char*>(row + C * kQ8Block / 8 * b) + kPrefetchBytes, _MM_HINT_T0);
      if constexpr (C * kQ8Block / 8 * U > 64)
        _mm_prefetch(reinterpret_cast<const char*>(row + C * kQ8Block / 8 * b) + kPrefetchBytes + 64, _MM_HINT_T0);
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
  q8_block_groups(w, block_group);
  // `tok` and `block_group` are thread_local: the worker threads must not name them.
  const TokenQ8* tp = tok.data();
  const int32_t* bg = block_group.data();
  // Rows in chunks of 16 over the threads; within a row, tokens in groups of up to kGemvMaxTokens share one unpack
  // (the row's codes stay in L1 across the groups).
#pragma omp parallel for schedule(static) if (w.n * w.k * m >= kParallelMinMacs)
  for (int64_t r0 = 0; r0 < w.n; r0 += 16) {
    const int64_t r1 = std::min(w.n, r0 + 16);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t i0 = 0; i0 < m; i0 += kGemvMaxTokens) {
        float* yi = y + i0 * w.n;
        switch (std::min(kGemvMaxTokens, m - i0)) {
          case 1: rows_any<1>(w, tp + i0, bg, yi, w.n, bias, r, r + 1); break;
          case 2: rows_any<2>(w, tp + i0, bg, yi, w.n, bias, r, r + 1); break;
          case 3: rows_any<3>(w, tp + i0, bg, yi, w.n, bias, r, r + 1); break;
          default: rows_any<4>(w, tp + i0, bg, yi, w.n, bias, r, r + 1); break;
        }
      }
  }
}

}  // namespace ptq::kernels

#ifdef __clang__
#pragma clang attribute pop
#endif
