#include "runtime/inspect.h"

#include <algorithm>
#include <regex>

#include <fmt/format.h>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/table.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/tokenizer.h"

namespace ptq {

namespace {

// A GGUF file as stored: its ggml types, size and bits per weight (the decoded cache is float).
void summarize_gguf(const std::string& path, ModelSummary& s) {
  const GgufFile g(path);
  s.files = {path};
  s.file_bytes = g.file_size();
  s.tensors = static_cast<int64_t>(g.tensors().size());
  s.params_by_dtype.clear();
  s.tensors_by_dtype.clear();
  s.parameters = 0;
  uint64_t data_bytes = 0;
  for (const GgufTensorInfo& t : g.tensors()) {
    const std::string type = ggml_type_name(t.type);
    s.params_by_dtype[type] += t.numel();
    s.tensors_by_dtype[type] += 1;
    s.parameters += t.numel();
    data_bytes += t.nbytes;
  }
  s.model_bits_per_weight = s.parameters ? 8.0 * static_cast<double>(data_bytes) / static_cast<double>(s.parameters) : 0;
}

}  // namespace

nlohmann::json AllocationSummary::to_json() const {
  nlohmann::json j = {{"target_bpw", target_bpw}, {"achieved_bpw", achieved_bpw}, {"metric", metric},
                      {"sensitivity", sensitivity}, {"unit", unit}, {"modules", modules}};
  if (target_bytes > 0) {
    j["target_bytes"] = target_bytes;
    j["size_bytes"] = size_bytes;
  }
  return j;
}

std::string AllocationSummary::grid_counts() const {
  std::map<std::string, int> count;
  for (const auto& [module, grid] : modules) ++count[grid];
  std::string out;
  for (const auto& [grid, n] : count) out += fmt::format("{}{} x{}", out.empty() ? "" : ", ", grid, n);
  return out;
}

std::optional<AllocationSummary> read_allocation_summary(const nlohmann::json& qc) {
  if (!qc.is_object() || !qc.contains("allocation") || !qc["allocation"].is_object()) return std::nullopt;
  const nlohmann::json& j = qc["allocation"];
  try {
    AllocationSummary a;
    a.target_bpw = j.value("target_bpw", 0.0);
    a.achieved_bpw = j.at("achieved_bpw").get<double>();
    a.target_bytes = j.value("target_bytes", 0.0);
    a.size_bytes = j.value("size_bytes", 0.0);
    a.metric = j.value("metric", "rtn");  // written before the metric was a choice
    a.sensitivity = j.value("sensitivity", "");
    a.unit = j.value("unit", "module");
    for (const auto& [module, m] : j.at("modules").items()) a.modules[module] = m.at("grid").get<std::string>();
    return a;
  } catch (const nlohmann::json::exception& e) {
    fail_input("quantization_config.allocation is malformed: {}", e.what());
  }
}

std::string render_allocation_map(const AllocationSummary& a) {
  // "model.layers.12.self_attn.q_proj" -> row "12", column "q_proj"; anything else is a row of its own.
  static const std::regex layer_module(R"(^(.*\.)?layers\.(\d+)\.(?:.*\.)?([^.]+)$)");
  std::vector<std::string> columns;
  std::map<int64_t, std::map<std::string, std::string>> rows;
  std::vector<std::pair<std::string, std::string>> others;
  for (const auto& [module, grid] : a.modules) {
    std::smatch m;
    if (!std::regex_match(module, m, layer_module)) {
      others.emplace_back(module, grid);
      continue;
    }
    if (std::find(columns.begin(), columns.end(), m[3].str()) == columns.end()) columns.push_back(m[3].str());
    rows[std::stoll(m[2].str())][m[3].str()] = grid;
  }
  // The usual order of a decoder layer's modules first, then any other name.
  static const std::vector<std::string> order = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"};
  std::stable_sort(columns.begin(), columns.end(), [](const std::string& x, const std::string& y) {
    auto rank = [](const std::string& c) { return std::find(order.begin(), order.end(), c) - order.begin(); };
    return rank(x) < rank(y);
  });
  std::vector<std::string> header = {"layer"};
  header.insert(header.end(), columns.begin(), columns.end());
  Table t(header);
  for (const auto& [layer, cells] : rows) {
    std::vector<std::string> r = {std::to_string(layer)};
    for (const auto& c : columns) r.push_back(cells.count(c) ? cells.at(c) : "-");
    t.add_row(r);
  }
  std::string out = rows.empty() ? "" : t.render();
  for (const auto& [module, grid] : others) out += module + ": " + grid + "\n";
  return out;
}

ModelSummary summarize_model(const std::string& path) {
  const Checkpoint ck(path);
  const std::string& dir = ck.dir();
  ModelSummary s;
  s.path = path;
  s.kind = ck.kind_name();
  s.config = load_model_config(dir);
  const TensorArchive& archive = ck.archive();
  const CheckpointQuantConfig& qc = ck.quant_config();  // imported: modules in ptq's terms ("gptq_v2:w4g128", ...)
  s.quantized = ck.quantized();
  s.file_bytes = archive.total_file_bytes();
  uint64_t tensor_bytes = 0;
  std::map<std::string, uint64_t> module_bytes;  // packed bytes per quantized module
  for (const auto& f : archive.files()) {
    s.files.push_back(f->path());
    for (const auto& t : f->tensors()) {
      ++s.tensors;
      tensor_bytes += t.nbytes();
      s.params_by_dtype[dtype_name(t.dtype)] += t.numel();
      s.tensors_by_dtype[dtype_name(t.dtype)] += 1;
      const size_t dot = t.name.rfind('.');
      const std::string module = dot == std::string::npos ? "" : t.name.substr(0, dot);
      const std::string suffix = dot == std::string::npos ? "" : t.name.substr(dot + 1);
      if (qc.modules.count(module) && suffix != "bias") {
        module_bytes[module] += t.nbytes();
      } else {
        s.parameters += t.numel();
      }
    }
  }
  if (s.quantized) {
    int64_t qparams = 0;
    uint64_t qbytes = 0;
    for (const auto& [module, info] : qc.modules) {
      QuantizedModuleSummary m{module, info.format, info.method, info.out_features * info.in_features, 0, info.metrics};
      m.bits_per_weight = 8.0 * static_cast<double>(module_bytes[module]) / static_cast<double>(m.params);
      if (info.act) {
        m.activation = info.act->describe();
        if (info.act->is_static()) {
          const ActQuantParams p = ck.load_act_params(module);
          m.act_scale_min = p.scale.min().item<double>();
          m.act_scale_max = p.scale.max().item<double>();
        }
      }
      m.folded = info.folded;
      m.bits = info.spec.bits;
      qparams += m.params;
      qbytes += module_bytes[module];
      s.modules_by_format[info.format] += 1;
      s.modules.push_back(std::move(m));
    }
    s.parameters += qparams;
    s.quantized_bits_per_weight = qparams ? 8.0 * static_cast<double>(qbytes) / static_cast<double>(qparams) : 0;
    s.unquantized = qc.unquantized;
    s.quantization_config = qc.raw;
    if (qc.raw.contains("rotation") && qc.raw["rotation"].is_object()) s.rotation = qc.raw["rotation"].dump();
    s.allocation = read_allocation_summary(qc.raw);
  }
  s.model_bits_per_weight = s.parameters ? 8.0 * static_cast<double>(tensor_bytes) / static_cast<double>(s.parameters) : 0;
  if (ck.kind() == CheckpointKind::Gguf) summarize_gguf(path, s);
  try {
    s.tokenizer = load_tokenizer(dir)->describe();
  } catch (const std::exception& e) {
    s.tokenizer = std::string("none: ") + e.what();
  }
  return s;
}

}  // namespace ptq
