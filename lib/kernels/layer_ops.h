// The decoder's non-linear layer ops on raw pointers, as scalar CPU references (layer_ops_ref.cpp) for the CUDA
// twins of cuda/layer_ops_cuda.h; each follows lib/model/model.cpp's formula (apply_norm, apply_rope, the gated
// MLP, causal_attention with an F16 KV cache), with sums in double.
//
// Layouts (row-major fp32 activations):
//   x, y            [m, d]                       one row per token
//   q, k (RoPE)     [m, heads * head_dim]        token t, head h at t * heads * head_dim + h * head_dim
//   k_new, v_new    [m, kv_heads * head_dim]     the k_proj / v_proj outputs (k after RoPE)
//   k/v cache       [kv_heads][capacity][head_dim] fp16 bits (uint16): one layer of one sequence, position p of kv
//                   head g at (g * capacity + p) * head_dim (model.cpp's KVCache of kv type f16, for one batch row)
//   attention out   [m, heads * head_dim]        the o_proj input
// Token t of a call is at position past + t (attention) or positions[t] (RoPE).
//
// Left out (model.cpp has them, these ops do not): the ReLU and GELU activations and ungated MLPs, the F32 and int8 KV caches, batches of several sequences. model.cpp has no partial
// rotary dimensions and no rope scaling (config.cpp refuses rope_scaling), so neither is here.
#pragma once

#include <cstdint>

namespace ptq::kernels {

// One attention call's shape. Query head h reads kv head h / (heads / kv_heads) (model.cpp's GQA grouping).
struct AttentionDims {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  int64_t capacity = 0;  // positions the cache holds
  int64_t window = 0;    // sliding window (config sliding_window): a query at p reads keys p - window < j <= p; 0: all
};

// Throws std::invalid_argument (message starting with `who`) unless heads is a positive multiple of kv_heads,
// head_dim is positive and even, m >= 0, past >= 0, past + m <= capacity and window >= 0.
void check_attention_dims(const AttentionDims& a, int64_t m, int64_t past, const char* who);

// A norm's channel split (a fold's, lib/transforms/fold.h; MergeQuant's): the norm emits `width` columns, column j
// being normalized input column index[j] (int64, each in [0, d)), times gamma[j] (+ beta[j]); the statistics stay
// those of the d input columns (model.cpp's index_select before the weight). index null: no split, width d.
struct NormSplit {
  const int64_t* index = nullptr;
  int64_t width = 0;
};

// RMSNorm, y = float(x · 1/√(mean(x²) + eps)) · gamma (+ beta), per row; beta may be null (only folds give an RMSNorm
// a bias). y [m, d], or [m, split.width] with a split (gamma, beta then have split.width entries). x == y is allowed
// without a split.
void rms_norm_ref(const float* x, int64_t m, int64_t d, const float* gamma, float eps, float* y,
                  const float* beta = nullptr, const NormSplit& split = {});
// LayerNorm, y = float((x - mean) · 1/√(var + eps)) · gamma + beta, var the biased variance; beta may be null.
void layer_norm_ref(const float* x, int64_t m, int64_t d, const float* gamma, const float* beta, float eps, float* y);

// Rotary embedding in place, HF rotate-half: for i < head_dim / 2 and angle a = positions[t] / theta^(2i / head_dim)
// (in double, then cos and sin rounded to fp32), x_i' = x_i·cos - x_{i+half}·sin, x_{i+half}' = x_{i+half}·cos +
// x_i·sin (fp32). x [m, heads * head_dim]; head_dim even.
void rope_ref(float* x, int64_t m, int64_t heads, int64_t head_dim, const int64_t* positions, double theta);

// out = silu(gate) · up = gate / (1 + e^-gate) · up, elementwise (silu in double, rounded, then the fp32 product).
void swiglu_ref(const float* gate, const float* up, int64_t count, float* out);

// The residual add, y += x (count elements, fp32).
void add_ref(float* y, const float* x, int64_t count);

// Stores k_new, v_new [m, kv_heads * head_dim] at positions past .. past + m - 1 of the caches, rounded to fp16 (to
// nearest, ties to even: ptq::f32_to_fp16).
void kv_append_ref(const AttentionDims& a, const float* k_new, const float* v_new, int64_t m, int64_t past,
                   uint16_t* k_cache, uint16_t* v_cache);
// Causal GQA attention of the m queries q [m, heads * head_dim] at positions past .. past + m - 1 over cache
// positions 0 .. past + t (their keys already appended): scores q·k / √head_dim, softmax with the maximum
// subtracted, out [m, heads * head_dim] = Σ p·v. Everything in double, rounded once.
void attention_ref(const AttentionDims& a, const float* q, int64_t m, int64_t past, const uint16_t* k_cache,
                   const uint16_t* v_cache, float* out);

}  // namespace ptq::kernels
