// Shared pieces of the activation methods (lib/algorithms/{smoothquant,fptq,outliertune,mergequant}.cpp), and the
// methods' entry points the table in migration.cpp lists. Internal to lib/algorithms.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "algorithms/migration.h"
#include "transforms/fold.h"

namespace ptq::migration_detail {

FoldPoint fold_point_of(ActPoint p);
// max over the point's consumers of |W[:, j]|, [in].
at::Tensor weight_col_absmax(const ModelConfig& cfg, const LayerWeights& w, ActPoint p);
// o_proj's input has n_heads·hd channels; VToO takes a factor per v channel (n_kv_heads·hd), shared by the
// n_rep query heads reading it: the largest of their values. Other points: unchanged.
at::Tensor to_fold_width(const ModelConfig& cfg, ActPoint p, const at::Tensor& per_input);
// The factor fold_input_scale gets; dead channels (0) and non-finite values become 1 (nothing moves).
at::Tensor safe_factor(const at::Tensor& s);
// fold_input_scale at the point with a per-input factor, recorded in plan.folded.
void fold(const ModelConfig& cfg, LayerWeights& w, ActPoint p, const at::Tensor& per_input, PointPlan& plan,
          const std::string& what);
// Per-channel steps Δ_j = absmax_j / qmax folded: the consumers then see integer units (per-tensor scale = clip).
void fold_steps(const ModelConfig& cfg, LayerWeights& w, ActPoint p, const at::Tensor& absmax, PointPlan& plan,
                const std::string& what);

void apply_smoothquant(const ModelConfig& cfg, LayerWeights& w, const LayerStats& stats, const MigrationSettings& s,
                       LayerPlan& plan);
void apply_fptq(const ModelConfig& cfg, LayerWeights& w, const LayerStats& stats, const MigrationSettings& s,
                LayerPlan& plan);
void apply_outliertune(const ModelConfig& cfg, LayerWeights& w, const LayerStats& stats, const MigrationSettings& s,
                       LayerPlan& plan);
void apply_mergequant(const ModelConfig& cfg, LayerWeights& w, const LayerStats& stats, const MigrationSettings& s,
                      LayerPlan& plan);

}  // namespace ptq::migration_detail
