// FPTQ (arXiv 2308.15987; ALGORITHMS.md): per input point, v = max|X|: v < v0 per-tensor static; v0 <= v <= v1
// logarithmic activation equalization s_j = max|X_j| / log2(2 + max|X_j|) folded, then per-tensor static;
// v > v1 per-token dynamic.
#include "algorithms/migration_detail.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

namespace ptq::migration_detail {

void apply_fptq(const ModelConfig& cfg, LayerWeights& w, const LayerStats& stats, const MigrationSettings& s,
                LayerPlan& plan) {
  for (int i = 0; i < kNumActPoints; ++i) {
    const ActPoint p = static_cast<ActPoint>(i);
    if (!stats[i].defined() || act_point_consumers(cfg, p).empty()) continue;
    const double v = stats[i].absmax.max().item<double>();
    if (v > s.v1) {
      plan[i].spec.granularity = ActGranularity::PerToken;
      plan[i].folded.push_back(fmt::format("fptq policy: max|X| {:.4g} > v1 {} -> per-token dynamic", v, s.v1));
      continue;
    }
    plan[i].spec.granularity = ActGranularity::PerTensor;
    if (v < s.v0) {
      plan[i].folded.push_back(fmt::format("fptq policy: max|X| {:.4g} < v0 {} -> per-tensor static", v, s.v0));
      continue;
    }
    const at::Tensor a = stats[i].absmax.to(at::kDouble);
    const at::Tensor lae = (a / at::log2(a + 2.0)).to(at::kFloat);
    fold(cfg, w, p, lae, plan[i],
         fmt::format("fptq log equalization (max|X| {:.4g} in [{}, {}]) -> per-tensor static", v, s.v0, s.v1));
  }
}

}  // namespace ptq::migration_detail
