// build_report_data and ReportData::to_json: what the report shows, read from the checkpoint, the FP model, the
// stats file and the evaluations.
#include "report/report.h"

#include <algorithm>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "algorithms/migration.h"
#include "calibration/stats.h"
#include "core/error.h"
#include "core/file.h"
#include "core/table.h"
#include "io/safetensors.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "runtime/inspect.h"
#include "runtime/open_model.h"

namespace ptq {

namespace {

// A value of the stored quantization_config as text ("" when absent): strings as they are, others as JSON.
std::string field(const nlohmann::json& j, std::initializer_list<const char*> path) {
  const nlohmann::json* at = &j;
  for (const char* key : path) {
    if (!at->is_object() || !at->contains(key)) return "";
    at = &(*at)[key];
  }
  if (at->is_null()) return "";
  return at->is_string() ? at->get<std::string>() : at->dump();
}

double metric(const nlohmann::json& m, const char* key) {
  return m.is_object() && m.contains(key) && m[key].is_number() ? m[key].get<double>() : NAN;
}

std::vector<std::pair<std::string, std::string>> provenance_rows(const ModelSummary& s, const std::string& model,
                                                                 const std::string& fp, bool fp_from_provenance) {
  const nlohmann::json& q = s.quantization_config;
  std::vector<std::pair<std::string, std::string>> rows;
  auto add = [&](const char* label, const std::string& value) {
    if (!value.empty()) rows.emplace_back(label, value);
  };
  add("checkpoint", model);
  add("format", field(q, {"quant_method"}) == "ptq" ? "ptq checkpoint, format version " + field(q, {"format_version"})
                                                    : "imported " + field(q, {"quant_method"}) + " checkpoint");
  const ModelConfig& c = s.config;
  add("architecture", fmt::format("{}, {} layers, hidden {}, ffn {}", c.model_type, c.n_layers, c.hidden, c.ffn));
  add("source model", field(q, {"provenance", "source_model"}));
  add("FP reference", fp.empty() ? "" : fp + (fp_from_provenance ? " (the source model)" : ""));
  const std::string recipe = field(q, {"recipe", "name"});
  add("recipe", recipe.empty() ? field(q, {"provenance", "recipe"})
                               : fmt::format("{} ({})", recipe, field(q, {"provenance", "recipe"})));
  add("paper", field(q, {"recipe", "paper"}));
  add("weight method", field(q, {"weights", "method"}));
  if (q.contains("weights") && q["weights"].is_object()) {
    const nlohmann::json& w = q["weights"];
    const int64_t g = w.value("group_size", int64_t{0});
    add("weight grid", fmt::format("{}-bit, {}, {}{}", w.value("bits", 0), g > 0 ? fmt::format("group {}", g) : "per channel",
                                   w.value("sym", true) ? "symmetric" : "asymmetric",
                                   w.value("act_order", false) ? ", act-order" : ""));
  }
  if (q.contains("activations") && q["activations"].is_object()) {
    const nlohmann::json& a = q["activations"];
    add("activations", fmt::format("{}-bit {} {}, clip {}", a.value("bits", 0), a.value("granularity", std::string()),
                                   a.value("sym", true) ? "sym" : "asym", a.value("clip", 1.0)));
  }
  add("migration", field(q, {"migration"}));
  if (field(q, {"recipe", "rotation", "hadamard"}) == "true")
    add("rotation", "Hadamard of the residual stream, seed " + field(q, {"recipe", "rotation", "seed"}));
  const std::string stats = field(q, {"provenance", "calibration", "stats"});
  const std::string data = field(q, {"provenance", "calibration", "data"});
  if (!stats.empty() || !data.empty())
    add("calibration", fmt::format("{}{}{}, {} windows x {} tokens, seed {}", stats.empty() ? "" : stats + ": ", data,
                                   data.empty() ? "" : " (sha256 " + field(q, {"provenance", "calibration", "data_sha256"}).substr(0, 12) + ")",
                                   field(q, {"provenance", "calibration", "nsamples"}),
                                   field(q, {"provenance", "calibration", "seqlen"}),
                                   field(q, {"provenance", "calibration", "seed"})));
  std::string formats;
  for (const auto& [f, n] : s.modules_by_format) formats += fmt::format("{}{} x {}", formats.empty() ? "" : ", ", n, f);
  add("modules", fmt::format("{} quantized ({}), {} floating point", s.modules.size(), formats, s.unquantized.size()));
  add("bits per quantized weight", fmt::format("{:.3f} (codes, scales, zeros)", s.quantized_bits_per_weight));
  add("size on disk", human_bytes(static_cast<double>(s.file_bytes)));
  const std::string tool = field(q, {"provenance", "tool"});
  add("written by", tool.empty() ? "" : tool + " " + field(q, {"provenance", "version"}));
  add("created", field(q, {"provenance", "date"}));
  add("report by", std::string("ptq ") + PTQ_VERSION);
  return rows;
}

std::vector<ModuleFigure> module_figures(const ModelSummary& s) {
  const ModelConfig& cfg = s.config;
  std::map<std::string, const QuantizedModuleSummary*> by_path;
  for (const auto& m : s.modules) by_path[m.module] = &m;
  std::vector<ModuleFigure> out;
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    for (int k = 0; k < kNumLinear; ++k) {
      const LinearId id = static_cast<LinearId>(k);
      const char* name = linear_module_name(cfg, id);
      if (*name == '\0') continue;
      ModuleFigure f;
      f.module = cfg.layer_module(i, name);
      f.layer = i;
      f.kind = linear_key(id);
      if (auto it = by_path.find(f.module); it != by_path.end()) {
        const QuantizedModuleSummary& m = *it->second;
        f.bits = m.bits;
        f.format = m.format;
        f.method = m.method;
        f.bits_per_weight = m.bits_per_weight;
        f.nmse = metric(m.metrics, "nmse");
        f.snr_db = metric(m.metrics, "snr_db");
        f.output_error = metric(m.metrics, "output_error");
        f.rtn_output_error = metric(m.metrics, "rtn_output_error");
        f.activation = m.activation;
        f.folded = m.folded;
      } else {
        auto r = s.unquantized.find(f.module);
        f.fp_reason = r != s.unquantized.end() ? r->second : "not quantized by the checkpoint";
      }
      out.push_back(std::move(f));
    }
  }
  return out;
}

std::vector<double> to_doubles(const at::Tensor& t) {
  const at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// A norm as stored: γ, and β / index when present.
struct StoredNorm {
  at::Tensor weight, bias, index;
};

StoredNorm read_norm(const TensorArchive& archive, const ModelConfig& cfg, int64_t layer, const char* module) {
  StoredNorm n;
  n.weight = to_float_tensor(archive.view(cfg.layer_tensor(layer, module, "weight")));
  const std::string b = cfg.layer_tensor(layer, module, "bias"), ix = cfg.layer_tensor(layer, module, "index");
  if (archive.contains(b)) n.bias = to_float_tensor(archive.view(b));
  if (archive.contains(ix)) {
    const TensorView v = archive.view(ix);
    if (v.dtype() != DType::I64 || v.shape().size() != 1) fail_input("tensor \"{}\" is not I64 [n]", ix);
    n.index = at::from_blob(const_cast<uint8_t*>(v.data), v.shape(), at::kLong).clone();
  }
  return n;
}

// The quantized model's norm output channel i is a_i · x_j + b_i of the FP norm's output channel j = index_i:
// a_i = γq_i / γfp_j, b_i = βq_i − a_i βfp_j (the folds of lib/transforms/fold.h: scales, shifts, splits, zero
// padding, all per-channel affine). Its range is the FP range [min_j, max_j] mapped through that line, so max|·|
// is exact from the stats' per-channel min and max (absmax alone suffices when b = 0). NaN where γfp_j = 0 or the
// needed statistic is absent. `changed` is set when the map is not the identity.
std::vector<double> after_norm_absmax(const StoredNorm& fp, const StoredNorm& q, const at::Tensor& absmax,
                                      const at::Tensor& mn, const at::Tensor& mx, bool& changed) {
  const int64_t width = q.weight.numel();
  at::Tensor index = q.index.defined() ? q.index : at::arange(width, at::kLong);
  if (index.numel() != width || (width > 0 && index.max().item<int64_t>() >= fp.weight.numel()))
    fail_input("the checkpoint's norm (width {}) does not fit the FP model's (width {})", width, fp.weight.numel());
  const at::Tensor g_fp = fp.weight.index_select(0, index).to(at::kDouble);
  const at::Tensor a = q.weight.to(at::kDouble) / g_fp;
  at::Tensor b = q.bias.defined() ? q.bias.to(at::kDouble) : at::zeros({width}, at::kDouble);
  if (fp.bias.defined()) b = b - a * fp.bias.index_select(0, index).to(at::kDouble);
  changed = changed || q.index.defined() || !a.eq(1).all().item<bool>() || !b.eq(0).all().item<bool>();
  at::Tensor out;
  if (mn.defined() && mx.defined()) {
    const at::Tensor lo = a * mn.index_select(0, index).to(at::kDouble) + b;
    const at::Tensor hi = a * mx.index_select(0, index).to(at::kDouble) + b;
    out = at::maximum(lo.abs(), hi.abs());
  } else {
    out = (a.abs() * absmax.index_select(0, index).to(at::kDouble)).masked_fill(b.ne(0), NAN);
  }
  return to_doubles(out.masked_fill(g_fp.eq(0), NAN));
}

std::vector<ActivationFigure> activation_figures(const ModelSummary& s, const CalibrationStats& stats,
                                                 const std::string& quantized, const std::string& fp) {
  const ModelConfig& cfg = s.config;
  const bool rotated = field(s.quantization_config, {"recipe", "rotation", "hadamard"}) == "true";
  const TensorArchive q_archive(resolve_model_path(quantized)), fp_archive(resolve_model_path(fp));
  std::map<std::string, const QuantizedModuleSummary*> by_path;
  for (const auto& m : s.modules) by_path[m.module] = &m;
  std::vector<ActivationFigure> out;
  for (int p = 0; p < kNumActPoints; ++p) {
    const ActPoint point = static_cast<ActPoint>(p);
    const std::vector<LinearId> consumers = act_point_consumers(cfg, point);
    if (consumers.empty()) continue;
    ActivationFigure f;
    f.point = act_point_name(point);
    std::vector<std::string> names;
    for (LinearId id : consumers) {
      const std::string n = linear_module_name(cfg, id);
      names.push_back(n.substr(n.find_last_of('.') + 1));
    }
    f.consumers = join(names, ", ");
    std::set<std::string> folded;  // what the checkpoint says it folded at this point, over all layers
    const bool norm_point = point == ActPoint::Attn || point == ActPoint::Mlp;
    const char* norm = point == ActPoint::Attn ? cfg.traits().attn_norm : cfg.traits().mlp_norm;
    std::vector<std::vector<double>> before, after;
    bool changed = false;
    for (int64_t i = 0; i < cfg.n_layers; ++i) {
      const LinearId first = consumers.front();
      if (!stats.has(i, first, Stat::AbsMax))
        fail_input("{}: no per-channel absmax for layer {} {} (re-run ptq calibrate with the default statistics)",
                   stats.source, i, linear_key(first));
      const at::Tensor absmax = stats.get(i, first, Stat::AbsMax);
      before.push_back(to_doubles(absmax));
      for (LinearId id : consumers)
        if (auto it = by_path.find(cfg.layer_module(i, linear_module_name(cfg, id))); it != by_path.end())
          folded.insert(it->second->folded.begin(), it->second->folded.end());
      if (norm_point && !rotated) {
        const at::Tensor mn = stats.has(i, first, Stat::Min) ? stats.get(i, first, Stat::Min) : at::Tensor();
        const at::Tensor mx = stats.has(i, first, Stat::Max) ? stats.get(i, first, Stat::Max) : at::Tensor();
        after.push_back(after_norm_absmax(read_norm(fp_archive, cfg, i, norm), read_norm(q_archive, cfg, i, norm),
                                          absmax, mn, mx, changed));
      }
    }
    f.before = make_channel_heatmap(before);
    const std::string listed = folded.empty() ? "" : " (" + join({folded.begin(), folded.end()}, "; ") + ")";
    if (rotated) {
      f.note = "The residual stream is rotated (Hadamard): every channel after it mixes all channels before, so "
               "there is no per-channel \"after\" to draw.";
    } else if (norm_point && changed) {
      f.after = make_channel_heatmap(after);
      f.note = "After: the quantized model's norm output, exactly: per channel an affine map of the FP one, read from "
               "the checkpoint's folded norm weights against the FP model's (s = γ_fp / γ_q; shifts and split "
               "channels included, splits appended after the original channels)" + listed + ".";
    } else if (!folded.empty() && !norm_point) {
      f.note = "Transforms were folded at this input" + listed + ", through the quantized " +
               std::string(point == ActPoint::O ? "v_proj" : "up_proj") +
               " rows; their factors cannot be read back exactly from the checkpoint, so no \"after\" is drawn.";
    } else {
      f.note = "Nothing was folded at this input: the quantized model's consumers see these ranges.";
    }
    out.push_back(std::move(f));
  }
  return out;
}

QualityFigure quality_figure(const ReportOptions& o, const std::string& fp) {
  QualityFigure qf;
  if (o.data.empty() && o.tasks.empty()) {
    qf.note = "Not measured: --data FILE [--seqlen N --max-windows K] adds perplexity, --tasks FILE.jsonl accuracy "
              "(both as `ptq eval` measures them), against the FP model given by --fp.";
    return qf;
  }
  std::vector<Task> tasks;
  for (const auto& path : o.tasks) tasks.push_back(load_task(path, TaskFormat::Auto, o.task_limit));
  for (const Task& t : tasks) qf.tasks.push_back(t.name);
  std::string text;
  if (!o.data.empty()) {
    text = read_user_text(o.data, "--data");
    qf.data = o.data;
    qf.data_sha256 = sha256_hex(text.data(), text.size());
  }
  std::vector<std::pair<std::string, std::string>> models;
  if (!fp.empty()) models.emplace_back("FP", fp);
  models.emplace_back("quantized", o.quantized);
  for (const auto& [label, path] : models) {
    // Opened as `ptq eval` opens them (the packed runner, fp32 activations): the table reproduces its numbers.
    auto model = open_model_for_run(path, RunOptions{});
    auto tok = load_tokenizer(resolve_model_path(path));
    QualityRow row;
    row.label = label;
    row.path = path;
    if (!text.empty()) {
      const PerplexityResult r = evaluate_perplexity(*model, tok->encode(text), o.ppl, "ppl " + label);
      row.ppl = r.ppl;
      qf.seqlen = r.seqlen;
      qf.windows = r.windows;
      qf.predicted = r.predicted;
    }
    for (const Task& task : tasks) {
      const TaskResult r = evaluate_task(*model, *tok, task, o.task_opts, fmt::format("{} {}", task.name, label));
      row.tasks.push_back({r.acc, r.acc_stderr, task.kind == TaskKind::Cloze ? NAN : r.acc_norm});
    }
    qf.rows.push_back(std::move(row));
  }
  if (fp.empty()) qf.note = "Give --fp MODEL to compare with the FP model.";
  return qf;
}

// Not measured (NaN) is null in the JSON object itself, not only when dumped.
nlohmann::json number(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

nlohmann::json heatmap_json(const ChannelHeatmap& h) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : h.absmax) {
    nlohmann::json row = nlohmann::json::array();
    for (double v : r) row.push_back(number(v));
    rows.push_back(std::move(row));
  }
  return {{"channels", h.channels}, {"bin", h.bin}, {"absmax", std::move(rows)}};
}

}  // namespace

