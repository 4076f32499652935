// linear_q8() on AVX-512 VNNI (F/BW/VL/DQ + VNNI), compiled for it by the target pragma below; runs only where
// has_avx512_vnni() (linear_q8.cpp), elsewhere cpu/linear_q8_avx2.cpp does. Same arithmetic as the AVX2 kernel:
// exact int32 block sums of weight codes x activation codes, one fp32 scale per block and token
// (step_w(group) * step_x(block)), the offset term per group.
//
// vpdpbusd multiplies 64 unsigned bytes (weight codes) by 64 signed bytes (activation codes) and adds each group of
// four products into an int32 lane, without intermediate saturation (unlike vpmaddubsw), so one instruction does what
// vpmaddubsw + vpmaddwd do in the AVX2 kernel, for every container:
//  - 4-bit container: one 64-byte load holds 4 blocks (16 bytes each, packed_weights.h); its low nibbles are codes
//    0..15 of each block, its high nibbles codes 16..31, in the block's 128-bit lane. The activations are laid out to
//    match per 4 blocks (TokenQ8::q_quads: [b 0..15 | b+1 0..15 | b+2 0..15 | b+3 0..15 | b 16..31 | ... ]), so two
//    vpdpbusd give 16 int32 lanes, 4 per block; the block factors are spread to their lanes by one vpermps.
//  - 8-bit container: one 64-byte load is 2 blocks of plain bytes against the activations in column order.
//  - 2-bit container: left to the AVX2 kernel (linear_q8_avx2), a rare grid.
// Blocks past the last whole 4 (4-bit) or 2 (8-bit) run one at a time on 128/256-bit VNNI (AVX512VL).
// Every standard header the kernel code uses is included before the target pragma (see cpu/linear_q8_avx2.cpp).
#include <algorithm>
#include <cstdint>
#include <vector>

#include <immintrin.h>

#include "kernels/linear.h"
#include "kernels/cpu/linear_q8_common.h"

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
// clang ignores the GCC pragma; this is its equivalent (the fuzzing build, tests/fuzz, uses clang).
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#endif

namespace ptq::kernels {

void linear_q8_avx2(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias);

namespace {

// Prefetch distance ahead of the code loads (the AVX2 kernel's measurement: 2 KiB was best on the 1B shape's ffn).
constexpr int64_t kPrefetchBytes = 2048;
// Tokens sharing one unpack of a row's codes: decode runs 1; prefill runs the tokens in groups of up to 8 (8 + 2
// accumulators and the unpacked codes fit the 32 zmm registers).
constexpr int kMaxTokens = 8;

struct TokenQ8 {
  std::vector<int8_t> q;       // column order (8-bit container, and the 4-bit tail blocks)
  std::vector<int8_t> q_quads; // 4-bit container: per 4 blocks, the order the nibbles of one 64-byte load come in
  std::vector<float> d, xsum;
};

void prepare_token(const PackedWeights& w, const float* x, TokenQ8& t) {
  const int64_t blocks = w.kpad / kQ8Block;
  t.q.resize(w.kpad);
  t.d.resize(blocks);
  quantize_q8_blocks(w, x, t.q.data(), t.d.data());
  if (w.container == 4) {
    t.q_quads.resize(w.kpad);
    for (int64_t b = 0; b + 4 <= blocks; b += 4)
      for (int64_t j = 0; j < 4; ++j)
        for (int64_t i = 0; i < 16; ++i) {
          t.q_quads[b * kQ8Block + 16 * j + i] = t.q[(b + j) * kQ8Block + i];
          t.q_quads[b * kQ8Block + 64 + 16 * j + i] = t.q[(b + j) * kQ8Block + 16 + i];
        }
  }
  q8_group_sums(w, t.q.data(), t.d.data(), t.xsum);
}

inline float dot(const float* a, const float* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  if (i < n) {
    const __mmask16 mask = _cvtu32_mask16((1u << (n - i)) - 1u);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + i), _mm512_maskz_loadu_ps(mask, b + i), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// One block b of a row alone: 4 int32 lanes (4-bit container: codes 0..15 against q[0..15], 16..31 against
// q[16..31]) or 8 (8-bit), summed by the caller.
inline __m128i block_dot4(const uint8_t* row, int64_t b, const int8_t* q) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + kBlockBytes * b));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(v, mask), hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
  const int8_t* xq = q + kQ8Block * b;
  const __m128i s = _mm_dpbusd_epi32(_mm_setzero_si128(), lo, _mm_loadu_si128(reinterpret_cast<const __m128i*>(xq)));
  return _mm_dpbusd_epi32(s, hi, _mm_loadu_si128(reinterpret_cast<const __m128i*>(xq + 16)));
}
inline __m256i block_dot8(const uint8_t* row, int64_t b, const int8_t* q) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(),
                             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + kQ8Block * b)),
                             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + kQ8Block * b)));
}

