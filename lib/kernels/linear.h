// The linear op of the runner: Y = X Wᵀ (+ b) over packed weights (packed_weights.h), fp32 activations and
// fp32 accumulation. One entry point for decode (m = 1: a GEMV streaming the weights once) and prefill
// (m > 1: rows dequantized into an fp32 panel once, reused by every token).
#pragma once

#include <cstdint>

#include "kernels/cpu_features.h"
#include "kernels/packed_weights.h"

namespace ptq::kernels {

// Calls with up to this many tokens run a GEMV (weights read once, decoded in registers for every token); longer
// ones the panel GEMM. linear_q8 is a GEMV only: the runner sends longer inputs to linear.
constexpr int64_t kGemvMaxTokens = 4;

// y[i, r] = Σ_c x[i, c] · W[r, c] + bias[r] for i < m; x row-major [m, w.k], y row-major [m, w.n]; bias may
// be null. Runs on the best instruction set (best_isa()) with OpenMP threads over output rows.
void linear(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias = nullptr);
// The same on a given instruction set; Isa::Ref is linear_ref. Throws when the CPU lacks it.
void linear_isa(Isa isa, const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias = nullptr);
// Scalar reference twin: each weight dequantized as W[r, c] = scale * q - offset, dot products in double.
void linear_ref(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias = nullptr);

// ---- Activations rounded to int8 (llama.cpp's Q8_0 dot) -----------------------------------------------------
// For quantized weights: each token's activations (in kernel order) are rounded per block of 32 to int8 codes
// with one fp32 step d = max|x| / 127 (x̂ = d · round(x / d)), and the products run on integers (u8 weight codes
// x s8 activation codes, exact int32 block sums), then y = Σ_blocks d_x · s_w · isum − offset · Σ x̂. The result
// is the exact product with x̂ instead of x: faster on every CPU (4x fewer vector instructions than fp32 for
// 4-bit codes), at the cost of rounding activations to 8 bits. Off for `eval` by default (lib/runtime).
constexpr int64_t kQ8Block = 32;
// Whether linear_q8 takes this layout: quantized weights whose groups are whole 32-column blocks (or one group
// per row). Others (and float weights) go through linear().
bool q8_supports(const PackedWeights& w);
void linear_q8(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias = nullptr);
// The most tokens per call for which linear_q8 is faster than linear() on this CPU (best_isa()): any number on
// AVX-512 VNNI (its int8 tile GEMM: 214 tok/s prefill on the 1B shape's W4 g32, 2 threads, `ptq bench --prompt 64`,
// where the fp32 panel GEMM gave 41 and the per-row int8 kernel 110), kGemvMaxTokens elsewhere (the AVX2 kernel is a
// GEMV; the panel GEMM wins at prefill: 33 vs 37 tok/s there).
int64_t q8_max_tokens();
void linear_q8_isa(Isa isa, const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias = nullptr);
// Scalar twin: the same rounding of x (quantize_q8_blocks), then double-precision dot products with x̂.
void linear_q8_ref(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias = nullptr);
// Rounds x[perm[j]] (j < kpad, zero past k) per block of 32 into codes q[kpad] and steps d[kpad / 32]: d = max|x| /
// 127 over the block (1 for an all-zero block), q = nearbyint(x / d). Shared by the kernels and the reference.
void quantize_q8_blocks(const PackedWeights& w, const float* x, int8_t* q, float* d);

// Whether the vector kernels take this layout: quantized groups must be a multiple of 16 columns (one vector)
// or a single group per row; other layouts run on linear_ref (correct, slow).
bool vector_kernel_supports(const PackedWeights& w);

}  // namespace ptq::kernels
