// MergeQuant (arXiv 2503.07654; ALGORITHMS.md): static per-channel steps Δ_j = absmax_j / qmax folded at every
// point (QSM: 1/Δ into the producer — norm, v_proj, up_proj — Δ into the consumer columns), after dimensional
// reconstruction: channels with Δ_j > τ·median(Δ) split into ceil(Δ_j / (τ·median Δ)) copies (at most max_split).
// A widened input is padded with zero channels to a multiple of pad_to (the kernel tile / weight group).
// The clip ratio (adaptive clipping) is searched by the quantize driver on the calibration output error.
#include "algorithms/migration_detail.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

namespace ptq::migration_detail {

void apply_mergequant(const ModelConfig& cfg, LayerWeights& w, const LayerStats& stats, const MigrationSettings& s,
                      LayerPlan& plan) {
  for (int i = 0; i < kNumActPoints; ++i) {
    const ActPoint p = static_cast<ActPoint>(i);
    if (!stats[i].defined() || act_point_consumers(cfg, p).empty()) continue;
    if (plan[i].spec.granularity == ActGranularity::PerToken) continue;  // forced dynamic by the recipe
    at::Tensor absmax = stats[i].absmax.to(at::kFloat);
    if (p != ActPoint::O) {
      // Dimensional reconstruction: split channels whose criterion exceeds tau × its median. "step" (the paper's
      // rule): the activation step Δ_j ∝ absmax_j. "weight": the folded column's magnitude max_i |W_ij|·Δ_j, the
      // spread that actually reaches the per-row weight grid (see ALGORITHMS.md and the README's table notes).
      at::Tensor crit = absmax;
      if (s.split_on == "weight") crit = absmax * weight_col_absmax(cfg, w, p).to(at::kFloat);
      const at::Tensor live = crit.masked_select(crit > 0);
      const double med = live.numel() ? live.median().item<double>() : 0.0;
      std::vector<int64_t> channels, k;
      if (med > 0) {
        const at::Tensor cc = crit.contiguous();
        const auto* a = cc.data_ptr<float>();
        for (int64_t j = 0; j < crit.numel(); ++j) {
          const int64_t kj = std::min<int64_t>(s.max_split, static_cast<int64_t>(std::ceil(a[j] / (s.tau * med))));
          if (kj >= 2) {
            channels.push_back(j);
            k.push_back(kj);
          }
        }
      }
      if (!channels.empty()) {
        split_input_channels(cfg, w, fold_point_of(p), channels, k);
        // Each split channel now carries X_j / k_j, and so do its copies (appended in order).
        at::Tensor kt = at::ones_like(absmax);
        std::vector<float> extra;
        for (size_t c = 0; c < channels.size(); ++c) {
          kt[channels[c]] = float(k[c]);
          for (int64_t r = 1; r < k[c]; ++r) extra.push_back(absmax[channels[c]].item<float>() / float(k[c]));
        }
        absmax = at::cat({absmax / kt, at::tensor(extra, at::kFloat)});
        int64_t added = 0;
        for (int64_t kj : k) added += kj - 1;
        plan[i].folded.push_back(fmt::format("mergequant dimensional reconstruction: {} channels split (+{} inputs, "
                                             "tau {}, on {})", channels.size(), added, s.tau, s.split_on));
      }
      const int64_t width = absmax.numel();
      if (s.pad_to > 1 && width % s.pad_to != 0) {
        const int64_t extra = s.pad_to - width % s.pad_to;
        pad_input_channels(cfg, w, fold_point_of(p), extra);
        absmax = at::cat({absmax, at::zeros({extra}, at::kFloat)});
        plan[i].folded.push_back(fmt::format("padded with {} zero inputs to a multiple of {}", extra, s.pad_to));
      }
    }
    fold_steps(cfg, w, p, absmax, plan[i],
               p == ActPoint::O ? "mergequant QSM: 1/step in v_proj's epilogue, step in o_proj columns"
               : p == ActPoint::Down ? "mergequant QSM: 1/step in up_proj's epilogue, step in down_proj columns"
                                     : "mergequant QSM: 1/step in the norm, step in the consumer columns");
  }
}

}  // namespace ptq::migration_detail
