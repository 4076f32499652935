#include "eval/kl_sensitivity.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/error.h"
#include "core/progress.h"
#include "eval/kl_divergence.h"
#include "model/model.h"
#include "pipeline/allocate.h"

namespace ptq {

void measure_kl_sensitivities(Model& model, const Recipe& recipe, const std::vector<std::vector<int32_t>>& windows,
                              SensitivityTable& table, int64_t batch) {
  if (windows.empty()) fail_input("--sensitivity-metric kl: no calibration windows");
  const ModelConfig& cfg = model.config();
  const int64_t n = static_cast<int64_t>(windows.size());
  const int64_t T = static_cast<int64_t>(windows[0].size());
  if (T < 2) fail_input("--sensitivity-metric kl: windows of {} tokens predict nothing", T);
  batch = std::max<int64_t>(1, batch);
  at::Tensor ids = at::empty({n, T}, at::kLong);
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<int64_t>(windows[i].size()) != T)
      fail_input("--sensitivity-metric kl: window {} has {} tokens, the first {}", i, windows[i].size(), T);
    std::copy(windows[i].begin(), windows[i].end(), ids.data_ptr<int64_t>() + i * T);
  }
  const bool probe_only = table.metric == "rtn-kl";  // one grid per unit (kl_probe_grid), else every candidate
  at::NoGradGuard no_grad;
  const ForwardContext ctx = make_forward_context(cfg, 0, T);
  // Layers first..end on h (one batch); `replaced` stands in for layer `first` when given.
  auto run_from = [&](int64_t first, const LayerWeights* replaced, at::Tensor h) {
    for (int64_t j = first; j < cfg.n_layers; ++j)
      h = decoder_layer_forward(cfg, j == first && replaced ? *replaced : model.layer(j), j, h, ctx, nullptr, nullptr);
    return h;
  };
  const at::Tensor embedded = model.embed(ids, 0);
  at::Tensor h_fp = at::empty_like(embedded);  // the FP model's last hidden states, all windows
  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    const int64_t nb = std::min(batch, n - b0);
    h_fp.narrow(0, b0, nb).copy_(run_from(0, nullptr, embedded.narrow(0, b0, nb)));
  }
  // The FP logits of each batch, kept when all of them fit in 1 GiB (fp32), else recomputed from h_fp per candidate.
  const bool keep_ref = static_cast<double>(n) * static_cast<double>(T) * static_cast<double>(cfg.vocab) * 4 <= 1 << 30;
  std::vector<at::Tensor> ref_logits;
  auto reference = [&](int64_t b0, int64_t nb) {
    if (keep_ref && static_cast<int64_t>(ref_logits.size()) > b0 / batch) return ref_logits[b0 / batch];
    at::Tensor r = model.head(h_fp.narrow(0, b0, nb)).narrow(1, 0, T - 1);
    if (keep_ref) ref_logits.push_back(r);
    return r;
  };
  at::Tensor h_in = embedded;  // hidden states entering layer `at`
  int64_t at_layer = 0;
  const double predicted = static_cast<double>(n * (T - 1));
  Progress progress("sensitivity (kl)", static_cast<int64_t>(table.units.size()), "units");
  for (size_t ui = 0; ui < table.units.size(); ++ui) {
    SensitivityUnit& u = table.units[ui];
    progress.update(static_cast<int64_t>(ui));
    if (u.layer < at_layer) fail_input("sensitivity table: unit {} is out of layer order", u.name);
    for (; at_layer < u.layer; ++at_layer)
      h_in = decoder_layer_forward(cfg, model.layer(at_layer), at_layer, h_in, ctx, nullptr, nullptr);
    const LayerWeights& fp = model.layer(u.layer);
    auto unit_kl = [&](const std::string& grid) {
      LayerWeights w = fp;  // tensor handles: the model's cached layer is not touched
      for (const SensitivityModule& m : u.modules) {
        const LinearId id = static_cast<LinearId>(m.linear);
        w[id].weight = rtn_candidate_weight(fp[id].weight, grid, recipe, m.module, at::Tensor());
      }
      double kl = 0;
      for (int64_t b0 = 0; b0 < n; b0 += batch) {
        const int64_t nb = std::min(batch, n - b0);
        const at::Tensor q = model.head(run_from(u.layer, &w, h_in.narrow(0, b0, nb))).narrow(1, 0, T - 1);
        kl += kl_divergence_sum(reference(b0, nb), q);
      }
      return std::max(kl / predicted, 0.0);  // fp64 round-off of a KL of ~0 may dip below it
    };
    u.error.clear();
    if (probe_only) {
      u.probe_grid = kl_probe_grid(u);
      u.probe_kl = unit_kl(u.grids[u.probe_grid]);
    } else {
      for (const std::string& grid : u.grids) u.error.push_back(unit_kl(grid));
    }
  }
  progress.finish();
  // The quantize driver loads its own copies layer by layer; the FP cache would only add the model's fp32 size.
  for (int64_t i = 0; i < cfg.n_layers; ++i) model.release_layer(i);
  table.flavor = fmt::format("{} windows x {} tokens", n, T);
}

}  // namespace ptq