ChannelHeatmap make_channel_heatmap(const std::vector<std::vector<double>>& rows) {
  ChannelHeatmap h;
  for (const auto& r : rows) h.channels = std::max<int64_t>(h.channels, static_cast<int64_t>(r.size()));
  h.bin = std::max<int64_t>(1, (h.channels + kMaxHeatmapColumns - 1) / kMaxHeatmapColumns);
  const int64_t cols = (h.channels + h.bin - 1) / h.bin;
  for (const auto& r : rows) {
    std::vector<double> out(cols, NAN);
    for (size_t c = 0; c < r.size(); ++c) {
      double& cell = out[c / h.bin];
      if (!std::isnan(r[c])) cell = std::isnan(cell) ? r[c] : std::max(cell, r[c]);
    }
    h.absmax.push_back(std::move(out));
  }
  return h;
}

ReportData build_report_data(const ReportOptions& o) {
  const ModelSummary s = summarize_model(o.quantized);
  if (!s.quantized)
    fail_input("{} is not a quantized checkpoint; `ptq report` describes the output of `ptq quantize` (or an imported "
               "GPTQ / compressed-tensors model)", o.quantized);
  std::string fp = o.fp;
  const std::string source = field(s.quantization_config, {"provenance", "source_model"});
  const bool fp_from_provenance = fp.empty() && !source.empty() && is_directory(source);
  if (fp_from_provenance) fp = source;

  ReportData d;
  d.model = o.quantized;
  d.provenance = provenance_rows(s, o.quantized, fp, fp_from_provenance);
  d.layers = s.config.n_layers;
  for (int k = 0; k < kNumLinear; ++k)
    if (*linear_module_name(s.config, static_cast<LinearId>(k)) != '\0')
      d.module_kinds.push_back(linear_key(static_cast<LinearId>(k)));
  d.modules = module_figures(s);
  d.stats = o.stats;
  if (o.stats.empty()) {
    d.activations_note = fmt::format(
        "No calibration statistics given. Measure them on the FP model and add them: `ptq calibrate {} -o STATS` "
        "then `ptq report {} --stats STATS -o REPORT.html`.",
        fp.empty() ? "FP_MODEL" : fp, o.quantized);
  } else {
    if (fp.empty())
      fail_input("--stats {}: the FP model it was measured on is needed to check it and to recover the migration "
                 "(the checkpoint's source model is not found); give --fp MODEL", o.stats);
    const CalibrationStats stats =
        load_calibration_stats(o.stats, model_fingerprint(resolve_model_path(fp)), fp);  // refuses other models
    d.activations = activation_figures(s, stats, o.quantized, fp);
  }
  d.quality = quality_figure(o, fp);
  return d;
}

