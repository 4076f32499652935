// What one CUDA thread of the linear kernels computes, as functions compiled both by nvcc (for the kernels in
// linear.cu) and by the host compiler (for their emulation in tests/kernels/test_cuda_linear.cpp, which runs
// them over every (row, lane) of a launch on the CPU, so the decoding and indexing of each kernel are tested where
// no GPU is present).
//
// Weights are packed_weights.h's layout, copied to the device unchanged. A lane decodes one chunk at a time into
// registers: for quantized weights one 16-byte block of codes (16, 32 or 64 codes for 8-, 4- and 2-bit containers;
// code i in byte i % 16 at bits c * (i / 16)), for float weights kFloatChunk elements. Activations are read in
// kernel column order from xp [m, xp_width] (x gathered by perm and zero-padded to xp_width by gather_x), so a
// chunk's columns are consecutive in both.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/half.h"
#include "core/host_device.h"
#include "kernels/cuda/mma_layout.h"
#include "kernels/packed_weights.h"

namespace ptq::kernels::cuda {

constexpr int kFloatChunk = 8;

// WeightKind as an int, for device code.
constexpr int kKindF32 = int(WeightKind::F32), kKindF16 = int(WeightKind::F16), kKindBF16 = int(WeightKind::BF16),
              kKindQuant = int(WeightKind::Quant);

struct WeightsView {
  int kind = kKindF32;
  int bits = 0, container = 0;
  int64_t n = 0, k = 0, kpad = 0, group = 1, groups = 1;
  const uint32_t* codes = nullptr;  // [n][kpad * container / 32] words (blocks of 4 words)
  const float* scales = nullptr;    // [n][groups]
  const float* offsets = nullptr;   // [n][groups] or null (symmetric: offset = scale * 2^(bits-1))
  const void* data = nullptr;       // float kinds: [n, k]
};

// The view of weights W (PackedWeights on the host, DeviceWeights on the device: the same fields) whose codes,
// scales, offsets (null: symmetric) and float data lie at the given addresses.
template <class W>
WeightsView make_view(const W& w, const uint32_t* codes, const float* scales, const float* offsets, const void* data) {
  const bool quant = w.kind == WeightKind::Quant;
  WeightsView v;
  v.kind = int(w.kind);
  v.bits = w.bits;
  v.container = w.container;
  v.n = w.n;
  v.k = w.k;
  v.kpad = w.kpad;
  v.group = quant ? w.group : 1;
  v.groups = quant ? w.groups : 1;
  v.codes = codes;
  v.scales = scales;
  v.offsets = offsets;
  v.data = data;
  return v;
}

// Columns of x as the kernels read it: kpad for quantized weights, k rounded up to kFloatChunk for float ones.
PTQ_HD int64_t xp_width(const WeightsView& w) {
  return w.kind == kKindQuant ? w.kpad : (w.k + kFloatChunk - 1) / kFloatChunk * kFloatChunk;
}
PTQ_HD int chunk_width(const WeightsView& w) { return w.kind == kKindQuant ? 16 * (8 / w.container) : kFloatChunk; }
PTQ_HD int64_t row_chunks(const WeightsView& w) { return xp_width(w) / chunk_width(w); }

PTQ_HD float float_weight(const WeightsView& w, int64_t idx) {
  if (w.kind == kKindF32) return static_cast<const float*>(w.data)[idx];
  const uint16_t h = static_cast<const uint16_t*>(w.data)[idx];
  return w.kind == kKindF16 ? fp16_to_f32(h) : bf16_to_f32(h);
}

PTQ_HD float group_offset(const WeightsView& w, int64_t r, int64_t g, float s) {
  return w.offsets != nullptr ? w.offsets[r * w.groups + g] : mul_rn(s, float(1 << (w.bits - 1)));
}

// Code i of a 16-byte block held as four little-endian words.
PTQ_HD int block_code(const uint32_t* words, int container, int i) {
  const int byte = i % 16, shift = 8 * (byte % 4) + container * (i / 16);
  return int((words[byte / 4] >> shift) & ((1u << container) - 1u));
}

// W[r, j] for kernel column j (0 for float weights past k).
PTQ_HD float weight_at(const WeightsView& w, int64_t r, int64_t j) {
  if (w.kind != kKindQuant) return j < w.k ? float_weight(w, r * w.k + j) : 0.0f;
  const int cw = chunk_width(w);
  const uint32_t* block = w.codes + (r * (w.kpad / cw) + j / cw) * 4;
  const int64_t g = j < w.k ? j / w.group : w.groups - 1;
  const float s = w.scales[r * w.groups + g];
  return mul_rn(s, float(block_code(block, w.container, int(j % cw)))) - group_offset(w, r, g, s);
}

// Decodes chunk `c` of row r into out[0 .. CW) (weights of kernel columns c * CW + i); CW = chunk_width(w), a
// compile-time constant so `out` stays in registers (8: float weights; 16, 32, 64: 8-, 4-, 2-bit containers).
// `words` are the chunk's 16 bytes for quantized weights (loaded by the caller as one 16-byte access on the device),
// unused for float weights.
template <int CW>
PTQ_HD void decode_chunk(const WeightsView& w, int64_t r, int64_t c, const uint32_t* words, float* out) {
  constexpr int kContainer = CW == kFloatChunk ? 0 : 128 / CW;
  const int64_t j0 = c * CW;
  if constexpr (kContainer == 0) {
    for (int i = 0; i < CW; ++i) out[i] = j0 + i < w.k ? float_weight(w, r * w.k + j0 + i) : 0.0f;
  } else if (w.groups == 1 || w.group % CW == 0) {  // the chunk lies in one group
    const int64_t g = j0 < w.k ? j0 / w.group : w.groups - 1;
    const float s = w.scales[r * w.groups + g], o = group_offset(w, r, g, s);
    for (int i = 0; i < CW; ++i) out[i] = mul_rn(s, float(block_code(words, kContainer, i))) - o;
  } else {
    for (int i = 0; i < CW; ++i) {
      const int64_t j = j0 + i, g = j < w.k ? j / w.group : w.groups - 1;
      const float s = w.scales[r * w.groups + g];
      out[i] = mul_rn(s, float(block_code(words, kContainer, i))) - group_offset(w, r, g, s);
    }
  }
}

// The GEMV's work for one lane of the warp that owns row r (CW = chunk_width(w)): chunks lane, lane + lanes, ... of
// the row, each decoded once into registers and multiplied with every token's activations; acc[t] (t < m) receives
// the lane's partial sums.
template <int CW>
PTQ_HD void gemv_lane(const WeightsView& w, const float* xp, int m, int64_t r, int lane, int lanes, float* acc) {
  const int64_t chunks = row_chunks(w), xw = xp_width(w);
  float wv[CW];
  for (int64_t c = lane; c < chunks; c += lanes) {
    uint32_t words[4] = {0, 0, 0, 0};
    if constexpr (CW != kFloatChunk) {
      const uint32_t* p = w.codes + (r * chunks + c) * 4;
#if defined(__CUDA_ARCH__)
      const uint4 v = *reinterpret_cast<const uint4*>(p);
      words[0] = v.x, words[1] = v.y, words[2] = v.z, words[3] = v.w;
#else
      for (int i = 0; i < 4; ++i) words[i] = p[i];
#endif
    }
    decode_chunk<CW>(w, r, c, words, wv);
    for (int t = 0; t < m; ++t) {
      const float* xr = xp + t * xw + c * CW;
      float s = 0.0f;
      for (int i = 0; i < CW; ++i) s += wv[i] * xr[i];
      acc[t] += s;
    }
  }
}

// ---- tensor cores: the GEMM (m > 4 tokens) of F16, BF16 and quantized weights -----------------------------------------
//
// A block stages a 64-row weight tile and a 64-token activation tile, kHmmaTileK kernel columns at a time, in shared
// memory as fp16: weights decoded by weight_at and rounded to nearest fp16, activations rounded likewise (the one
// precision loss of this path: 2^-11 relative per operand; F32 weights keep the fp32 GEMM). Rows are padded to
// kHmmaStride halves, so the fragment reads of a warp hit 32 different banks. Each warp runs mma.sync m16n8k16
// (fp32 accumulation) over its 32 x 32 outputs (mma_layout.h).
constexpr int kHmmaTileK = 32, kHmmaStride = kHmmaTileK + 8;
static_assert(kMmaBlockRows == kMmaBlockTokens, "one staging loop fills both tiles");

PTQ_HD bool hmma_takes(const WeightsView& w) { return w.kind != kKindF32; }

// The staged tiles' elements: weight row r / token t at kernel column j, 0 past the matrix.
PTQ_HD uint16_t hmma_weight(const WeightsView& w, int64_t r, int64_t j, int64_t xw) {
  return r < w.n && j < xw ? f32_to_fp16(weight_at(w, r, j)) : uint16_t(0);
}
PTQ_HD uint16_t hmma_x(const float* xp, int64_t m, int64_t xw, int64_t t, int64_t j) {
  return t < m && j < xw ? f32_to_fp16(xp[t * xw + j]) : uint16_t(0);
}

// The halves at tile[row][col] and [col + 1] (col even) as one fragment register, the first in the low 16 bits.
PTQ_HD uint32_t tile_pair(const uint16_t* tile, int row, int col) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const uint32_t*>(tile + row * kHmmaStride + col);
#else
  return uint32_t(tile[row * kHmmaStride + col]) | (uint32_t(tile[row * kHmmaStride + col + 1]) << 16);
#endif
}

