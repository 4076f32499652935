#include "pipeline/allocate.h"

#include <regex>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "calibration/stats.h"
#include "core/bit_allocation.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/table.h"
#include "io/safetensors.h"
#include "io/gguf.h"
#include "io/gguf_kquants.h"
#include "model/model.h"
#include "quant/metrics.h"
#include "quant/quantizer.h"

namespace ptq {

namespace {

std::vector<WeightGrid> default_candidates(const Recipe& r) {
  std::vector<WeightGrid> c;
  for (int b : {2, 3, 4, 5, 6, 8}) c.push_back({b, r.weights.group_size, r.weights.sym});
  return c;
}

std::string regex_escape(const std::string& s) {
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  return std::regex_replace(s, special, R"(\$&)");
}

}  // namespace

void add_candidates(const std::vector<std::string>& names, bool gguf, AllocationOptions& opts, std::string_view what) {
  for (const auto& c : names) {
    if (!gguf) {
      opts.candidates.push_back(weight_grid(c, what));
      continue;
    }
    const auto t = ggml_type_from_name(c);
    if (!t || !ggml_grid_traits(*t))
      fail_input("{} {}: the recipe quantizes onto GGUF types; give ggml block types (q2_k, q4_k, q8_0, ...)", what, c);
    opts.gguf_candidates.push_back(*t);
  }
}

nlohmann::json AllocationReport::to_json() const {
  nlohmann::json mods = nlohmann::json::object();
  for (const auto& m : modules) {
    nlohmann::json choices = nlohmann::json::array();
    for (size_t i = 0; i < m.grids.size(); ++i)
      choices.push_back({{"grid", m.grids[i]}, {"bytes", m.bytes[i]}, {"error", m.error[i]}});
    mods[m.module] = {{"grid", m.grids[m.chosen]}, {"params", m.params}, {"choices", choices}};
  }
  nlohmann::json j = {{"target_bpw", target_bpw}, {"choices", gguf ? "ggml types" : "ptq grids"}, {"achieved_bpw", achieved_bpw}, {"budget_bytes", budget_bytes},
          {"bytes", bytes},           {"sensitivity", sensitivity},   {"solver", "lagrangian + greedy repair"},
          {"modules", mods}};
  if (target_bytes > 0) {
    j["target_bytes"] = target_bytes;
    j["fixed_bytes"] = fixed_bytes;
    j["size_bytes"] = size_bytes;
  }
  return j;
}

double checkpoint_fixed_bytes(const Model& model, const Recipe& recipe, const std::vector<std::string>& allocated) {
  const std::set<std::string> skip(allocated.begin(), allocated.end());
  const ModelConfig& cfg = model.config();
  std::set<std::string> linear;  // every linear module's path
  for (int64_t i = 0; i < cfg.n_layers; ++i)
    for (int id = 0; id < kNumLinear; ++id)
      if (const char* name = linear_module_name(cfg, static_cast<LinearId>(id)); *name != '\0')
        linear.insert(cfg.layer_module(i, name));
  const TensorArchive& archive = model.archive();
  double bytes = 0;
  for (const std::string& name : archive.names()) {
    const bool weight = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    const std::string module = weight ? name.substr(0, name.size() - 7) : "";
    if (skip.count(module)) continue;
    const TensorView v = archive.view(name);
    // A linear module outside the allocation that the recipe's plan quantizes (the same rule as plan_modules: its
    // grid's group divides the input width) is stored at that grid.
    if (linear.count(module) && !recipe.gguf && v.shape().size() == 2) {
      const auto spec = recipe.spec_for(module);
      if (spec && (spec->group_size <= 0 || v.shape()[1] % spec->group_size == 0)) {
        bytes += static_cast<double>(grid_of(*spec).bytes_for(v.shape()[0], v.shape()[1]));
        continue;
      }
    }
    bytes += static_cast<double>(v.nbytes());
  }
  return bytes;
}

AllocationReport allocate_grids(const Model& model, const Recipe& recipe, const CalibrationStats& stats,
                                const AllocationOptions& opts) {
  if (opts.target_bpw > 0 && opts.target_bytes > 0)
    fail_input("--target-bpw {} and --target-size {} both set the budget; give one", opts.target_bpw,
               opts.target_bytes);
  if (!(opts.target_bpw > 0) && !(opts.target_bytes > 0))
    fail_input("--target-bpw or --target-size must be > 0, got {} and {}", opts.target_bpw, opts.target_bytes);
  const std::vector<WeightGrid> candidates = opts.candidates.empty() ? default_candidates(recipe) : opts.candidates;
  for (const WeightGrid& g : candidates) check_weight_grid(g, "--candidates");
  const ModelConfig& cfg = model.config();
  AllocationReport rep;
  rep.target_bpw = opts.target_bpw;
  const bool hessian = !stats.points().empty() && stats.has(0, LinearId::Q, Stat::Hessian);
  if (!hessian && !(stats.points().empty() || stats.has(0, LinearId::Q, Stat::SumSq)))
    fail_input("--target-bpw: the stats file holds neither Hessians nor Σx² per input channel; re-run ptq calibrate "
               "(--hessian for the full sensitivity)");
  rep.sensitivity = hessian ? "hessian" : "diagonal";
  rep.gguf = recipe.gguf.has_value();
  const std::vector<GgmlType> gguf_candidates =
      !opts.gguf_candidates.empty()
          ? opts.gguf_candidates
          : std::vector<GgmlType>{GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                                  GgmlType::Q8_0};
  std::vector<AllocUnit> units;
  int64_t params = 0;
  Progress progress("sensitivity", cfg.n_layers, "layers");
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    progress.update(i);
    for (int id = 0; id < kNumLinear; ++id) {
      const char* name = linear_module_name(cfg, static_cast<LinearId>(id));
      if (*name == '\0') continue;
      const std::string path = cfg.layer_module(i, name);
      if (!recipe.spec_for(path)) continue;  // ignored
      const at::Tensor w = model.weights().load(path + ".weight").to(at::kFloat).contiguous();
      const int64_t out = w.size(0), in = w.size(1);
      at::Tensor h, diag;
      if (hessian) {
        h = stats.get(i, static_cast<LinearId>(id), Stat::Hessian);
      } else {
        const double tokens = stats.get(i, static_cast<LinearId>(id), Stat::Tokens).item<double>();
        diag = stats.get(i, static_cast<LinearId>(id), Stat::SumSq).to(at::kDouble) / std::max(tokens, 1.0);
      }
      ModuleAllocation m{path, out * in, {}, {}, {}, 0};
      AllocUnit u{path, {}};
      auto add = [&](std::string name, double bytes, const at::Tensor& w_hat) {
        const at::Tensor dw = w_hat - w;
        const double err = hessian ? hessian_loss(w, w_hat, h)
                                   : (dw.to(at::kDouble).square().sum(0) * diag).sum().item<double>();
        m.grids.push_back(std::move(name));
        m.bytes.push_back(bytes);
        m.error.push_back(err);
        u.choices.push_back({bytes, std::max(err, 0.0)});
      };
      if (recipe.gguf) {
        // ggml's rounding with llama.cpp's imatrix weights (Σx² / tokens = diag(H) / 2), the grid GPTQ keeps.
        const at::Tensor imp = (hessian ? h.diagonal().to(at::kFloat) / 2 : diag.to(at::kFloat)).contiguous();
        for (GgmlType t : gguf_candidates) {
          if (in % ggml_type_traits(t).block_size != 0) continue;
          const std::vector<uint8_t> blocks = ggml_encode(t, w.data_ptr<float>(), out, in, path, imp.data_ptr<float>());
          at::Tensor w_hat = at::empty({out, in});
          ggml_decode(t, blocks.data(), w_hat.data_ptr<float>(), out * in);
          add(ggml_type_name(t), static_cast<double>(blocks.size()), w_hat);
        }
      }
      for (const WeightGrid& g : recipe.gguf ? std::vector<WeightGrid>{} : candidates) {
        if (g.group_size > 0 && in % g.group_size != 0) continue;
        add(g.name(), static_cast<double>(g.bytes_for(out, in)),
            dequantize(quantize_weight(w, spec_of(g, recipe.weights.mse), path)));
      }
      if (u.choices.empty()) continue;  // no candidate fits its width: the recipe's plan decides (FP when it cannot)
      params += out * in;
      rep.modules.push_back(std::move(m));
      units.push_back(std::move(u));
    }
  }
  progress.finish();
  if (units.empty()) fail_input("--target-bpw: no candidate grid fits any module's input width");
  if (opts.target_bytes > 0) {
    std::vector<std::string> allocated;
    for (const ModuleAllocation& m : rep.modules) allocated.push_back(m.module);
    rep.target_bytes = opts.target_bytes;
    rep.fixed_bytes = checkpoint_fixed_bytes(model, recipe, allocated);
    rep.budget_bytes = opts.target_bytes - rep.fixed_bytes;
  } else {
    rep.budget_bytes = opts.target_bpw * static_cast<double>(params) / 8;
  }
  const Allocation a = allocate_lagrangian(units, std::max(rep.budget_bytes, 0.0));
  if (!a.feasible && opts.target_bytes > 0)
    fail_input("--target-size {:.0f} bytes ({}): the tensors outside the allocated modules take {} and the smallest "
               "candidates {} more, {} in all", opts.target_bytes, human_bytes(opts.target_bytes),
               human_bytes(rep.fixed_bytes), human_bytes(a.cost), human_bytes(rep.fixed_bytes + a.cost));
  if (!a.feasible)
    fail_input("--target-bpw {}: even the smallest candidates need {:.3f} bits per weight", opts.target_bpw,
               8 * a.cost / static_cast<double>(params));
  for (size_t k = 0; k < rep.modules.size(); ++k) rep.modules[k].chosen = a.choice[k];
  rep.bytes = a.cost;
  rep.achieved_bpw = 8 * a.cost / static_cast<double>(params);
  if (opts.target_bytes > 0) rep.size_bytes = rep.fixed_bytes + rep.bytes;
  return rep;
}

void apply_allocation(const AllocationReport& report, Recipe& recipe) {
  for (const ModuleAllocation& m : report.modules) {
    if (report.gguf) {
      recipe.gguf_modules[m.module] = *ggml_type_from_name(m.grids[m.chosen]);
      continue;
    }
    const WeightGrid g = weight_grid(m.grids[m.chosen], "allocation");
    ModuleOverride o;
    o.match = "^" + regex_escape(m.module) + "$";
    o.re = std::regex(o.match);
    o.bits = g.bits;
    o.group_size = g.group_size;
    o.sym = g.sym;
    recipe.overrides.push_back(std::move(o));
  }
}

}  // namespace ptq
