#include "algorithms/migration.h"
#include "algorithms/migration_detail.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/error.h"
#include "transforms/fold.h"

namespace ptq {

namespace migration_detail {

FoldPoint fold_point_of(ActPoint p) {
  switch (p) {
    case ActPoint::Attn: return FoldPoint::AttnNorm;
    case ActPoint::O: return FoldPoint::VToO;
    case ActPoint::Mlp: return FoldPoint::MlpNorm;
    case ActPoint::Down: return FoldPoint::UpToDown;
  }
  return FoldPoint::AttnNorm;
}

// max over the consumers of |W[:, j]|, [in].
at::Tensor weight_col_absmax(const ModelConfig& cfg, const LayerWeights& w, ActPoint p) {
  at::Tensor m;
  for (LinearId id : act_point_consumers(cfg, p)) {
    const at::Tensor c = std::get<0>(w[id].weight.abs().max(0));
    m = m.defined() ? at::maximum(m, c) : c;
  }
  return m;
}

// o_proj's input has n_heads·hd channels; VToO takes a factor per v channel (n_kv_heads·hd), shared by the
// n_rep query heads reading it: the largest of their values.
at::Tensor to_fold_width(const ModelConfig& cfg, ActPoint p, const at::Tensor& per_input) {
  if (p != ActPoint::O || cfg.n_rep() == 1) return per_input;
  return std::get<0>(per_input.view({cfg.n_kv_heads, cfg.n_rep(), cfg.head_dim}).max(1)).reshape({-1});
}

// The factor fold_input_scale gets; dead channels (0) and non-finite values become 1 (nothing moves).
at::Tensor safe_factor(const at::Tensor& s) {
  return at::where(at::isfinite(s) & (s > 0), s, at::ones_like(s)).to(at::kFloat);
}

void fold(const ModelConfig& cfg, LayerWeights& w, ActPoint p, const at::Tensor& per_input, PointPlan& plan,
          const std::string& what) {
  fold_input_scale(cfg, w, fold_point_of(p), safe_factor(to_fold_width(cfg, p, per_input)));
  plan.folded.push_back(what);
}

// Per-channel steps Δ_j = absmax_j / qmax, folded: the consumers then see integer units.
void fold_steps(const ModelConfig& cfg, LayerWeights& w, ActPoint p, const at::Tensor& absmax, PointPlan& plan,
                const std::string& what) {
  const at::Tensor delta = absmax.to(at::kFloat) / float(plan.spec.qmax());
  fold(cfg, w, p, delta, plan, what);
  plan.spec.granularity = ActGranularity::PerTensor;
  plan.unit_steps = true;
}

}  // namespace migration_detail

namespace {

using namespace migration_detail;

constexpr const char* kPointNames[] = {"attn", "o", "mlp", "down"};

void apply_none(const ModelConfig&, LayerWeights&, const LayerStats&, const MigrationSettings&, LayerPlan&) {}

const std::vector<MigrationMethod> kMethods = {
    {"none", "no rewrite: the recipe's activation scheme at every input (naive RTN baselines)", apply_none, true},
    {"smoothquant", "SmoothQuant migration s = max|X|^a / max|W|^(1-a) (Xiao et al. 2022)", apply_smoothquant, true},
    {"fptq", "FPTQ log equalization + layer-wise policy on max|X| (arXiv 2308.15987)", apply_fptq, true},
    {"outliertune", "OutlierTune symmetrization + folded per-channel steps; o/down dynamic (arXiv 2406.18832)",
     apply_outliertune, false},
    {"mergequant", "MergeQuant QSM + dimensional reconstruction, static per-channel W4A4 (arXiv 2503.07654)",
     apply_mergequant, false},
};

}  // namespace

const char* act_point_name(ActPoint p) { return kPointNames[static_cast<int>(p)]; }

std::optional<ActPoint> act_point_from_name(const std::string& name) {
  for (int i = 0; i < kNumActPoints; ++i)
    if (name == kPointNames[i]) return static_cast<ActPoint>(i);
  return std::nullopt;
}

ActPoint act_point_of(LinearId id) {
  switch (id) {
    case LinearId::Q:
    case LinearId::K:
    case LinearId::V: return ActPoint::Attn;
    case LinearId::O: return ActPoint::O;
    case LinearId::Gate:
    case LinearId::Up: return ActPoint::Mlp;
    case LinearId::Down: return ActPoint::Down;
  }
  return ActPoint::Attn;
}

std::vector<LinearId> act_point_consumers(const ModelConfig& cfg, ActPoint p) {
  std::vector<LinearId> out;
  for (int id = 0; id < kNumLinear; ++id)
    if (act_point_of(static_cast<LinearId>(id)) == p && *linear_module_name(cfg, static_cast<LinearId>(id)) != '\0')
      out.push_back(static_cast<LinearId>(id));
  return out;
}

bool is_first_consumer(const ModelConfig& cfg, LinearId id) {
  const std::vector<LinearId> c = act_point_consumers(cfg, act_point_of(id));
  return !c.empty() && c.front() == id;
}

const std::vector<MigrationMethod>& migration_methods() { return kMethods; }

const MigrationMethod& migration_method(std::string_view name) {
  for (const auto& m : kMethods)
    if (name == m.name) return m;
  fail_input("unknown activation method \"{}\" (known: {})", name, migration_method_names());
}

std::string migration_method_names() {
  std::string s;
  for (const auto& m : kMethods) s += (s.empty() ? "" : ", ") + std::string(m.name);
  return s;
}

}  // namespace ptq
