// SmoothQuant migration (Xiao et al. 2022, arXiv 2211.10438; ALGORITHMS.md): s_j = max|X_j|^α / max|W_j|^(1-α),
// both clamped >= 1e-5, max|W_j| over all consumers' column j, folded at the recipe's points.
#include "algorithms/migration_detail.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

namespace ptq::migration_detail {

void apply_smoothquant(const ModelConfig& cfg, LayerWeights& w, const LayerStats& stats, const MigrationSettings& s,
                       LayerPlan& plan) {
  for (const std::string& name : s.points) {
    const ActPoint p = *act_point_from_name(name);
    const int i = static_cast<int>(p);
    if (!stats[i].defined() || act_point_consumers(cfg, p).empty()) continue;
    const at::Tensor xa = to_fold_width(cfg, p, stats[i].absmax).clamp_min(1e-5).to(at::kDouble);
    const at::Tensor wa = to_fold_width(cfg, p, weight_col_absmax(cfg, w, p)).clamp_min(1e-5).to(at::kDouble);
    const at::Tensor factor = (xa.pow(s.alpha) / wa.pow(1.0 - s.alpha)).to(at::kFloat);
    fold_input_scale(cfg, w, fold_point_of(p), safe_factor(factor));
    plan[i].folded.push_back(fmt::format("smoothquant s (alpha {})", s.alpha));
  }
}

}  // namespace ptq::migration_detail
