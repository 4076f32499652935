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
// That per-row kernel serves up to kTileMinTokens - 1 tokens (decode); longer calls (prefill) run the tile GEMM
// below it, on rows repacked per 16-row tile (its layout is documented there).
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

#include "kernels/cpu/dpbusd_bcast.h"

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
  // 8-bit container, one group per row: per pair of blocks (one 64-byte load), the steps as the load's int32 lanes
  // need them (lanes 0..7: d[b], 8..15: d[b + 1]), so the per-row kernel's step is one fma from memory.
  std::vector<float> d_pairs;
};

// quantize_q8_blocks + q8_group_sums on vectors, for weights in natural column order (act-order permutations take
// the shared scalar code): the same step (max|x| / 127, its reciprocal in fp32) and the same rounding (cvtps rounds
// to nearest even, as nearbyint does in the default mode), so the codes equal the reference's bit for bit.
void quantize_natural(const PackedWeights& w, const float* x, TokenQ8& t) {
  const int64_t blocks = w.kpad / kQ8Block, per_group = w.groups == 1 ? blocks : w.group / kQ8Block;
  t.xsum.assign(w.groups, 0.0f);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j = b * kQ8Block, left = std::max<int64_t>(0, std::min<int64_t>(kQ8Block, w.k - j));
    const __mmask16 m0 = _cvtu32_mask16(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
    const __mmask16 m1 = _cvtu32_mask16(left >= 32 ? 0xFFFFu : left <= 16 ? 0u : (1u << (left - 16)) - 1u);
    const __m512 v0 = _mm512_maskz_loadu_ps(m0, x + j), v1 = _mm512_maskz_loadu_ps(m1, x + j + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float step = amax > 0 ? amax / 127.0f : 1.0f;
    const __m512 inv = _mm512_set1_ps(1.0f / step);
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(t.q.data() + j), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(t.q.data() + j + 16), _mm512_cvtepi32_epi8(q1));
    t.d[b] = step;
    t.xsum[std::min(b / per_group, w.groups - 1)] += step * float(_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)));
  }
}

void prepare_token(const PackedWeights& w, const float* x, TokenQ8& t, bool quads) {
  const int64_t blocks = w.kpad / kQ8Block;
  t.q.resize(w.kpad);
  t.d.resize(blocks);
  if (w.perm.empty()) {
    quantize_natural(w, x, t);
  } else {
    quantize_q8_blocks(w, x, t.q.data(), t.d.data());
    q8_group_sums(w, t.q.data(), t.d.data(), t.xsum);
  }
  if (w.container == 8 && w.groups == 1 && quads) {
    t.d_pairs.resize(size_t(blocks / 2 * 16));
    for (int64_t b = 0; b + 2 <= blocks; b += 2)
      for (int l = 0; l < 16; ++l) t.d_pairs[size_t(b * 8 + l)] = t.d[b + l / 8];
  }
  if (w.container == 4 && quads) {
    t.q_quads.resize(w.kpad);
    for (int64_t b = 0; b + 4 <= blocks; b += 4)
      for (int64_t j = 0; j < 4; ++j)
        for (int64_t i = 0; i < 16; ++i) {
          t.q_quads[b * kQ8Block + 16 * j + i] = t.q[(b + j) * kQ8Block + i];
          t.q_quads[b * kQ8Block + 64 + 16 * j + i] = t.q[(b + j) * kQ8Block + 16 + i];
        }
  }
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
  // Every step's blocks in one group (one group per row, or groups of a multiple of kStep blocks): one step, one
  // scale. Gathering kStep scales through block_group cost a quarter of the streaming rate (W8 per channel, decode:
  // 18.9 vs 23.9 GB/s for per-block scales).
  const bool one_group_per_step = w.groups == 1 || (w.group / kQ8Block) % kStep == 0;
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
    // One group per row, 8-bit codes: the row's step multiplies the finished sum, and each load's block steps come
    // from the token's d_pairs (6 instructions per 64 bytes instead of 13: W8 per channel decode, 2 threads, 0.9 GB of
    // weights: 26 -> 31 GB/s).
    const bool row_step = C == 8 && w.groups == 1;
    if (row_step) {
      for (; b + kStep <= blocks; b += kStep) {
        _mm_prefetch(reinterpret_cast<const char*>(row + kQ8Block * b) + kPrefetchBytes, _MM_HINT_T0);
        const __m512i v = _mm512_loadu_si512(row + kQ8Block * b);
#pragma GCC unroll 8
        for (int i = 0; i < MB; ++i) {
          const __m512i p =
              _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, _mm512_loadu_si512(tok[i].q.data() + kQ8Block * b));
          acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_loadu_ps(tok[i].d_pairs.data() + 8 * b), acc[i]);
        }
      }
