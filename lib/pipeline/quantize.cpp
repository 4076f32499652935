#include "pipeline/quantize.h"
#include "pipeline/quantize_detail.h"

#include <cstdlib>
#include <ctime>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "algorithms/gptq.h"
#include "algorithms/migration.h"
#include "algorithms/rtn.h"
#include "calibration/calibrate.h"
#include "calibration/stats.h"
#include "calibration/streamer.h"
#include "core/error.h"
#include "core/model_dir.h"
#include "core/table.h"
#include "core/progress.h"
#include "io/gguf_kquants.h"
#include "io/gguf_mix.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "pipeline/resume.h"
#include "quant/checkpoint.h"
#include "quant/formats.h"
#include "quant/rtn_packed.h"
#include "quant/hessian.h"

namespace ptq {

namespace {

// GPTQ true-sequential groups inside a layer (ALGORITHMS.md): each sees inputs produced by the quantized
// earlier groups.
const std::vector<std::vector<LinearId>>& sequential_groups(bool true_sequential) {
  static const std::vector<std::vector<LinearId>> seq = {
      {LinearId::Q, LinearId::K, LinearId::V}, {LinearId::O}, {LinearId::Gate, LinearId::Up}, {LinearId::Down}};
  static const std::vector<std::vector<LinearId>> all = {
      {LinearId::Q, LinearId::K, LinearId::V, LinearId::O, LinearId::Gate, LinearId::Up, LinearId::Down}};
  return true_sequential ? seq : all;
}

// ISO-8601 UTC; SOURCE_DATE_EPOCH (the reproducible-builds convention) pins it so outputs are byte-identical.
std::string provenance_date() {
  std::time_t t = std::time(nullptr);
  if (const char* e = std::getenv("SOURCE_DATE_EPOCH")) t = static_cast<std::time_t>(std::strtoll(e, nullptr, 10));
  char buf[32];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

LayerModulePlan plan_modules(const Model& model, const Recipe& recipe, const WeightAlgorithm& algo,
                             QuantizeReport& report, std::map<std::string, ModuleQuantInfo>& packed) {
  const ModelConfig& cfg = model.config();
  LayerModulePlan plan(cfg.n_layers);
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    for (LinearId id : kAllLinear) {
      const char* name = linear_module_name(cfg, id);
      if (*name == '\0') continue;
      const std::string path = cfg.layer_module(i, name);
      const std::optional<WeightQuantSpec> spec = recipe.spec_for(path);
      if (!spec) {
        report.unquantized[path] = "ignored by the recipe";
        continue;
      }
      const int64_t in = model.archive().view(path + ".weight").shape().at(1);
      if (recipe.gguf) {  // the GGUF type llama-quantize would give this tensor, after its fallback
        std::string why;
        const auto chosen = recipe.gguf_modules.find(path);
        const GgmlType t = chosen != recipe.gguf_modules.end()
                               ? chosen->second
                               : gguf_target_tensor_type(*recipe.gguf, gguf_linear_tensor_name(i, id), i, in,
                                                         gguf_mix_model(cfg), why);
        if (!ggml_grid_traits(t)) {
          report.unquantized[path] = fmt::format("GGUF {}: {}", recipe.gguf->name(), why);
          continue;
        }
        PlannedModule p{path, ggml_nominal_spec(t), ggml_format_name(t), t};
        packed[path] = ModuleQuantInfo{p.format, p.spec, recipe.method, false};
        packed[path].ggml = t;
        plan[i][id] = std::move(p);
        continue;
      }
      if (spec->group_size > 0 && in % spec->group_size != 0) {
        report.unquantized[path] =
            fmt::format("in_features {} is not a multiple of group size {}", in, spec->group_size);
        continue;
      }
      PlannedModule p{path, *spec, grid_of(*spec).name()};
      // act-order only means something to Hessian methods; RTN keeps columns in natural order.
      packed[path] = ModuleQuantInfo{p.format, p.spec, recipe.method, algo.needs_hessian && recipe.gptq.act_order};
      plan[i][id] = std::move(p);
    }
  }
  if (packed.empty()) {
    // Say why, with the widths and a group size that fits (the common case: a small model and a g128 recipe).
    std::set<int64_t> widths;
    int64_t group = 0;
    for (const auto& [path, why] : report.unquantized) {
      if (why.rfind("in_features", 0) != 0) continue;
      widths.insert(model.archive().view(path + ".weight").shape().at(1));
      if (const auto spec = recipe.spec_for(path)) group = spec->group_size;
    }
    if (widths.empty())
      fail_input("the recipe leaves no module to quantize: its ignore patterns match all {} linear modules",
                 report.unquantized.size());
    int64_t fit = kPerChannel;
    for (int64_t g = group / 2; g >= 16 && fit == kPerChannel; g /= 2)
      for (int64_t w : widths)
        if (w % g == 0) fit = g;
    std::vector<std::string> list;
    for (int64_t w : widths) list.push_back(std::to_string(w));
    fail_input("the recipe leaves no module to quantize: group size {} divides none of the input widths ({}) of the {} "
               "linear modules; use --group-size {}", group, join(list), report.unquantized.size(),
               fit == kPerChannel ? "-1 (one group per output channel)" : std::to_string(fit));
  }
  return plan;
}

ModuleReport record_error(const PlannedModule& p, int64_t layer, const std::string& method, int64_t out, int64_t in,
                          const Distortion& error, QuantizeReport& report, nlohmann::json& metrics) {
  ModuleReport m;
  m.module = p.path;
  m.layer = layer;
  m.format = p.format;
  m.method = method;
  m.params = out * in;
  m.weight_error = error;
  report.quantized_params += m.params;
  report.quantized_bits +=
      8.0 * static_cast<double>(p.ggml ? ggml_nbytes(*p.ggml, out * in) : grid_of(p.spec).bytes_for(out, in));
  metrics = {{"nmse", error.nmse},
             {"snr_db", error.snr_db},
             {"max_abs_error", error.max_abs_error},
             {"sign_flips", error.sign_flips},
             {"zero_fraction", error.zero_fraction}};
  return m;
}

ModuleReport record_module(const PlannedModule& p, int64_t layer, const std::string& method, const at::Tensor& weight,
                           std::optional<double> loss, const std::string& warning, const at::Tensor& w_hat,
                           const at::Tensor& hessian, QuantizeReport& report, nlohmann::json& metrics) {
  ModuleReport m = record_error(p, layer, method, weight.size(0), weight.size(1), distortion(weight, w_hat), report,
                                metrics);
  m.loss = loss;
  m.warning = warning;
  if (hessian.defined()) {
    m.output_error = hessian_loss(weight, w_hat, hessian);
    LinearQuantRequest rtn{p.path, weight, at::Tensor(), p.spec, {}};
    m.rtn_output_error = hessian_loss(
        weight, p.ggml ? rtn_ggml_quantize(rtn, *p.ggml).w_hat : dequantize(quantize_weight(weight, p.spec, p.path)),
        hessian);
  }
  if (m.loss) metrics["loss"] = *m.loss;
  if (m.output_error) metrics["output_error"] = *m.output_error;
  if (m.rtn_output_error) metrics["rtn_output_error"] = *m.rtn_output_error;
  return m;
}

nlohmann::json provenance_json(const Model& model, const Recipe& recipe, const std::string& stats_path,
                               const CalibrationStats* stats, const CalibrationData* calib) {
  nlohmann::json provenance = {{"tool", "ptq"},
                               {"version", PTQ_VERSION},
                               {"date", provenance_date()},
                               {"source_model", model.path()},
                               {"recipe", recipe.path}};
  auto meta = [&](const char* key) {
    auto it = stats->metadata.find(key);
    return it == stats->metadata.end() ? std::string() : it->second;
  };
  if (stats)
    provenance["calibration"] = {{"stats", stats_path},
                                 {"data", meta("data_source")},
                                 {"data_sha256", meta("data_sha256")},
                                 {"nsamples", meta("nsamples")},
                                 {"seqlen", meta("seqlen")},
                                 {"seed", meta("seed")}};
  else if (calib)
    provenance["calibration"] = {{"data", calib->source},
                                 {"data_sha256", calib->data_sha256},
                                 {"nsamples", calib->windows.size()},
                                 {"seqlen", calib->seqlen},
                                 {"seed", calib->seed}};
  return provenance;
}

void finish_report(QuantizeReport& report, const CheckpointWriter& writer, double t0) {
  report.output_bytes = writer.bytes();
  report.avg_bits_per_weight = report.quantized_params ? report.quantized_bits / report.quantized_params : 0;
  report.seconds = now_seconds() - t0;
  report.peak_rss_mb = peak_rss_mb();
}

QuantizeReport quantize_model(Model& model, const QuantizeOptions& opts) {
  const double t0 = opts.started > 0 ? opts.started : now_seconds();
  Recipe allocated = opts.recipe;  // with --target-bpw, plus one override per module
  const Recipe& recipe = allocated;
  const ModelConfig& cfg = model.config();
  const WeightAlgorithm& algo = weight_algorithm(recipe.method);
  QuantizeReport report;

  // Mixed precision: --target-bpw / --candidates, or the recipe's allocation section.
  const AllocationOptions alloc = merged_allocation_options(opts.allocation, recipe);
  const bool allocate = alloc.target_bpw > 0 || alloc.target_bytes > 0;
  if (allocate && recipe.activation_path())
    fail_input("--target-bpw allocates weight grids of weight-only recipes; {} quantizes activations or rewrites layers",
               recipe.name);
  // Plan: every linear module of every layer gets the recipe's grid unless ignored or impossible.
  if (recipe.activation_path()) return quantize_model_activation(model, opts);
  check_output_path(opts.out_dir, model.path(), opts.force);  // before any calibration work
  std::optional<CalibrationStats> stats;
  if (!opts.stats_path.empty()) stats = load_calibration_stats(opts.stats_path, model);  // refuses other models
  if (allocate) {
    // Sensitivities need the FP model's Hessians: from --stats, or from one calibration pass over the recipe's data
    // (all layers' Hessians held at once: for a 7B model ~20 GB; pass a stats file there). Reused (--sensitivity) or
    // measured by the caller (kl; rtn-kl's probes only), they need none.
    std::optional<CalibrationStats> own;
    if (!stats && (!alloc.load_sensitivity.empty() || alloc.metric == "kl")) {
      own.emplace();
    } else if (!stats) {
      CalibrateOptions copts;
      copts.stats = default_stats().add(Stat::Hessian);
      own = calibrate(model, load_model_calibration_data(model, recipe.calibration, opts.batch), copts);
    }
    report.allocation = allocate_grids(model, recipe, stats ? *stats : *own, alloc);
    apply_allocation(*report.allocation, allocated);
  }
  std::map<std::string, ModuleQuantInfo> packed;
  const LayerModulePlan plan = plan_modules(model, recipe, algo, report, packed);

  // Calibration only when the algorithm uses a Hessian: from a stats file (the FP model's Hessians, no
  // forward pass) or by streaming calibration windows through the layers as they are quantized.
  std::optional<CalibrationData> calib;
  if (algo.needs_hessian && stats) {
    if (!stats->points().empty() && !stats->has(0, LinearId::Q, Stat::Hessian))
      fail_input("{} holds no Hessians; GPTQ needs them: re-run ptq calibrate with --hessian, or drop --stats",
                 opts.stats_path);
    report.calibration = fmt::format("Hessians of the FP model from {} ({} windows x {} tokens; not sequential)",
                                     opts.stats_path, stats->metadata["nsamples"], stats->metadata["seqlen"]);
  } else if (algo.needs_hessian) {
    calib = load_model_calibration_data(model, recipe.calibration, opts.batch);  // synthetic: no tokenizer
    report.calibration = fmt::format("{} ({} windows x {} tokens, seed {}, sha256 {:.12})", calib->source,
                                     calib->windows.size(), calib->seqlen, calib->seed, calib->data_sha256);
  } else {
    report.calibration = "none (the method needs no calibration data)";
  }

  // Every finished layer is checkpointed; an interrupted run continues from the last one (pipeline/resume.h).
  QuantizeResume resume(model, opts, calib ? &*calib : nullptr);
  return resume.guard([&] {
    CheckpointWriter writer(model, opts.out_dir, packed, opts.force, resume.spool_path(), resume.writer_state());
    std::optional<LayerStreamer> streamer;
    if (calib) streamer.emplace(model, *calib, opts.batch);
    resume.restore(report, streamer ? &*streamer : nullptr);

    at::NoGradGuard no_grad;
    Progress progress("quantize", cfg.n_layers, "layers");
    progress.update(resume.layers_done());
    // RTN without calibration packs each module straight from its stored weight (quant/rtn_packed.h): the layer is
    // loaded (as fp32 tensors) only for a module that path does not take.
    const bool direct_rtn = recipe.method == "rtn" && !streamer;
    const std::shared_ptr<kernels::GptqOps> gptq_device = gptq_ops(recipe.gptq.device);  // null: the CPU
    for (int64_t i = resume.layers_done(); i < cfg.n_layers; ++i) {
      std::optional<LayerWeights> layer;
      auto weights = [&]() -> LayerWeights& {
        if (!layer) layer = model.load_layer(i);
        return *layer;
      };
      for (const auto& group : sequential_groups(recipe.true_sequential)) {
        std::vector<LinearId> members;
        for (LinearId id : group)
          if (plan[i].count(id)) members.push_back(id);
        if (members.empty()) continue;
        std::map<ActPoint, HessianAccumulator> hessians;  // modules reading one input share it
        if (algo.needs_hessian && !stats) {
          LayerWeights& w = weights();
          for (LinearId id : members) {
            const ActPoint point = act_point_of(id);
            if (!hessians.count(point))
              hessians.emplace(point, HessianAccumulator(w[id].weight.size(1), plan[i].at(id).path + ".input",
                                                        gptq_device));
          }
          LinearInputHook hook = [&](int64_t, LinearId id, const at::Tensor& x) {
            if (!is_first_consumer(cfg, id)) return;
            auto it = hessians.find(act_point_of(id));
            if (it != hessians.end()) it->second.add(x);
          };
          streamer->run(i, w, &hook, /*advance=*/false);
        }
        for (LinearId id : members) {
          const PlannedModule& p = plan[i].at(id);
          progress.update(i, p.path);
          const TensorView stored = direct_rtn ? model.archive().view(p.path + ".weight") : TensorView{};
          if (direct_rtn && !p.ggml && rtn_pack_supports(stored, p.spec)) {
            const RtnPacked packed_module = rtn_pack(stored, p.spec, p.path);
            nlohmann::json metrics;
            ModuleReport m = record_error(p, i, recipe.method, packed_module.tensors.out, packed_module.tensors.in,
                                          packed_module.error, report, metrics);
            writer.write_packed_module(p.path, p.spec, packed_module.tensors, metrics);
            model.archive().release(p.path + ".weight");
            report.modules.push_back(std::move(m));
            continue;
          }
          LayerWeights& w = weights();
          LinearQuantRequest req;
          req.name = p.path;
          req.weight = w[id].weight;
          req.spec = p.spec;
          req.gptq = recipe.gptq;
          if (algo.needs_hessian)
            req.hessian = stats ? stats->get(i, id, Stat::Hessian) : hessians.at(act_point_of(id)).hessian();
          at::Tensor w_hat;
          nlohmann::json metrics;
          ModuleReport m;
          if (p.ggml) {  // straight onto the GGUF block grid
            GgmlQuantResult res = algo.needs_hessian ? gptq_ggml_quantize(req, *p.ggml) : rtn_ggml_quantize(req, *p.ggml);
            w_hat = res.w_hat;
            m = record_module(p, i, recipe.method, w[id].weight, res.loss, res.warning, w_hat, req.hessian, report,
                              metrics);
            writer.write_ggml_module(p.path, *p.ggml, w_hat.size(0), w_hat.size(1), res.blocks, metrics);
          } else {
            LinearQuantResult res = algo.quantize(req);
            w_hat = dequantize(res.weight);
            m = record_module(p, i, recipe.method, w[id].weight, res.loss, res.warning, w_hat, req.hessian, report,
                              metrics);
            writer.write_module(p.path, res.weight, metrics);
          }
          // Later groups and layers see the quantized module; without calibration nothing reads it again, and
          // freeing it keeps the peak at the modules still to do (a 7B layer is 0.8 GB in fp32).
          w[id].weight = streamer ? w_hat : at::Tensor();
          report.modules.push_back(std::move(m));
        }
      }
      if (streamer) streamer->run(i, weights(), nullptr, /*advance=*/true);
      resume.save(i + 1, writer, report, streamer ? &*streamer : nullptr);
      release_free_heap();
      progress.update(i + 1);
    }
    progress.finish();
    writer.copy_unquantized();

    nlohmann::json unq = nlohmann::json::object();
    for (const auto& [path, reason] : report.unquantized) unq[path] = reason;
    const nlohmann::json provenance = provenance_json(model, recipe, opts.stats_path, stats ? &*stats : nullptr,
                                                      calib ? &*calib : nullptr);
    nlohmann::json qconfig = {{"weights", recipe.to_json()["weights"]},
                              {"activations", nullptr},
                              {"unquantized", unq},
                              {"recipe", opts.recipe.to_json()},
                              {"provenance", provenance}};
    if (report.allocation) qconfig["allocation"] = report.allocation->to_json();
    writer.commit(qconfig);
    resume.finish();
    finish_report(report, writer, t0);
    return report;
  });
}

}  // namespace ptq
