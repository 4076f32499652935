#include "pipeline/allocate.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <regex>
#include <set>
#include <stdexcept>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "algorithms/gptq.h"
#include "calibration/stats.h"
#include "core/bit_allocation.h"
#include "core/error.h"
#include "core/file.h"
#include "core/model_dir.h"
#include "core/progress.h"
#include "core/table.h"
#include "io/gguf.h"
#include "io/gguf_kquants.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "quant/metrics.h"
#include "quant/quantizer.h"

namespace ptq {

namespace {

constexpr const char* kSensitivityFormat = "ptq-sensitivity";
constexpr int kSensitivityVersion = 2;  // 2: weights_sha256

std::vector<WeightGrid> default_candidates(const Recipe& r) {
  std::vector<WeightGrid> c;
  for (int b : {2, 3, 4, 5, 6, 8}) c.push_back({b, r.weights.group_size, r.weights.sym});
  return c;
}

std::vector<GgmlType> default_gguf_candidates() {
  return {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_0};
}

}  // namespace

AllocationOptions merged_allocation_options(const AllocationOptions& opts, const Recipe& recipe) {
  AllocationOptions o = opts;
  if (!(o.target_bpw > 0) && !(o.target_bytes > 0) && recipe.target_bpw > 0) {
    o.target_bpw = recipe.target_bpw;
    if (o.candidates.empty() && o.gguf_candidates.empty())
      add_candidates(recipe.candidates, recipe.gguf.has_value(), o, "allocation.candidates");
  }
  // The flag's value, else the recipe's, else the default; checked against the names the flag takes.
  auto resolve = [](const std::string& flag_value, const std::string& recipe_value, const char* fallback,
                    const std::vector<std::string>& names, const char* flag) {
    const std::string v = !flag_value.empty() ? flag_value : !recipe_value.empty() ? recipe_value : fallback;
    if (std::find(names.begin(), names.end(), v) == names.end())
      fail_input("{} {}: expected one of {}", flag, v, join(names));
    return v;
  };
  o.metric = resolve(opts.metric, recipe.allocation_sensitivity, "rtn", sensitivity_metric_names(),
                     "--sensitivity-metric");
  o.unit = resolve(opts.unit, recipe.allocation_unit, "module", allocation_unit_names(), "--allocation-unit");
  return o;
}

int kl_probe_grid(const SensitivityUnit& u) {
  std::vector<int> by_size(u.grids.size());
  for (size_t k = 0; k < by_size.size(); ++k) by_size[k] = static_cast<int>(k);
  std::stable_sort(by_size.begin(), by_size.end(), [&](int a, int b) { return u.bytes[a] < u.bytes[b]; });
  return by_size.empty() ? -1 : by_size[(by_size.size() - 1) / 2];
}

int64_t SensitivityUnit::params() const {
  int64_t n = 0;
  for (const auto& m : modules) n += m.params;
  return n;
}

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

// ---- the sensitivity table and its file ----

nlohmann::json SensitivityTable::to_json() const {
  nlohmann::json us = nlohmann::json::array();
  for (const auto& u : units) {
    nlohmann::json ms = nlohmann::json::array();
    for (const auto& m : u.modules) {
      nlohmann::json jm = {{"module", m.module}, {"params", m.params}, {"bytes", m.bytes}};
      if (!m.error.empty()) jm["error"] = m.error;
      ms.push_back(std::move(jm));
    }
    nlohmann::json ju = {{"name", u.name}, {"grids", u.grids}, {"bytes", u.bytes}, {"error", u.error}, {"modules", ms}};
    if (u.probe_grid >= 0) ju["probe"] = {{"grid", u.grids[u.probe_grid]}, {"kl", u.probe_kl}};
    us.push_back(std::move(ju));
  }
  return {{"format", kSensitivityFormat}, {"version", kSensitivityVersion},
          {"metric", metric},            {"flavor", flavor},
          {"unit", unit},                {"choices", gguf ? "ggml types" : "ptq grids"},
          {kOutputMarker, std::string("ptq ") + PTQ_VERSION},  // --force may replace it (core/model_dir.h)
          {"config_sha256", config_sha256}, {"weights_sha256", weights_sha256}, {"candidates", candidates},
          {"units", us}};
}

SensitivityTable sensitivity_table_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    if (j.value("format", "") != kSensitivityFormat)
      fail_input("{} is not a ptq sensitivity file (no \"format\": \"{}\")", where, kSensitivityFormat);
    const int version = j.at("version").get<int>();
    if (version != kSensitivityVersion)
      fail_input("{} has version {}; this ptq reads version {} (measure again with --save-sensitivity)", where, version,
                 kSensitivityVersion);
    SensitivityTable t;
    t.metric = j.at("metric").get<std::string>();
    t.flavor = j.at("flavor").get<std::string>();
    t.unit = j.at("unit").get<std::string>();
    t.gguf = j.at("choices").get<std::string>() == "ggml types";
    t.config_sha256 = j.at("config_sha256").get<std::string>();
    t.weights_sha256 = j.at("weights_sha256").get<std::string>();
    t.candidates = j.at("candidates").get<std::vector<std::string>>();
    for (const auto& ju : j.at("units")) {
      SensitivityUnit u;
      u.name = ju.at("name").get<std::string>();
      u.grids = ju.at("grids").get<std::vector<std::string>>();
      u.bytes = ju.at("bytes").get<std::vector<double>>();
      u.error = ju.at("error").get<std::vector<double>>();
      if (u.bytes.size() != u.grids.size() || u.error.size() != u.grids.size())
        fail_input("{}: unit {} lists {} grids but {} bytes and {} errors", where, u.name, u.grids.size(),
                   u.bytes.size(), u.error.size());
      if (ju.contains("probe")) {
        const auto g = std::find(u.grids.begin(), u.grids.end(), ju.at("probe").at("grid").get<std::string>());
        if (g == u.grids.end()) fail_input("{}: unit {} has a probe on a grid it does not list", where, u.name);
        u.probe_grid = static_cast<int>(g - u.grids.begin());
        u.probe_kl = ju.at("probe").at("kl").get<double>();
      }
      for (const auto& jm : ju.at("modules")) {
        SensitivityModule m;
        m.module = jm.at("module").get<std::string>();
        m.params = jm.at("params").get<int64_t>();
        m.bytes = jm.at("bytes").get<std::vector<double>>();
        if (jm.contains("error")) m.error = jm.at("error").get<std::vector<double>>();
        u.modules.push_back(std::move(m));
      }
      t.units.push_back(std::move(u));
    }
    return t;
  } catch (const nlohmann::json::exception& e) {
    fail_input("{}: not a valid sensitivity file: {}", where, e.what());
  }
}

