// The activation-aware quantize driver: per decoder layer,
//   1. optional rotation (fold norms, residual Hadamard Q, online Hadamard before down_proj);
//   2. statistics of the four linear inputs on the calibration windows (streamed, sequential: the inputs come
//      from the already quantized layers, weights and activations);
//   3. the migration method rewrites the layer (lib/algorithms/migration.h) and decides each input's scheme;
//   4. statistics again, on the rewritten layer (plus Hessians for GPTQ), weights quantized;
//   5. static activation scales from those statistics, optionally the clip ratio searched per input point
//      (MergeQuant's adaptive clipping: min ‖X Wᵀ − X̂ Ŵᵀ‖² over the consumers on calibration tokens);
//   6. modules get their integer-semantics kernels (act_linear.h), the layer's outputs feed the next layer, and
//      everything the rewrite changed is written to the checkpoint.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "algorithms/gptq.h"
#include "algorithms/migration.h"
#include "calibration/calibrate.h"
#include "calibration/data.h"
#include "calibration/streamer.h"
#include "core/error.h"
#include "core/model_dir.h"
#include "core/progress.h"
#include "model/hadamard.h"
#include "model/model.h"
#include "pipeline/quantize_detail.h"
#include "pipeline/resume.h"
#include "quant/act_linear.h"
#include "quant/hessian.h"
#include "transforms/rotate.h"