#pragma GCC unroll 8
      for (int i = 0; i < MB; ++i) acc[i] = _mm512_mul_ps(acc[i], _mm512_set1_ps(sc[0]));
    }
    for (; b + kStep <= blocks; b += kStep) {
      _mm_prefetch(reinterpret_cast<const char*>(row + kBlockBytes * b * (C / 4)) + kPrefetchBytes, _MM_HINT_T0);
      const __m512i v = _mm512_loadu_si512(row + kBlockBytes * b * (C / 4));
      // The row's block scales of this step, in the low lanes.
      __m128 s;
      if (per_block_scales) {
        s = C == 4 ? _mm_loadu_ps(sc + b) : _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(sc + b)));
      } else if (one_group_per_step) {
        s = _mm_set1_ps(sc[block_group[b]]);
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

// ---- Prefill: a GEMM on 16-row tiles ---------------------------------------------------------------------------
// The per-row kernel above keeps 16 lanes of one row and pays a conversion, a permute and an fma per 4 blocks and
// token to apply the block scales. With many tokens the rows are instead repacked, a tile of 16 rows and a panel of
// kPanelBlocks blocks at a time, into vectors whose lane i is row r0 + i:
//   panel[8 * (b - b0) + c] (64 bytes) = codes 4c .. 4c+3 of block b of each of the 16 rows, one byte per code.
// One vpdpbusd of such a vector against a token's activation codes 4c .. 4c+3 (one dword, broadcast) adds four
// products to each row's int32 lane, so a block's sum stays in the lanes: 8 vpdpbusd, then one conversion and one
// fma (the 16 rows' block steps x the token's step) per block and token, no horizontal sums. The panel (4 KiB) stays
// in L1 while every token runs over it; the repack is paid once per tile and panel, not per token.
// Repacking a block of 16 rows: source vectors Z_a (a = 0..3) take rows a, 4+a, 8+a, 12+a in their 128-bit lanes
// (16 bytes of the row's block: the 4-bit container's bytes, or the 8-bit container's codes 0..15 / 16..31); after the
// nibbles are split, the in-lane 4x4 dword transpose of (Z_0, Z_1, Z_2, Z_3) leaves dword d of each row's 16 codes
// in vector d, lane 4q + a = row 4q + a: rows in order, no further permute.
constexpr int kTileRows = 16;
constexpr int64_t kPanelBlocks = 8;
constexpr int kTileTokens = 8;
// Calls with at least this many tokens take the tile GEMM (measured on the 1B shape's 5504 x 2048 W4 g32, 2 threads:
// 4 tokens 0.32 ms per-row vs 0.41 tiled, 8 tokens 0.65 vs 0.55-0.61, 64 tokens 5.2 vs 2.9).
constexpr int64_t kTileMinTokens = 8;

inline __m512i load_rows4(const uint8_t* const* row, int a, int64_t offset) {
  __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row[a] + offset)));
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[4 + a] + offset)), 1);
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[8 + a] + offset)), 2);
  return _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[12 + a] + offset)), 3);
}