void save_sensitivity_table(const SensitivityTable& t, const std::string& path) {
  write_text_file_atomic(path, t.to_json().dump(1) + "\n");
}

SensitivityTable load_sensitivity_table(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    fail_input("--sensitivity {}: not JSON: {}", path, e.what());
  }
  return sensitivity_table_from_json(j, path);
}

// ---- units and costs from shapes ----

SensitivityTable plan_sensitivity_table(const Model& model, const Recipe& recipe, const AllocationOptions& opts) {
  const ModelConfig& cfg = model.config();
  if (opts.metric.empty() || opts.unit.empty())
    throw std::logic_error("plan_sensitivity_table: options not merged (merged_allocation_options)");
  SensitivityTable t;
  t.metric = opts.metric;
  t.unit = opts.unit;
  t.gguf = recipe.gguf.has_value();
  t.config_sha256 = sha256_file(model.path() + "/config.json");
  const std::vector<WeightGrid> grids = opts.candidates.empty() ? default_candidates(recipe) : opts.candidates;
  const std::vector<GgmlType> types = opts.gguf_candidates.empty() ? default_gguf_candidates() : opts.gguf_candidates;
  if (t.gguf) {
    for (GgmlType ty : types) t.candidates.push_back(ggml_type_name(ty));
  } else {
    for (const WeightGrid& g : grids) {
      check_weight_grid(g, "--candidates");
      t.candidates.push_back(g.name());
    }
  }
  // Bytes of module [out, in] on candidate k, or nullopt where the candidate's group does not divide the width.
  auto cost = [&](size_t k, int64_t out, int64_t in) -> std::optional<double> {
    if (t.gguf) {
      if (in % ggml_type_traits(types[k]).block_size != 0) return std::nullopt;
      return static_cast<double>(out) * static_cast<double>(ggml_nbytes(types[k], in));
    }
    if (grids[k].group_size > 0 && in % grids[k].group_size != 0) return std::nullopt;
    return static_cast<double>(grids[k].bytes_for(out, in));
  };
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    SensitivityUnit layer{fmt::format("model.layers.{}", i), i, {}, t.candidates, {}, {}};
    std::vector<bool> fits_all(t.candidates.size(), true);
    for (int id = 0; id < kNumLinear; ++id) {
      const char* name = linear_module_name(cfg, static_cast<LinearId>(id));
      if (*name == '\0') continue;
      const std::string path = cfg.layer_module(i, name);
      if (!recipe.spec_for(path)) continue;  // ignored
      const std::vector<int64_t>& shape = model.archive().view(path + ".weight").shape();
      if (shape.size() != 2) fail_input("{}.weight has {} dimensions, expected [out, in]", path, shape.size());
      SensitivityModule m{path, i, id, shape[0] * shape[1], {}, {}};
      SensitivityUnit single{path, i, {}, {}, {}, {}};
      std::vector<double> all(t.candidates.size(), 0);
      for (size_t k = 0; k < t.candidates.size(); ++k) {
        const auto b = cost(k, shape[0], shape[1]);
        if (!b) {
          fits_all[k] = false;
          continue;
        }
        all[k] = *b;
        single.grids.push_back(t.candidates[k]);
        single.bytes.push_back(*b);
      }
      if (single.grids.empty()) continue;  // no candidate fits its width: the recipe's plan decides (FP when it cannot)
      if (t.unit == "module") {
        m.bytes = single.bytes;
        single.modules.push_back(std::move(m));
        t.units.push_back(std::move(single));
      } else {
        m.bytes = all;  // trimmed to the layer's common candidates below
        layer.modules.push_back(std::move(m));
      }
    }
    if (t.unit != "layer" || layer.modules.empty()) continue;
    layer.grids.clear();
    for (size_t k = 0; k < t.candidates.size(); ++k) {
      if (!fits_all[k]) continue;
      layer.grids.push_back(t.candidates[k]);
      double sum = 0;
      for (const auto& m : layer.modules) sum += m.bytes[k];
      layer.bytes.push_back(sum);
    }
    if (layer.grids.empty())
      fail_input("--allocation-unit layer: no candidate fits every module of {} (their input widths differ in what "
                 "the groups divide); use --allocation-unit module or candidates with a common group size", layer.name);
    for (auto& m : layer.modules) {
      std::vector<double> b;
      for (size_t k = 0; k < t.candidates.size(); ++k)
        if (fits_all[k]) b.push_back(m.bytes[k]);
      m.bytes = std::move(b);
    }
    t.units.push_back(std::move(layer));
  }
  if (t.units.empty()) fail_input("--target-bpw: no candidate grid fits any module's input width");
  return t;
}

