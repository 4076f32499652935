// QuaRot-style rotation of the residual stream (docs/ALGORITHMS.md "Hadamard rotation"): function-
// preserving rewrites of one decoder layer's fp32 weights and of the embedding / lm_head, for pre-norm RMSNorm
// models (llama, mistral, qwen2). The matrices come from random_hadamard (lib/model/hadamard.h).
//
// Why it is exact: once every norm's γ is folded into its consumers (γ = 1), RMSNorm(h·Q) = RMSNorm(h)·Q for
// orthogonal Q, because ‖h·Q‖ = ‖h‖. So if the embedding emits h·Q, the residual stream stays h·Q through every
// layer when each input-side linear (q, k, v, gate, up) reads x·Q with W ← W·Q (x·Q·(W·Q)ᵀ = x·Wᵀ) and each
// output-side linear (o, down) writes y·Q with W ← Qᵀ·W, b ← Qᵀ·b. The head reads RMSNorm(h·Q) = RMSNorm(h)·Q
// and undoes Q with lm_head ← (lm_head·diag(γ_final))·Q. Independently, down_proj's input can be rotated online
// by an orthogonal H (the forward computes down(mid·H), W_down ← W_down·H): that spreads the outliers of the
// MLP's intermediate activations, which no offline fold can reach past the SiLU·up product.
//
// Order for one model (the same Q for every layer and the I/O, H free per layer):
//   per layer: fold_norm_into_consumers, rotate_layer(Q), add_down_rotation(H);
//   embedding ← rotate_embedding(E, Q); lm_head ← rotate_head(lm_head, γ_final, Q); final norm γ ← 1.
// Tied embeddings become two different tensors (E·Q vs lm_head·diag(γ)·Q): write both.
//
// Precision: products are formed in double and rounded once to fp32 (as QuaRot's reference does in
// float64), in row blocks so the double copy stays small. Like fold.h, every function assigns new tensors and
// never writes into the old ones, so a shallow copy of a LayerWeights keeps the original values.
#pragma once

#include <ATen/core/Tensor.h>

#include "model/config.h"
#include "model/model.h"

namespace ptq {

// Throws std::invalid_argument with the reason unless `cfg` is a pre-norm RMSNorm model with
// embed_dim == hidden: LayerNorm's mean subtraction does not commute with a rotation (LayerNorm(h·Q) !=
// LayerNorm(h)·Q unless Q maps the all-ones direction to itself), and a post-norm's output is the residual
// stream itself, so its γ cannot move into consumers.
void check_rotation_supported(const ModelConfig& cfg);

// Both norms' γ into their consumers' columns (γ1 -> q, k, v; γ2 -> gate, up), γ set to ones. Any γ, signs and
// zeros included (nothing nonlinear sits between the norm's scale and the consumers). Refuses a norm with an
// index or a bias (channel splits and shifts from fold.h are applied after rotation, not before).
void fold_norm_into_consumers(const ModelConfig& cfg, LayerWeights& w);

// The residual stream of this layer becomes h·Q: W ← W·Q for q, k, v, gate, up; W ← Qᵀ·W and b ← Qᵀ·b for o and
// down. Q: orthogonal [hidden, hidden] (checked on probe vectors, relative error < 1e-3). Refuses norms whose γ is
// not exactly 1 (call fold_norm_into_consumers first), norms with an index or bias, and kernel modules.
void rotate_layer(const ModelConfig& cfg, LayerWeights& w, const at::Tensor& Q);

// Online rotation of down_proj's input: W_down ← W_down·H and w.down_rotation = H (or R·H if the layer already
// had a rotation R), so that the forward's down(mid·H) is unchanged. H: orthogonal [n, n], n = down's input
// width. Valid for every architecture (only linear maps sit between the rotation and down_proj).
void add_down_rotation(const ModelConfig& cfg, LayerWeights& w, const at::Tensor& H);

// E·Q for the token embedding E [vocab, hidden] (any float dtype); returns fp32.
at::Tensor rotate_embedding(const at::Tensor& embed, const at::Tensor& Q);

// lm_head·diag(γ) for lm_head [vocab, hidden] and the final norm's γ [hidden]; returns fp32. The final norm's
// γ must then be set to ones.
at::Tensor fold_final_norm_into_head(const at::Tensor& lm_head, const at::Tensor& gamma);

// (lm_head·diag(γ))·Q in one double pass: the head of a model whose residual stream is rotated by Q; the final
// norm's γ must then be set to ones. γ undefined: lm_head·Q (γ already folded, or a model without final norm γ).
at::Tensor rotate_head(const at::Tensor& lm_head, const at::Tensor& gamma, const at::Tensor& Q);

}  // namespace ptq