namespace ptq {

namespace {

// Tokens per input point kept for the clip search (evenly strided over the calibration tokens).
constexpr int64_t kSampleTokens = 2048;

struct Collector {
  LayerStats stats;
  std::array<std::unique_ptr<HessianAccumulator>, kNumActPoints> hessians;
  std::array<std::vector<at::Tensor>, kNumActPoints> samples;
  std::array<at::Tensor, kNumActPoints> midrange_sum;
  std::array<int64_t, kNumActPoints> windows{}, seen{};
};

// Runs layer `layer` with weights `w` over the calibration windows and returns the statistics of its inputs
// (and, with `hessians`, their Hessians: out_h[point], accumulated on `device`, null for the CPU).
LayerStats collect(const ModelConfig& cfg, LayerStreamer& streamer, int64_t layer, const LayerWeights& w,
                   bool hessians, std::array<at::Tensor, kNumActPoints>* out_h,
                   const std::shared_ptr<kernels::GptqOps>& device = nullptr) {
  Collector c;
  const int64_t stride = std::max<int64_t>(1, streamer.tokens() / kSampleTokens);
  LinearInputHook hook = [&](int64_t, LinearId id, const at::Tensor& x3) {
    if (!is_first_consumer(cfg, id)) return;
    const int p = static_cast<int>(act_point_of(id));
    const at::Tensor x = x3.dim() == 3 ? x3 : x3.unsqueeze(0);
    const int64_t in = x.size(-1);
    PointStats& s = c.stats[p];
    const at::Tensor flat = x.reshape({-1, in});
    const at::Tensor mn = std::get<0>(flat.min(0)), mx = std::get<0>(flat.max(0));
    s.min = s.min.defined() ? at::minimum(s.min, mn) : mn;
    s.max = s.max.defined() ? at::maximum(s.max, mx) : mx;
    const at::Tensor mid = ((std::get<0>(x.max(1)) + std::get<0>(x.min(1))) * 0.5).to(at::kDouble).sum(0);
    c.midrange_sum[p] = c.midrange_sum[p].defined() ? c.midrange_sum[p] + mid : mid;
    c.windows[p] += x.size(0);
    s.tokens += flat.size(0);
    // Evenly strided sample: global token indices ≡ 0 mod stride.
    const int64_t first = (stride - c.seen[p] % stride) % stride;
    if (first < flat.size(0))
      c.samples[p].push_back(flat.index_select(0, at::arange(first, flat.size(0), stride, at::kLong)).clone());
    c.seen[p] += flat.size(0);
    if (hessians) {
      if (!c.hessians[p])
        c.hessians[p] = std::make_unique<HessianAccumulator>(in, act_point_name(act_point_of(id)), device);
      c.hessians[p]->add(x);
    }
  };
  streamer.run(layer, w, &hook, /*advance=*/false);
  for (int p = 0; p < kNumActPoints; ++p) {
    PointStats& s = c.stats[p];
    if (!s.min.defined()) continue;
    s.absmax = at::maximum(s.min.abs(), s.max.abs());
    s.midrange_mean = (c.midrange_sum[p] / double(c.windows[p])).to(at::kFloat);
    s.sample = at::cat(c.samples[p]);
    if (out_h && c.hessians[p]) (*out_h)[p] = c.hessians[p]->hessian();
  }
  return c.stats;
}

ActQuantParams params_for(const PointPlan& plan, const ActQuantSpec& spec, const PointStats& st) {
  if (plan.unit_steps) return {at::full({1}, static_cast<float>(spec.clip), at::kFloat), at::zeros({1}, at::kFloat)};
  return static_act_params(spec, st.min, st.max);
}

struct QuantizedModule {
  LinearId id;
  QuantizedWeight qw;
  at::Tensor fp_weight;  // the rewritten FP weight (reference of the clip search)
};

// Output error of the point's consumers on the sample tokens under `spec`.
double point_error(const std::vector<QuantizedModule>& mods, const PointPlan& plan,
                   const ActQuantSpec& spec, const PointStats& st) {
  const ActQuantParams params = spec.is_static() ? params_for(plan, spec, st) : ActQuantParams{};
  const at::Tensor x = st.sample;
  double err = 0;
  for (const QuantizedModule& m : mods) {
    const at::Tensor ref = at::matmul(x, m.fp_weight.t());
    const at::Tensor y = ActQuantLinear(m.qw, {}, spec, params).forward(x);
    err += (y - ref).to(at::kDouble).pow(2).sum().item<double>();
  }
  return err;
}

// Everything of layer i a rewrite may have changed, as F32 (norms with their bias/index, linear biases, FP
// weights of modules that are not packed).
void write_rewritten_layer(CheckpointWriter& writer, const ModelConfig& cfg, int64_t i, const LayerWeights& w,
                           const std::map<LinearId, PlannedModule>& planned) {
  const ArchTraits& t = cfg.traits();
  auto norm = [&](const char* module, const Norm& n) {
    writer.write_tensor(cfg.layer_tensor(i, module, "weight"), n.weight);
    if (n.bias.defined()) writer.write_tensor(cfg.layer_tensor(i, module, "bias"), n.bias);
    if (n.index.defined()) writer.write_tensor(cfg.layer_tensor(i, module, "index"), n.index.to(at::kLong));
  };
  norm(t.attn_norm, w.attn_norm);
  norm(t.mlp_norm, w.mlp_norm);
  for (LinearId id : kAllLinear) {
    const char* name = linear_module_name(cfg, id);
    if (*name == '\0' || !w[id].defined()) continue;
    if (w[id].bias.defined()) writer.write_tensor(cfg.layer_tensor(i, name, "bias"), w[id].bias);
    if (!planned.count(id)) writer.write_tensor(cfg.layer_tensor(i, name, "weight"), w[id].weight);
  }
}

}  // namespace

QuantizeReport quantize_model_activation(Model& model, const QuantizeOptions& opts) {
  const double t0 = opts.started > 0 ? opts.started : now_seconds();
  const Recipe& recipe = opts.recipe;
  const ModelConfig& cfg = model.config();
  const WeightAlgorithm& algo = weight_algorithm(recipe.method);
  const MigrationMethod& method = migration_method(recipe.migration.method);
  QuantizeReport report;
  if (!opts.stats_path.empty())
    fail_input("--stats is not supported with activation quantization or rewrites (recipe {}): the statistics must "
               "come from the rewritten, quantized earlier layers; drop --stats", recipe.path);
  if (recipe.rotation.enabled) check_rotation_supported(cfg);
  std::map<std::string, ModuleQuantInfo> packed;
  const LayerModulePlan plan = plan_modules(model, recipe, algo, report, packed);
  check_output_path(opts.out_dir, model.path(), opts.force);  // before any calibration work

  const CalibrationData calib = load_model_calibration_data(model, recipe.calibration, opts.batch);
  report.calibration = fmt::format("{} ({} windows x {} tokens, seed {}, sha256 {:.12})", calib.source,
                                   calib.windows.size(), calib.seqlen, calib.seed, calib.data_sha256);
  // Every finished layer is checkpointed; an interrupted run continues from the last one (pipeline/resume.h).
  QuantizeResume resume(model, opts, &calib);
  return resume.guard([&] {
    CheckpointWriter writer(model, opts.out_dir, packed, opts.force, resume.spool_path(), resume.writer_state());
    LayerStreamer streamer(model, calib, opts.batch);

    at::NoGradGuard no_grad;
    const std::shared_ptr<kernels::GptqOps> gptq_device = gptq_ops(recipe.gptq.device);  // null: the CPU
    at::Tensor Q, H;
    const uint64_t down_seed = recipe.rotation.seed + 1;
    if (recipe.rotation.enabled) Q = random_hadamard(cfg.hidden, recipe.rotation.seed);
    if (recipe.rotation.enabled && resume.layers_done() == 0) {
      at::Tensor& h = streamer.mutable_hidden();
      h.copy_(at::matmul(h, Q));  // the rotated model's residual stream is h·Q from the embedding on
    }
    resume.restore(report, &streamer);  // a resumed run's states are those entering its next layer

    Progress progress("quantize", cfg.n_layers, "layers");
    progress.update(resume.layers_done());
    for (int64_t i = resume.layers_done(); i < cfg.n_layers; ++i) {
      progress.update(i, fmt::format("layer {} statistics", i));
      LayerWeights w = model.load_layer(i);
      if (recipe.rotation.enabled) {
        fold_norm_into_consumers(cfg, w);
        rotate_layer(cfg, w, Q);
        if (recipe.rotation.online_down) {
          if (!H.defined()) H = random_hadamard(w[LinearId::Down].weight.size(1), down_seed);
          add_down_rotation(cfg, w, H);
        }
      }
      LayerPlan lp;
      for (int p = 0; p < kNumActPoints; ++p) {
        lp[p].spec = recipe.activations;
        for (const auto& d : recipe.migration.dynamic_points)
          if (d == act_point_name(static_cast<ActPoint>(p))) lp[p].spec.granularity = ActGranularity::PerToken;
      }
      if (recipe.rotation.enabled)
        for (auto& pp : lp) pp.folded.push_back("hadamard rotation of the residual stream");
      const LayerStats before = collect(cfg, streamer, i, w, false, nullptr);
      // A method that widens inputs (splits) pads them to the weight groups of this layer's modules too.
      MigrationSettings settings = recipe.migration;
      for (const auto& [id, p] : plan[i])
        if (p.spec.group_size > 0)
          settings.pad_to = settings.pad_to > 0 ? std::lcm(settings.pad_to, p.spec.group_size) : p.spec.group_size;
      method.apply(cfg, w, before, settings, lp);

      // Statistics of the rewritten layer; a method that rewrites nothing leaves them as they were (unless GPTQ
      // needs Hessians, which the first pass does not collect).
      std::array<at::Tensor, kNumActPoints> hess;
      const bool rewritten = std::string(method.name) != "none";
      const LayerStats st = rewritten || algo.needs_hessian
                                ? collect(cfg, streamer, i, w, algo.needs_hessian, &hess, gptq_device)
                                : before;

      // Weights.
      std::array<std::vector<QuantizedModule>, kNumActPoints> by_point;
      for (LinearId id : kAllLinear) {
        auto it = plan[i].find(id);
        if (it == plan[i].end()) continue;
        const PlannedModule& p = it->second;
        progress.update(i, p.path);
        const int64_t in = w[id].weight.size(1);
        if (p.spec.group_size > 0 && in % p.spec.group_size != 0)
          fail_input("{}: the rewrite widened the input to {} channels, not a multiple of group size {}; use per-channel "
                     "weights (group_size -1) with this method", p.path, in, p.spec.group_size);
        const int pt = static_cast<int>(act_point_of(id));
        LinearQuantRequest req;
        req.name = p.path;
        req.weight = w[id].weight;
        req.spec = p.spec;
        req.gptq = recipe.gptq;
        if (algo.needs_hessian) req.hessian = hess[pt];
        LinearQuantResult res = algo.quantize(req);
        const at::Tensor w_hat = dequantize(res.weight);
        nlohmann::json metrics;
        ModuleReport m = record_module(p, i, recipe.method, w[id].weight, res.loss, res.warning, w_hat, req.hessian, report,
                                       metrics);
        writer.write_module(p.path, res.weight, metrics);
        by_point[pt].push_back({id, res.weight, w[id].weight});
        report.modules.push_back(std::move(m));
      }

      // Activations: scheme and scales per input point, then the kernels.
      for (int pt = 0; pt < kNumActPoints; ++pt) {
        if (by_point[pt].empty()) continue;
        PointPlan& pp = lp[pt];
        if (recipe.act_enabled && pp.spec.is_static() && !recipe.migration.clip_grid.empty()) {
          double best = std::numeric_limits<double>::infinity();
          double best_c = pp.spec.clip;
          for (double c : recipe.migration.clip_grid) {
            ActQuantSpec trial = pp.spec;
            trial.clip = c;
            const double e = point_error(by_point[pt], pp, trial, st[pt]);
            if (e < best) {
              best = e;
              best_c = c;
            }
          }
          pp.spec.clip = best_c;
          pp.folded.push_back(fmt::format("adaptive clipping: clip {} of {} candidates", best_c,
                                          recipe.migration.clip_grid.size()));
        }
        const ActQuantParams params =
            recipe.act_enabled && pp.spec.is_static() ? params_for(pp, pp.spec, st[pt]) : ActQuantParams{};
        for (QuantizedModule& qm : by_point[pt]) {
          const std::string& path = plan[i].at(qm.id).path;
          Linear& l = w[qm.id];
          if (recipe.act_enabled) {
            l.kernel = std::make_shared<ActQuantLinear>(qm.qw, l.bias, pp.spec, params);
            writer.write_activation(path, pp.spec, &params, pp.folded);
          } else {
            writer.write_activation(path, pp.spec, nullptr, pp.folded);  // rotation only: records the fold
          }
          l.weight = dequantize(qm.qw);
        }
      }
      write_rewritten_layer(writer, cfg, i, w, plan[i]);
      streamer.run(i, w, nullptr, /*advance=*/true);
      resume.save(i + 1, writer, report, &streamer);
      model.release_layer(i);
      release_free_heap();
      progress.update(i + 1);
    }
    progress.finish();

    if (recipe.rotation.enabled) {
      // Embedding rotated; the final norm's γ folded into the head, which reads the rotated stream.
      const ArchTraits& t = cfg.traits();
      const std::string embed = std::string(t.embed) + ".weight", head = std::string(t.lm_head) + ".weight",
                        fnorm = std::string(t.final_norm) + ".weight";
      const at::Tensor E = model.weights().load(embed);
      writer.write_tensor(embed, rotate_embedding(E, Q));
      const at::Tensor lm = model.weights().contains(head) ? model.weights().load(head) : E;
      const at::Tensor gamma = model.weights().load(fnorm);
      writer.write_tensor(head, rotate_head(lm, gamma, Q));
      writer.write_tensor(fnorm, at::ones_like(gamma));
    }
    writer.copy_unquantized();

    nlohmann::json unq = nlohmann::json::object();
    for (const auto& [path, reason] : report.unquantized) unq[path] = reason;
    nlohmann::json qc = {{"weights", recipe.to_json()["weights"]},
                         {"activations", recipe.act_enabled ? recipe.activations.to_json() : nlohmann::json(nullptr)},
                         {"migration", recipe.migration.method},
                         {"unquantized", unq},
                         {"recipe", recipe.to_json()},
                         {"provenance", provenance_json(model, recipe, "", nullptr, &calib)}};
    if (recipe.rotation.enabled && recipe.rotation.online_down)
      qc["rotation"] = {{"down_proj_hadamard_seed", down_seed}, {"residual_seed", recipe.rotation.seed}};
    else if (recipe.rotation.enabled)
      qc["rotation"] = {{"residual_seed", recipe.rotation.seed}};
    writer.commit(qc);
    resume.finish();
    finish_report(report, writer, t0);
    return report;
  });
}

}  // namespace ptq