// out[d] = dword d of each 128-bit lane of z[0..3], lane a of each group of four taken from z[a].
inline void transpose4(const __m512i* z, __m512i* out) {
  const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpacklo_epi32(z[2], z[3]);
  const __m512i t2 = _mm512_unpackhi_epi32(z[0], z[1]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
  out[0] = _mm512_unpacklo_epi64(t0, t1);
  out[1] = _mm512_unpackhi_epi64(t0, t1);
  out[2] = _mm512_unpacklo_epi64(t2, t3);
  out[3] = _mm512_unpackhi_epi64(t2, t3);
}

// Blocks [b0, b1) of the tile's rows (row[i]: the codes of row r0 + i, the last row repeated past n) into `panel`.
template <int C>
void repack_panel(const uint8_t* const* row, int64_t b0, int64_t b1, __m512i* panel) {
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  for (int64_t b = b0; b < b1; ++b) {
    __m512i* out = panel + 8 * (b - b0);
    __m512i lo[4], hi[4];
    for (int a = 0; a < 4; ++a) {
      if constexpr (C == 4) {
        const __m512i z = load_rows4(row, a, kBlockBytes * b);
        lo[a] = _mm512_and_si512(z, nibble);
        hi[a] = _mm512_and_si512(_mm512_srli_epi16(z, 4), nibble);
      } else {
        lo[a] = load_rows4(row, a, kQ8Block * b);
        hi[a] = load_rows4(row, a, kQ8Block * b + 16);
      }
    }
    transpose4(lo, out);
    transpose4(hi, out + 4);
  }
}

using cpu::dpbusd_bcast;

// MB tokens over blocks [b0, b1) of one tile: y[i * ldy + r0 + lane] += Σ_b steps(b) · d_i(b) · Σ codes x q (the
// first panel starts from zero). st: the tile's steps per group, [groups][16].
template <int MB>
void tile_tokens(const __m512i* panel, int64_t b0, int64_t b1, const float* st, const int32_t* block_group,
                 const TokenQ8* tok, float* y, int64_t ldy, __mmask16 lanes, bool first) {
  __m512 acc[MB];
#pragma GCC unroll 8
  for (int i = 0; i < MB; ++i) acc[i] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(lanes, y + i * ldy);
  for (int64_t b = b0; b < b1; ++b) {
    const __m512i* wv = panel + 8 * (b - b0);
    __m512i p[MB];
#pragma GCC unroll 8
    for (int i = 0; i < MB; ++i) p[i] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      const __m512i v = _mm512_load_si512(wv + c);
#pragma GCC unroll 8
      for (int i = 0; i < MB; ++i)
        p[i] = dpbusd_bcast(p[i], v, tok[i].q.data() + kQ8Block * b + 4 * c);
    }
    const __m512 s = _mm512_load_ps(st + kTileRows * block_group[b]);
#pragma GCC unroll 8
    for (int i = 0; i < MB; ++i)
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[i]), _mm512_mul_ps(s, _mm512_set1_ps(tok[i].d[b])), acc[i]);
  }
#pragma GCC unroll 8
  for (int i = 0; i < MB; ++i) _mm512_mask_storeu_ps(y + i * ldy, lanes, acc[i]);
}

void tile_tokens_for(int mb, const __m512i* panel, int64_t b0, int64_t b1, const float* st, const int32_t* bg,
                     const TokenQ8* tok, float* y, int64_t ldy, __mmask16 lanes, bool first) {
  switch (mb) {
    case 1: return tile_tokens<1>(panel, b0, b1, st, bg, tok, y, ldy, lanes, first);
    case 2: return tile_tokens<2>(panel, b0, b1, st, bg, tok, y, ldy, lanes, first);
    case 3: return tile_tokens<3>(panel, b0, b1, st, bg, tok, y, ldy, lanes, first);
    case 4: return tile_tokens<4>(panel, b0, b1, st, bg, tok, y, ldy, lanes, first);
    case 5: return tile_tokens<5>(panel, b0, b1, st, bg, tok, y, ldy, lanes, first);
    case 6: return tile_tokens<6>(panel, b0, b1, st, bg, tok, y, ldy, lanes, first);
    case 7: return tile_tokens<7>(panel, b0, b1, st, bg, tok, y, ldy, lanes, first);
    default: return tile_tokens<8>(panel, b0, b1, st, bg, tok, y, ldy, lanes, first);
  }
}

