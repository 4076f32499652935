// OutlierTune (arXiv 2406.18832; ALGORITHMS.md): symmetrization z_j = mean over windows of (max_t + min_t)/2
// folded as a producer shift and consumer bias; per-channel steps from statistics clipped to stat_clip x the
// tensor range, folded into the weights (pre-execution of dequantization). o/down: the recipe marks them dynamic.
#include "algorithms/migration_detail.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

namespace ptq::migration_detail {

void apply_outliertune(const ModelConfig& cfg, LayerWeights& w, const LayerStats& stats, const MigrationSettings& s,
                       LayerPlan& plan) {
  for (ActPoint p : {ActPoint::Attn, ActPoint::Mlp}) {
    const int i = static_cast<int>(p);
    if (!stats[i].defined() || act_point_consumers(cfg, p).empty()) continue;
    if (plan[i].spec.granularity == ActGranularity::PerToken) continue;  // forced dynamic by the recipe
    at::Tensor mn = stats[i].min, mx = stats[i].max;
    if (s.symmetrize) {
      const at::Tensor z = stats[i].midrange_mean.to(at::kFloat);
      add_input_shift(cfg, w, fold_point_of(p), z);
      plan[i].folded.push_back("outliertune symmetrization shift z (producer bias -z, consumer bias +Wz)");
      mn = mn - z;
      mx = mx - z;
    }
    // Statistics after clipping X to stat_clip × the tensor's [min, max].
    const double lo = s.stat_clip * mn.min().item<double>(), hi = s.stat_clip * mx.max().item<double>();
    const at::Tensor absmax = at::maximum(mn.clamp(lo, hi).abs(), mx.clamp(lo, hi).abs());
    fold_steps(cfg, w, p, absmax, plan[i],
               fmt::format("outliertune per-channel steps (stats clipped to {} x range) folded into weights",
                           s.stat_clip));
  }
}

}  // namespace ptq::migration_detail