// Rows [r0, r1) for MB tokens (container C = 4 or 8). block_group[b] = group of block b; per_block_scales: groups of
// exactly one block (group 32), so a row's block scales are contiguous.
template <int MB, int C>
void rows(const PackedWeights& w, const TokenQ8* tok, const int32_t* block_group, bool per_block_scales, float* y,
          int64_t ldy, const float* bias, int64_t r0, int64_t r1) {
  const int64_t blocks = w.groups == 1 ? w.kpad / kQ8Block : w.k / kQ8Block;
  constexpr int kStep = C == 4 ? 4 : 2;  // blocks per 64-byte load
  // Lane l of a quad's factor vector takes factor l / 4 (C = 4); of a pair's, factor l / 8 (C = 8).
  const __m512i spread = C == 4 ? _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0)
                                : _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.codes.data() + r * w.row_bytes();
    const float* sc = w.scales.data() + r * w.groups;
    const Q8RowOffsets off = q8_row_offsets(w, r);
    __m512 acc[MB];
    __m128 tail[MB];
#pragma GCC unroll 8
    for (int i = 0; i < MB; ++i) {
      acc[i] = _mm512_setzero_ps();
      tail[i] = _mm_setzero_ps();
    }
    int64_t b = 0;
    for (; b + kStep <= blocks; b += kStep) {
      _mm_prefetch(reinterpret_cast<const char*>(row + kBlockBytes * b * (C / 4)) + kPrefetchBytes, _MM_HINT_T0);
      const __m512i v = _mm512_loadu_si512(row + kBlockBytes * b * (C / 4));
      // The row's block scales of this step, in the low lanes.
      __m128 s;
      if (per_block_scales) {
        s = C == 4 ? _mm_loadu_ps(sc + b) : _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(sc + b)));
      } else if constexpr (C == 4) {
        s = _mm_set_ps(sc[block_group[b + 3]], sc[block_group[b + 2]], sc[block_group[b + 1]], sc[block_group[b]]);
      } else {
        s = _mm_set_ps(0.0f, 0.0f, sc[block_group[b + 1]], sc[block_group[b]]);
      }
      if constexpr (C == 4) {
        const __m512i lo = _mm512_and_si512(v, nibble), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
#pragma GCC unroll 8
        for (int i = 0; i < MB; ++i) {
          const int8_t* xq = tok[i].q_quads.data() + kQ8Block * b;
          __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(xq));
          p = _mm512_dpbusd_epi32(p, hi, _mm512_loadu_si512(xq + 64));
          const __m128 f = _mm_mul_ps(s, _mm_loadu_ps(tok[i].d.data() + b));
          acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(f)),
                                   acc[i]);
        }
      } else {
#pragma GCC unroll 8
        for (int i = 0; i < MB; ++i) {
          const __m512i p =
              _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, _mm512_loadu_si512(tok[i].q.data() + kQ8Block * b));
          const __m128 d2 = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(tok[i].d.data() + b)));
          const __m128 f = _mm_mul_ps(s, d2);
          acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(f)),
                                   acc[i]);
        }
      }
    }
    for (; b < blocks; ++b) {
      const float s = sc[block_group[b]];
#pragma GCC unroll 8
      for (int i = 0; i < MB; ++i) {
        __m128i p;
        if constexpr (C == 4) {
          p = block_dot4(row, b, tok[i].q.data());
        } else {
          const __m256i p8 = block_dot8(row, b, tok[i].q.data());
          p = _mm_add_epi32(_mm256_castsi256_si128(p8), _mm256_extracti128_si256(p8, 1));
        }
        tail[i] = _mm_fmadd_ps(_mm_cvtepi32_ps(p), _mm_set1_ps(s * tok[i].d[b]), tail[i]);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MB; ++i) {
      __m128 t = _mm_add_ps(tail[i], _mm_movehl_ps(tail[i], tail[i]));
      t = _mm_add_ss(t, _mm_movehdup_ps(t));
      const float tail_sum = _mm_cvtss_f32(t);
      const float zt = off.mul * dot(off.off, tok[i].xsum.data(), w.groups);
      y[i * ldy + r] = _mm512_reduce_add_ps(acc[i]) + tail_sum - zt + (bias != nullptr ? bias[r] : 0.0f);
    }
  }
}

