// Function-preserving rewrites of one decoder layer's fp32 weights: per-channel scales and shifts moved
// between a producer and its consumers (the folding table of docs/ALGORITHMS.md).
//
// Convention: the factor lives on the consumers' input channels, which are the producer's output channels.
// fold_input_scale makes the producer emit X / s and multiplies the consumers' columns by s
// (W[:, j] *= s_j), so X Wᵀ is unchanged in exact arithmetic. add_input_shift makes the producer emit
// X - z and adds W z to the consumers' biases. Both return new tensors (never write into the old ones),
// so a shallow copy of a LayerWeights keeps the original values.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "model/config.h"
#include "model/model.h"

namespace ptq {

enum class FoldPoint : uint8_t {
  AttnNorm,    // input_layernorm γ1 (and β) -> q, k, v. s[hidden], shared by the three consumers.
  MlpNorm,     // post_attention_layernorm γ2 (and β) -> gate, up (OPT: final_layer_norm -> fc1). s[hidden].
  VToO,        // v_proj rows and bias -> o_proj columns. s[n_kv_heads * head_dim] per v output channel;
               // o's input column h·hd + d reads kv head h / n_rep, so s is repeated n_rep times.
  UpToDown,    // up_proj rows and bias -> down_proj columns. s[ffn]. Gated MLPs (silu(gate)·up is linear
               // in up) and ReLU MLPs (relu(x/s) = relu(x)/s for s > 0); refused for GELU.
  QToK,        // q_proj rows ÷ s, k_proj rows × s: scores q·k unchanged. s[n_kv_heads * head_dim], repeated
               // onto the n_rep query heads. With RoPE only if s_i = s_{i+hd/2} in every head.
  GateToDown,  // never valid (SiLU is not homogeneous); present so that callers get the reason.
};

const char* fold_point_name(FoldPoint p);  // e.g. "input_layernorm->q,k,v"
// Length of the s or z vector that `p` takes for these weights: the consumers' input width (which a
// split_input_channels has widened).
int64_t fold_point_width(const ModelConfig& cfg, const LayerWeights& w, FoldPoint p);

// Producer output ÷ s, consumer columns × s. s: finite, > 0, length fold_point_width (any float dtype).
// Throws std::invalid_argument naming the point when the fold is not function-preserving for `cfg`
// (post-norm models for the norm points, GELU for UpToDown, RoPE with s_i != s_{i+hd/2}, GateToDown).
void fold_input_scale(const ModelConfig& cfg, LayerWeights& w, FoldPoint p, const at::Tensor& s);

// OutlierTune symmetrization: the producer's output shifts by -z (norm β -= z, introducing a norm bias for
// RMSNorm; v bias -= z), consumer bias += W z (introducing a bias where there is none). Valid at AttnNorm,
// MlpNorm (pre-norm models) and VToO (softmax rows sum to 1, so attention output shifts by exactly -z);
// refused elsewhere with the reason. z in the producer's current output coordinates.
void add_input_shift(const ModelConfig& cfg, LayerWeights& w, FoldPoint p, const at::Tensor& z);

// MergeQuant dimensional reconstruction: input channel channels[i] of the consumers becomes k[i] >= 2
// channels, each carrying X_j / k[i] with a duplicated weight column, so their sum is the original product.
// The copies are appended after the existing channels (in the order given), so existing channels keep their
// positions. The producer emits them: a norm through Norm::index (statistics over the original channels,
// γ and β gathered and ÷ k), up_proj (OPT fc1) by duplicated rows ÷ k with gate rows duplicated unchanged
// (silu(g)·u/k and relu(u/k) = relu(u)/k are linear in the split part). Valid at AttnNorm, MlpNorm and
// UpToDown; refused at VToO (attention reads v per head of head_dim channels) and QToK/GateToDown.
// Channels index the consumers' current input (after earlier splits); each may appear once.
void split_input_channels(const ModelConfig& cfg, LayerWeights& w, FoldPoint p, const std::vector<int64_t>& channels,
                          const std::vector<int64_t>& k);

// Pads the consumers' input with `extra` zero channels (appended), e.g. to a multiple of the weight group size or
// the kernel tile after a split (MergeQuant): the producer emits exact zeros there (a norm through its index with
// γ = β = 0; up_proj with zero rows), the consumers' columns are zero. Valid where splits are.
void pad_input_channels(const ModelConfig& cfg, LayerWeights& w, FoldPoint p, int64_t extra);

}  // namespace ptq