struct HmmaFragments {
  uint32_t a[2][4], b[4][2];
};
// A warp's fragments for the 16 columns from kk of the staged tiles; its rows start at tile row wr, its tokens at wt.
PTQ_HD void load_hmma_fragments(const uint16_t* ws, const uint16_t* xs, int wr, int wt, int kk, int lane,
                                HmmaFragments& f) {
  PTQ_UNROLL for (int i = 0; i < 2; ++i)
    PTQ_UNROLL for (int reg = 0; reg < 4; ++reg)
      f.a[i][reg] = tile_pair(ws, wr + 16 * i + mma_a_row(lane, reg), kk + hmma_a_col(lane, reg));
  PTQ_UNROLL for (int j = 0; j < 4; ++j)
    PTQ_UNROLL for (int reg = 0; reg < 2; ++reg)
      f.b[j][reg] = tile_pair(xs, wt + 8 * j + mma_b_col(lane), kk + hmma_b_row(lane, reg));
}

// y for the warp's outputs: rows r0 .., tokens t0 .. (global), plus the bias.
PTQ_HD void store_hmma_tile(const float (&acc)[2][4][4], int64_t n, int64_t m, int64_t r0, int64_t t0,
                            const float* bias, int lane, float* y) {
  PTQ_UNROLL for (int i = 0; i < 2; ++i)
    PTQ_UNROLL for (int j = 0; j < 4; ++j)
      PTQ_UNROLL for (int reg = 0; reg < 4; ++reg) {
        const int64_t r = r0 + 16 * i + mma_c_row(lane, reg), t = t0 + 8 * j + mma_c_col(lane, reg);
        if (r < n && t < m) y[t * n + r] = acc[i][j][reg] + (bias != nullptr ? bias[r] : 0.0f);
      }
}

// Calls f(std::integral_constant<int, chunk_width(w)>{}): one instantiation per chunk width (host code: the kernel
// launch and the host emulation pick the instance).
template <class F>
void with_chunk_width(const WeightsView& w, F&& f) {
  switch (chunk_width(w)) {
    case kFloatChunk: return f(std::integral_constant<int, kFloatChunk>{});
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
    default: return f(std::integral_constant<int, 64>{});
  }
}

}  // namespace ptq::kernels::cuda
