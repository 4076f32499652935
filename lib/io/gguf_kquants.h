// ggml's super-block "K-quants" (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: 256 weights per block) and the 32-weight Q5_0 / Q5_1
// blocks llama-quantize falls back to, with ggml's two roundings, byte for byte as llama.cpp writes them:
//   *_ref        quantize_row_*_ref of ggml-quants.c: what llama-quantize writes without an importance matrix;
//   quantize_*   quantize_*(src, dst, nrow, n_per_row, quant_weights) of ggml-quants.c: with quant_weights (one
//                importance per column, llama-quantize --imatrix: Σx² / tokens) the weighted search
//                (make_qkx3_quants / make_qp_quants / make_qx_quants with weights); without, the _ref rounding.
// Written from llama.cpp's ggml/src/ggml-quants.c (MIT; the version node-llama-cpp 3.22.1 bundles, which
// scripts/check_gguf_kquants.sh compares against). Every float operation is in ggml's order, on fp32: the file is
// compiled with -ffp-contract=off (CMakeLists.txt) because ggml's libggml-base is built for baseline x86-64, where
// no a*b+c is fused; a contracted FMA rounds once instead of twice and changes codes.
// LibTorch-free (ptq_base). Rows are n_per_row floats, n_per_row a multiple of the block size; x finite (callers
// check: ggml_encode in gguf.h).
#pragma once

#include <cstdint>

namespace ptq {

constexpr int kQK_K = 256;  // weights per K-quant super-block

// Layouts are ggml-common.h's. Element e of a super-block; every fp16 is IEEE half (stored as its bits).
//
// Q2_K (84 bytes, 2.625 bits/weight): 16 sub-blocks of 16, x̂ = d * (scales[s] & 15) * q - dmin * (scales[s] >> 4),
//   q in 0..3, s = e / 16. qs[32 * h + l] holds, for h = e / 128 and l = e % 32, the codes of elements
//   128h + l, +32, +64, +96 in bits 0-1, 2-3, 4-5, 6-7.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];  // low nibble: scale code, high nibble: min code
  uint8_t qs[kQK_K / 4];
  uint16_t d, dmin;            // fp16 super-block scales of the scale and min codes
};
// Q3_K (110 bytes, 3.4375 bits): 16 sub-blocks of 16, x̂ = d * (sc[s] - 32) * (q - 4), q in 0..7. Low two bits in qs as
//   Q2_K; the high bit of element e in hmask[e % 32], bit e / 32 (set: q >= 4). The 6-bit codes sc[s]: low nibble in
//   scales[s] (s < 8) or the high nibble of scales[s - 8], top two bits in scales[8 + s % 4] at bit 2 * (s / 4).
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  uint16_t d;  // fp16
};
// Q4_K (144 bytes, 4.5 bits): 8 sub-blocks of 32, x̂ = d * sc[s] * q - dmin * m[s], q in 0..15, 6-bit sc/m packed in
//   scales[12] (get_scale_min_k4: s < 4: sc = scales[s] & 63, m = scales[s + 4] & 63; s >= 4: low nibbles in
//   scales[s + 4], top two bits in the high bits of scales[s - 4] (sc) and scales[s] (m)). qs[32 * p + l], p = e / 64:
//   element 64p + l in the low nibble, 64p + 32 + l in the high nibble.
struct BlockQ4_K {
  uint16_t d, dmin;  // fp16
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
// Q5_K (176 bytes, 5.5 bits): Q4_K plus a fifth bit: element 64p + l has it in qh[l] bit 2p, 64p + 32 + l in bit 2p + 1.
struct BlockQ5_K {
  uint16_t d, dmin;  // fp16
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
// Q6_K (210 bytes, 6.5625 bits): 16 sub-blocks of 16, x̂ = d * scales[s] * (q - 32), q in 0..63, scales int8. For
//   h = e / 128, l = e % 32, quarter t = (e % 128) / 32: low nibble of q in ql[64h + l + 32 (t & 1)] (low nibble for
//   t < 2, high for t >= 2), high two bits in qh[32h + l] at bit 2t.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;  // fp16
};
// Q5_0 (22 bytes): x̂ = (q - 16) * d, q in 0..31; low nibbles as Q4_0 (element j in qs[j] low, j + 16 in qs[j] high),
//   fifth bit of element j in bit j of the little-endian u32 qh.
struct BlockQ5_0 {
  uint16_t d;  // fp16
  uint8_t qh[4];
  uint8_t qs[16];
};
// Q5_1 (24 bytes): x̂ = q * d + m, q in 0..31; bits as Q5_0.
struct BlockQ5_1 {
  uint16_t d, m;  // fp16
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ2_K) == 84, "block_q2_K is 16 + 64 + 2 + 2 bytes");
static_assert(sizeof(BlockQ3_K) == 110, "block_q3_K is 32 + 64 + 12 + 2 bytes");
static_assert(sizeof(BlockQ4_K) == 144, "block_q4_K is 2 + 2 + 12 + 128 bytes");
static_assert(sizeof(BlockQ5_K) == 176, "block_q5_K is 2 + 2 + 12 + 32 + 128 bytes");
static_assert(sizeof(BlockQ6_K) == 210, "block_q6_K is 128 + 64 + 16 + 2 bytes");
static_assert(sizeof(BlockQ5_0) == 22, "block_q5_0 is 2 + 4 + 16 bytes");
static_assert(sizeof(BlockQ5_1) == 24, "block_q5_1 is 2 + 2 + 4 + 16 bytes");