// The tile GEMM: rows in tiles of 16 over the threads; per tile the steps and offset terms are transposed to
// [groups][16] once, then each panel is repacked and every token runs over it; the offset term (Σ_g off · Σx̂_g) and
// the bias close each token's 16 outputs.
// Tile t of the GEMM (rows 16t .. 16t + 15). st, ot: [groups][16] scratch (64-byte aligned); panel: 8 * kPanelBlocks
// vectors.
void gemm_tile(const PackedWeights& w, const TokenQ8* tok, int64_t m, const int32_t* block_group, float* y,
               const float* bias, int64_t t, float* st, float* ot, __m512i* panel) {
  const int64_t blocks = w.kpad / kQ8Block;
  const int64_t r0 = t * kTileRows, nr = std::min<int64_t>(kTileRows, w.n - r0);
  const __mmask16 lanes = _cvtu32_mask16((1u << nr) - 1u);
  const uint8_t* row[kTileRows];
  for (int i = 0; i < kTileRows; ++i) {
    const int64_t r = r0 + std::min<int64_t>(i, nr - 1);
    row[i] = w.codes.data() + r * w.row_bytes();
    const Q8RowOffsets off = q8_row_offsets(w, r);
    for (int64_t g = 0; g < w.groups; ++g) {
      st[g * kTileRows + i] = w.scales[r * w.groups + g];
      ot[g * kTileRows + i] = off.mul * off.off[g];
    }
  }
  for (int64_t b0 = 0; b0 < blocks; b0 += kPanelBlocks) {
    const int64_t b1 = std::min(blocks, b0 + kPanelBlocks);
    if (w.container == 4) repack_panel<4>(row, b0, b1, panel);
    else repack_panel<8>(row, b0, b1, panel);
    for (int64_t i0 = 0; i0 < m; i0 += kTileTokens)
      tile_tokens_for(int(std::min<int64_t>(kTileTokens, m - i0)), panel, b0, b1, st, block_group, tok + i0,
                      y + i0 * w.n + r0, w.n, lanes, b0 == 0);
  }
  const __m512 bv = bias != nullptr ? _mm512_maskz_loadu_ps(lanes, bias + r0) : _mm512_setzero_ps();
  for (int64_t i = 0; i < m; ++i) {
    float* yi = y + i * w.n + r0;
    const float* xs = tok[i].xsum.data();
    // Four independent sums over the groups (one fma chain would wait on its latency for every group).
    __m512 z[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t g = 0;
    for (; g + 4 <= w.groups; g += 4)
      for (int j = 0; j < 4; ++j)
        z[j] = _mm512_fmadd_ps(_mm512_load_ps(ot + (g + j) * kTileRows), _mm512_set1_ps(xs[g + j]), z[j]);
    for (; g < w.groups; ++g) z[0] = _mm512_fmadd_ps(_mm512_load_ps(ot + g * kTileRows), _mm512_set1_ps(xs[g]), z[0]);
    const __m512 zt = _mm512_add_ps(_mm512_add_ps(z[0], z[1]), _mm512_add_ps(z[2], z[3]));
    _mm512_mask_storeu_ps(yi, lanes, _mm512_sub_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(lanes, yi), bv), zt));
  }
}

// The tile GEMM: tiles of 16 rows over the threads; per tile the steps and offset terms are transposed to
// [groups][16] once, then each panel is repacked and every token runs over it; the offset term (Σ_g off · Σx̂_g) and
// the bias close each token's 16 outputs. The parallel region holds no vector code itself (clang, which builds the
// fuzz targets, outlines it into a function without this file's target attributes).
void gemm_tiles(const PackedWeights& w, const TokenQ8* tok, int64_t m, const int32_t* block_group, float* y,
                const float* bias) {
  const int64_t tiles = (w.n + kTileRows - 1) / kTileRows;
#pragma omp parallel if (w.n * w.k * m >= kParallelMinMacs)
  {
    std::vector<uint8_t> scratch(2 * (kTileRows * w.groups + 16) * sizeof(float) + 64 * 8 * kPanelBlocks + 64);
    // 64-byte aligned views for the aligned loads: the panel, then the steps and offsets.
    uint8_t* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) & ~uintptr_t(63));
    auto* panel = reinterpret_cast<__m512i*>(base);
    float* st = reinterpret_cast<float*>(base + 64 * 8 * kPanelBlocks);
    float* ot = st + kTileRows * w.groups + 16;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) gemm_tile(w, tok, m, block_group, y, bias, t, st, ot, panel);
  }
}

}  // namespace

void linear_q8_avx512_vnni(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  if (w.container == 2) return linear_q8_avx2(w, x, m, y, bias);
  thread_local std::vector<TokenQ8> tok;
  thread_local std::vector<int32_t> block_group;
  if (int64_t(tok.size()) < m) tok.resize(m);
  const bool tiles = m >= kTileMinTokens;
  TokenQ8* tw = tok.data();  // thread_local: the worker threads must not name `tok`
#pragma omp parallel for schedule(static) if (m >= kTileMinTokens)
  for (int64_t i = 0; i < m; ++i) prepare_token(w, x + i * w.k, tw[i], !tiles);
  q8_block_groups(w, block_group);
  if (tiles) return gemm_tiles(w, tok.data(), m, block_group.data(), y, bias);
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