at::Tensor rtn_candidate_weight(const at::Tensor& w, const std::string& grid, const Recipe& recipe,
                                const std::string& module, const at::Tensor& importance) {
  if (!recipe.gguf) return dequantize(quantize_weight(w, spec_of(weight_grid(grid, "allocation"), recipe.weights.mse), module));
  const GgmlType t = *ggml_type_from_name(grid);
  const int64_t out = w.size(0), in = w.size(1);
  const at::Tensor wc = w.to(at::kFloat).contiguous();
  const at::Tensor imp = importance.defined() ? importance.to(at::kFloat).contiguous() : importance;
  const std::vector<uint8_t> blocks =
      ggml_encode(t, wc.data_ptr<float>(), out, in, module, imp.defined() ? imp.data_ptr<float>() : nullptr);
  at::Tensor w_hat = at::empty({out, in});
  ggml_decode(t, blocks.data(), w_hat.data_ptr<float>(), out * in);
  return w_hat;
}

namespace {

// Refuses a reused table that was not measured for this model, these candidates and this metric/unit, naming the
// first unit, module or candidate that differs. `plan` is what this run would measure. With `probes_only` (rtn-kl's
// measured probes, errors still to come) each unit's probe is checked instead of its errors.
void check_table(const SensitivityTable& got, const SensitivityTable& plan, const std::string& where,
                 bool probes_only = false) {
  if (got.config_sha256 != plan.config_sha256)
    fail_input("{} was measured on another model: its config.json sha256 is {:.12}..., this model's {:.12}...", where,
               got.config_sha256, plan.config_sha256);
  if (got.weights_sha256 != plan.weights_sha256)
    fail_input("{} was measured on other weights (the same config.json): their sha256 is {:.12}..., this model's "
               "{:.12}...", where, got.weights_sha256, plan.weights_sha256);
  if (got.metric != plan.metric)
    fail_input("{} holds {} sensitivities; this run asks for --sensitivity-metric {}", where, got.metric, plan.metric);
  if (got.unit != plan.unit)
    fail_input("{} allocates per {}; this run asks for --allocation-unit {}", where, got.unit, plan.unit);
  if (got.gguf != plan.gguf)
    fail_input("{} holds {} choices; this recipe chooses {}", where, got.gguf ? "ggml type" : "ptq grid",
               plan.gguf ? "ggml types" : "ptq grids");
  for (const auto& c : plan.candidates)
    if (std::find(got.candidates.begin(), got.candidates.end(), c) == got.candidates.end())
      fail_input("{} has no sensitivities for candidate {} (it holds {})", where, c, join(got.candidates));
  for (const auto& c : got.candidates)
    if (std::find(plan.candidates.begin(), plan.candidates.end(), c) == plan.candidates.end())
      fail_input("{} was measured with candidate {}, which this run does not have (candidates {})", where, c,
                 join(plan.candidates));
  if (got.units.size() != plan.units.size())
    fail_input("{} has {} units; this model and recipe have {}", where, got.units.size(), plan.units.size());
  for (size_t u = 0; u < plan.units.size(); ++u) {
    const SensitivityUnit& a = got.units[u];
    const SensitivityUnit& b = plan.units[u];
    if (a.name != b.name) fail_input("{}: unit {} is {}; this model's is {}", where, u, a.name, b.name);
    if (a.modules.size() != b.modules.size())
      fail_input("{}: unit {} has {} modules; this model's has {}", where, a.name, a.modules.size(), b.modules.size());
    for (size_t m = 0; m < b.modules.size(); ++m)
      if (a.modules[m].module != b.modules[m].module || a.modules[m].params != b.modules[m].params)
        fail_input("{}: module {} ({} weights) where this model has {} ({} weights)", where, a.modules[m].module,
                   a.modules[m].params, b.modules[m].module, b.modules[m].params);
    if (a.grids != b.grids)
      fail_input("{}: module {} lists candidates {}; here {} fit it", where, a.name, join(a.grids), join(b.grids));
    if (probes_only && (a.probe_grid != kl_probe_grid(b) || !std::isfinite(a.probe_kl) || a.probe_kl < 0))
      fail_input("{}: unit {} has no KL probe on {} (expected a finite KL >= 0)", where, a.name,
                 b.grids[kl_probe_grid(b)]);
    if (got.metric == "rtn-kl" && !probes_only && a.probe_grid < 0)
      fail_input("{}: unit {} has rtn-kl errors but no KL probe", where, a.name);
    if (!probes_only && a.error.size() != b.grids.size())
      fail_input("{}: unit {} has {} errors for {} candidates", where, a.name, a.error.size(), b.grids.size());
    for (size_t k = 0; k < b.grids.size(); ++k) {
      if (a.bytes[k] != b.bytes[k])
        fail_input("{}: module {} on candidate {} costs {} bytes there, {} here", where, a.name, b.grids[k], a.bytes[k],
                   b.bytes[k]);
      if (probes_only) continue;
      if (!std::isfinite(a.error[k]) || a.error[k] < 0)
        fail_input("{}: module {} on candidate {} has error {}; expected a finite value >= 0", where, a.name,
                   b.grids[k], a.error[k]);
    }
  }
}

// What SensitivityTable::weights_sha256 holds: every tensor hashed from the model's mapped files, its pages released
// after, so the model's resident memory does not grow.
std::string weights_sha256(const Model& model) {
  const TensorArchive& archive = model.archive();
  std::string per_tensor;
  for (const std::string& name : archive.names()) {
    const TensorView v = archive.view(name);
    per_tensor += sha256_hex(v.data, v.nbytes());
    archive.release(name);
  }
  return sha256_hex(per_tensor.data(), per_tensor.size());
}

// Fills the errors of `t` (metric rtn, gptq or rtn-kl) from the stats' Hessians, or their diagonal; rtn-kl's scaled to
// the units' KL probes.
void measure_weight_errors(const Model& model, const Recipe& recipe, const CalibrationStats& stats,
                           SensitivityTable& t) {
  const bool hessian = !stats.points().empty() && stats.has(0, LinearId::Q, Stat::Hessian);
  if (!hessian && !(stats.points().empty() || stats.has(0, LinearId::Q, Stat::SumSq)))
    fail_input("--target-bpw: the stats file holds neither Hessians nor Σx² per input channel; re-run ptq calibrate "
               "(--hessian for the full sensitivity)");
  if (t.metric == "gptq" && !hessian)
    fail_input("--sensitivity-metric gptq runs GPTQ with each module's Hessian; the stats file has none: re-run ptq "
               "calibrate with --hessian");
  const std::string kl_flavor = t.flavor;  // rtn-kl: the KL probes' windows
  t.flavor = hessian ? "hessian" : "diagonal";
  Progress progress(fmt::format("sensitivity ({})", t.metric == "rtn-kl" ? "rtn" : t.metric), static_cast<int64_t>(t.units.size()), "units");
  for (size_t ui = 0; ui < t.units.size(); ++ui) {
    SensitivityUnit& u = t.units[ui];
    progress.update(static_cast<int64_t>(ui));
    u.error.assign(u.grids.size(), 0.0);
    for (SensitivityModule& m : u.modules) {
      const LinearId id = static_cast<LinearId>(m.linear);
      const at::Tensor w = model.weights().load(m.module + ".weight").to(at::kFloat).contiguous();
      at::Tensor h, diag;
      if (hessian) {
        h = stats.get(m.layer, id, Stat::Hessian);
      } else {
        const double tokens = stats.get(m.layer, id, Stat::Tokens).item<double>();
        diag = stats.get(m.layer, id, Stat::SumSq).to(at::kDouble) / std::max(tokens, 1.0);
      }
      // ggml's rounding with llama.cpp's imatrix weights (Σx² / tokens = diag(H) / 2), the grid GPTQ keeps.
      const at::Tensor imp = hessian ? h.diagonal().to(at::kFloat) / 2 : diag.to(at::kFloat);
      m.error.clear();
      for (size_t k = 0; k < u.grids.size(); ++k) {
        at::Tensor w_hat;
        if (t.metric == "gptq") {
          const LinearQuantRequest req{m.module, w, h,
                                       t.gguf ? recipe.weights : spec_of(weight_grid(u.grids[k], "allocation"),
                                                                          recipe.weights.mse),
                                       recipe.gptq};
          w_hat = t.gguf ? gptq_ggml_quantize(req, *ggml_type_from_name(u.grids[k])).w_hat
                         : dequantize(gptq_quantize(req).weight);
        } else {
          w_hat = rtn_candidate_weight(w, u.grids[k], recipe, m.module, recipe.gguf ? imp : at::Tensor());
        }
        const double err = hessian ? hessian_loss(w, w_hat, h)
                                   : ((w_hat - w).to(at::kDouble).square().sum(0) * diag).sum().item<double>();
        m.error.push_back(std::max(err, 0.0));
        u.error[k] += m.error.back();
      }
    }
    if (t.metric == "rtn-kl") {
      // One factor per unit: rtn's error on the probe grid becomes the KL measured there. A unit whose rounding on
      // the probe changes nothing (error 0) keeps rtn's zeros.
      const double at_probe = u.error[u.probe_grid];
      const double scale = at_probe > 0 ? u.probe_kl / at_probe : 0.0;
      for (double& e : u.error) e *= scale;
      for (SensitivityModule& m : u.modules)
        for (double& e : m.error) e *= scale;
    }
  }
  progress.finish();
  if (t.metric == "rtn-kl") t.flavor = fmt::format("{}, KL on {}", t.flavor, kl_flavor);
}

}  // namespace