// Reference rounding (quantize_row_*_ref), k values (a multiple of the block size).
void quantize_row_q2_K_ref(const float* x, BlockQ2_K* y, int64_t k);
void quantize_row_q3_K_ref(const float* x, BlockQ3_K* y, int64_t k);
void quantize_row_q4_K_ref(const float* x, BlockQ4_K* y, int64_t k);
void quantize_row_q5_K_ref(const float* x, BlockQ5_K* y, int64_t k);
void quantize_row_q6_K_ref(const float* x, BlockQ6_K* y, int64_t k);
void quantize_row_q5_0_ref(const float* x, BlockQ5_0* y, int64_t k);
void quantize_row_q5_1_ref(const float* x, BlockQ5_1* y, int64_t k);

// ggml's quantize_<type>: nrow rows of n_per_row values into consecutive rows of blocks; quant_weights (n_per_row
// values, shared by every row) selects the importance-weighted search, nullptr the reference rounding. Q4_0 / Q4_1
// are here for their weighted path (their _ref rounding is in gguf.h).
void quantize_q2_K(const float* src, void* dst, int64_t nrow, int64_t n_per_row, const float* quant_weights);
void quantize_q3_K(const float* src, void* dst, int64_t nrow, int64_t n_per_row, const float* quant_weights);
void quantize_q4_K(const float* src, void* dst, int64_t nrow, int64_t n_per_row, const float* quant_weights);
void quantize_q5_K(const float* src, void* dst, int64_t nrow, int64_t n_per_row, const float* quant_weights);
void quantize_q6_K(const float* src, void* dst, int64_t nrow, int64_t n_per_row, const float* quant_weights);
void quantize_q5_0(const float* src, void* dst, int64_t nrow, int64_t n_per_row, const float* quant_weights);
void quantize_q5_1(const float* src, void* dst, int64_t nrow, int64_t n_per_row, const float* quant_weights);
void quantize_q4_0(const float* src, void* dst, int64_t nrow, int64_t n_per_row, const float* quant_weights);
void quantize_q4_1(const float* src, void* dst, int64_t nrow, int64_t n_per_row, const float* quant_weights);

// Dequantizers (dequantize_row_* of ggml-quants.c, same float operations).
void dequantize_row_q2_K(const BlockQ2_K* x, float* y, int64_t k);
void dequantize_row_q3_K(const BlockQ3_K* x, float* y, int64_t k);
void dequantize_row_q4_K(const BlockQ4_K* x, float* y, int64_t k);
void dequantize_row_q5_K(const BlockQ5_K* x, float* y, int64_t k);
void dequantize_row_q6_K(const BlockQ6_K* x, float* y, int64_t k);
void dequantize_row_q5_0(const BlockQ5_0* x, float* y, int64_t k);
void dequantize_row_q5_1(const BlockQ5_1* x, float* y, int64_t k);

}  // namespace ptq

namespace ptq {

enum class GgmlType : uint32_t;  // io/gguf.h

// ---- a row of blocks as a grid (GPTQ on GGUF's grids: algorithms/gptq.h gptq_ggml_quantize) --------------------------
// Every block type puts element e of a row on the affine grid of its sub-block s = e / sub: x̂ = a[s] * c + b[s], c an
// integer code in [lo, hi], in exactly dequantize_row_*'s float operations (b = 0 for the types without a min; ggml's
// "d1 * q - m1" is "a * c + b" with b = -m1, the same IEEE result). Codes are the stored values re-centred:
//   Q4_0 c = q - 8 in [-8, 7]; Q5_0 q - 16 in [-16, 15]; Q8_0 qs in [-127, 127] (ggml never writes -128: llama.cpp's
//   AVX2 dot product takes |qs| with _mm256_sign_epi8, which leaves -128 negative); Q3_K q - 4 in [-4, 3];
//   Q6_K q - 32 in [-32, 31]; Q4_1, Q5_1, Q2_K, Q4_K, Q5_K: q itself, from 0.
struct GgmlGridTraits {
  GgmlType type;
  int sub;     // elements per sub-block (one a, b)
  int lo, hi;  // code range
  bool min;    // b is a stored min (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K); without, x̂ = a * c (no "+ 0", which would turn a
               // -0 into +0)
};
// nullptr for a type without blocks (F32, F16, BF16).
const GgmlGridTraits* ggml_grid_traits(GgmlType t);
// a and b of each of the n / sub sub-blocks of one row of n values stored as blocks of type t.
void ggml_row_grid(GgmlType t, const uint8_t* row, int64_t n, float* a, float* b);
// The n codes of a row; and a row whose codes are replaced by `codes` (each in [lo, hi]), scales and mins kept.
void ggml_row_codes(GgmlType t, const uint8_t* row, int64_t n, int8_t* codes);
void ggml_row_set_codes(GgmlType t, uint8_t* row, int64_t n, const int8_t* codes);
// Rounds n values x[i] onto their grids (a[i], b[i]): c = clamp(nearest((x - b) / a), lo, hi), ties to even as ggml's
// nearest_int (c = 0 where a == 0: every code gives b), and x̂ = a * c + b as the dequantizer computes it.
void ggml_round_to_grid(const GgmlGridTraits& g, const float* x, const float* a, const float* b, int64_t n,
                        int8_t* codes, float* xhat);

}  // namespace ptq