template <int C>
void rows_for(int mb, const PackedWeights& w, const TokenQ8* tok, const int32_t* bg, bool per_block, float* y,
              int64_t ldy, const float* bias, int64_t r0, int64_t r1) {
  switch (mb) {
    case 1: return rows<1, C>(w, tok, bg, per_block, y, ldy, bias, r0, r1);
    case 2: return rows<2, C>(w, tok, bg, per_block, y, ldy, bias, r0, r1);
    case 3: return rows<3, C>(w, tok, bg, per_block, y, ldy, bias, r0, r1);
    case 4: return rows<4, C>(w, tok, bg, per_block, y, ldy, bias, r0, r1);
    case 5: return rows<5, C>(w, tok, bg, per_block, y, ldy, bias, r0, r1);
    case 6: return rows<6, C>(w, tok, bg, per_block, y, ldy, bias, r0, r1);
    case 7: return rows<7, C>(w, tok, bg, per_block, y, ldy, bias, r0, r1);
    default: return rows<8, C>(w, tok, bg, per_block, y, ldy, bias, r0, r1);
  }
}

}  // namespace

void linear_q8_avx512_vnni(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  if (w.container == 2) return linear_q8_avx2(w, x, m, y, bias);
  thread_local std::vector<TokenQ8> tok;
  thread_local std::vector<int32_t> block_group;
  if (int64_t(tok.size()) < m) tok.resize(m);
  for (int64_t i = 0; i < m; ++i) prepare_token(w, x + i * w.k, tok[i]);
  q8_block_groups(w, block_group);
  const bool per_block = w.groups > 1 && w.group == kQ8Block;
  // `tok` and `block_group` are thread_local: the worker threads must not name them.
  const TokenQ8* tp = tok.data();
  const int32_t* bg = block_group.data();
  const bool c4 = w.container == 4;
  // Rows in chunks of 16 over the threads; within a row, tokens in groups of up to kMaxTokens share one load and
  // unpack of the row's codes (which stay in L1 across the groups).
#pragma omp parallel for schedule(static) if (w.n * w.k * m >= kParallelMinMacs)
  for (int64_t r0 = 0; r0 < w.n; r0 += 16) {
    const int64_t r1 = std::min(w.n, r0 + 16);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t i0 = 0; i0 < m; i0 += kMaxTokens) {
        const int mb = int(std::min<int64_t>(kMaxTokens, m - i0));
        if (c4) rows_for<4>(mb, w, tp + i0, bg, per_block, y + i0 * w.n, w.n, bias, r, r + 1);
        else rows_for<8>(mb, w, tp + i0, bg, per_block, y + i0 * w.n, w.n, bias, r, r + 1);
      }
  }
}

}  // namespace ptq::kernels

#ifdef __clang__
#pragma clang attribute pop
#endif