nlohmann::json AllocationReport::to_json() const {
  nlohmann::json mods = nlohmann::json::object();
  for (const auto& m : modules) {
    nlohmann::json j = {{"grid", m.grids[m.chosen]}, {"params", m.params}};
    if (unit == "module") {
      nlohmann::json choices = nlohmann::json::array();
      for (size_t i = 0; i < m.grids.size(); ++i)
        choices.push_back({{"grid", m.grids[i]}, {"bytes", m.bytes[i]}, {"error", m.error[i]}});
      j["choices"] = choices;
    } else {
      j["unit"] = m.unit;
    }
    mods[m.module] = std::move(j);
  }
  nlohmann::json j = {{"target_bpw", target_bpw}, {"choices", gguf ? "ggml types" : "ptq grids"}, {"achieved_bpw", achieved_bpw}, {"budget_bytes", budget_bytes},
          {"bytes", bytes},           {"sensitivity", sensitivity},   {"solver", "lagrangian + greedy repair"},
          {"metric", metric},         {"unit", unit},                 {"modules", mods}};
  if (unit != "module") {
    nlohmann::json us = nlohmann::json::object();
    for (size_t u = 0; u < units.size(); ++u) {
      nlohmann::json choices = nlohmann::json::array();
      for (size_t i = 0; i < units[u].grids.size(); ++i)
        choices.push_back({{"grid", units[u].grids[i]}, {"bytes", units[u].bytes[i]}, {"error", units[u].error[i]}});
      us[units[u].name] = {{"grid", units[u].grids[unit_chosen[u]]}, {"choices", choices}};
    }
    j["units"] = us;
  }
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
                                const AllocationOptions& flags) {
  const AllocationOptions opts = merged_allocation_options(flags, recipe);
  if (opts.target_bpw > 0 && opts.target_bytes > 0)
    fail_input("--target-bpw {} and --target-size {} both set the budget; give one", opts.target_bpw,
               opts.target_bytes);
  if (!(opts.target_bpw > 0) && !(opts.target_bytes > 0))
    fail_input("--target-bpw or --target-size must be > 0, got {} and {}", opts.target_bpw, opts.target_bytes);
  SensitivityTable table = plan_sensitivity_table(model, recipe, opts);
  if (!opts.load_sensitivity.empty() || !opts.save_sensitivity.empty()) table.weights_sha256 = weights_sha256(model);
  const bool measured_above = table.metric == "kl" || table.metric == "rtn-kl";  // by eval/kl_sensitivity.h
  const bool reused = !opts.load_sensitivity.empty();
  if (reused || (measured_above && opts.given)) {
    const std::string where = reused ? "--sensitivity " + opts.load_sensitivity : "the measured sensitivities";
    SensitivityTable got = reused ? load_sensitivity_table(opts.load_sensitivity) : *opts.given;
    if (!reused) got.weights_sha256 = table.weights_sha256;  // measured on this very model
    check_table(got, table, where, /*probes_only=*/!reused && table.metric == "rtn-kl");
    for (size_t u = 0; u < got.units.size(); ++u) {  // where the modules sit: not in the file, equal by check_table
      got.units[u].layer = table.units[u].layer;
      for (size_t m = 0; m < got.units[u].modules.size(); ++m) {
        got.units[u].modules[m].layer = table.units[u].modules[m].layer;
        got.units[u].modules[m].linear = table.units[u].modules[m].linear;
      }
    }
    table = std::move(got);
  } else if (measured_above) {
    fail_input("--sensitivity-metric {} is measured on the running model (eval/kl_sensitivity.h, as `ptq quantize` "
               "does) and handed in as AllocationOptions::given, or reused with --sensitivity", table.metric);
  }
  if (!reused && table.metric != "kl") measure_weight_errors(model, recipe, stats, table);  // rtn, gptq, rtn-kl
  if (!opts.save_sensitivity.empty()) save_sensitivity_table(table, opts.save_sensitivity);

  AllocationReport rep;
  rep.target_bpw = opts.target_bpw;
  rep.sensitivity = table.flavor;
  rep.metric = table.metric;
  rep.unit = table.unit;
  rep.gguf = table.gguf;
  std::vector<AllocUnit> units;
  int64_t params = 0;
  std::vector<std::string> allocated;
  for (const SensitivityUnit& u : table.units) {
    AllocUnit au{u.name, {}};
    for (size_t k = 0; k < u.grids.size(); ++k) au.choices.push_back({u.bytes[k], u.error[k]});
    units.push_back(std::move(au));
    params += u.params();
    for (const auto& m : u.modules) allocated.push_back(m.module);
  }
  if (opts.target_bytes > 0) {
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
  for (size_t u = 0; u < table.units.size(); ++u) {
    const SensitivityUnit& su = table.units[u];
    for (const SensitivityModule& m : su.modules)  // a module unit's own errors are the unit's (kl measures per unit)
      rep.modules.push_back({m.module, m.params, su.grids, m.bytes, table.unit == "module" ? su.error : m.error,
                             a.choice[u], su.name});
  }
  rep.unit_chosen = a.choice;
  rep.units = std::move(table.units);
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