nlohmann::json ReportData::to_json() const {
  nlohmann::json prov = nlohmann::json::object();
  for (const auto& [k, v] : provenance) prov[k] = v;
  nlohmann::json mods = nlohmann::json::array();
  for (const auto& m : modules) {
    nlohmann::json j = {{"module", m.module}, {"layer", m.layer}, {"kind", m.kind}, {"bits", m.bits}};
    if (m.bits == 0) {
      j["fp_reason"] = m.fp_reason;
    } else {
      j.update({{"format", m.format}, {"method", m.method}, {"bits_per_weight", m.bits_per_weight},
                {"nmse", number(m.nmse)}, {"snr_db", number(m.snr_db)}, {"output_error", number(m.output_error)},
                {"rtn_output_error", number(m.rtn_output_error)}, {"activation", m.activation}, {"folded", m.folded}});
    }
    mods.push_back(std::move(j));
  }
  nlohmann::json acts = nlohmann::json::array();
  for (const auto& a : activations)
    acts.push_back({{"point", a.point},
                    {"consumers", a.consumers},
                    {"before", heatmap_json(a.before)},
                    {"after", a.after ? heatmap_json(*a.after) : nlohmann::json(nullptr)},
                    {"note", a.note}});
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : quality.rows) {
    nlohmann::json tasks = nlohmann::json::array();
    for (const auto& t : r.tasks)
      tasks.push_back({{"acc", number(t.acc)}, {"acc_stderr", number(t.acc_stderr)}, {"acc_norm", number(t.acc_norm)}});
    rows.push_back({{"label", r.label}, {"model", r.path}, {"ppl", number(r.ppl)}, {"tasks", tasks}});
  }
  return {{"model", model},
          {"provenance", prov},
          {"layers", layers},
          {"module_kinds", module_kinds},
          {"modules", mods},
          {"activation_ranges", {{"stats", stats}, {"note", activations_note}, {"points", acts}}},
          {"quality",
           {{"data", quality.data},
            {"data_sha256", quality.data_sha256},
            {"seqlen", quality.seqlen},
            {"windows", quality.windows},
            {"predicted_tokens", quality.predicted},
            {"tasks", quality.tasks},
            {"rows", rows},
            {"note", quality.note}}}};
}

}  // namespace ptq
