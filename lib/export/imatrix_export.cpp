#include "export/imatrix_export.h"

#include <sys/stat.h>

#include <algorithm>
#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "calibration/stats.h"
#include "core/error.h"
#include "core/file.h"
#include "core/model_dir.h"
#include "export/gguf_export.h"
#include "io/gguf.h"
#include "io/safetensors.h"

namespace ptq {

namespace {

std::string meta(const CalibrationStats& s, const std::string& key) {
  auto it = s.metadata.find(key);
  return it == s.metadata.end() ? "" : it->second;
}

int64_t meta_int(const CalibrationStats& s, const std::string& key) {
  const std::string v = meta(s, key);
  try {
    size_t used = 0;
    const long long n = std::stoll(v, &used);
    if (used == v.size() && n > 0) return n;
  } catch (const std::exception&) {
  }
  fail_input("{}: metadata \"{}\" is \"{}\", expected a positive integer (a stats file written by ptq calibrate "
             "has it)", s.source, key, v);
}

// calibration/data.h joins the text files with ", ".
std::vector<std::string> split_sources(const std::string& source) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= source.size()) {
    const size_t j = std::min(source.find(", ", i), source.size());
    if (j > i) out.push_back(source.substr(i, j - i));
    i = j + 2;
  }
  return out;
}

}  // namespace

std::vector<float> ImatrixEntry::quant_weights() const {
  const float count = static_cast<float>(tokens);  // the F32 counts tensor
  const float* s = sum_sq.data_ptr<float>();
  std::vector<float> w(static_cast<size_t>(sum_sq.numel()));
  for (size_t i = 0; i < w.size(); ++i) w[i] = count > 0.0f ? s[i] / count : 1.0f;
  return w;
}

std::map<std::string, ImatrixEntry> imatrix_entries(const CalibrationStats& stats, const std::string& stats_path) {
  std::map<std::string, ImatrixEntry> entries;  // std::map keeps llama.cpp's sorted order
  for (const InputPoint& p : stats.points()) {
    for (Stat s : {Stat::SumSq, Stat::Tokens})
      if (!stats.has(p.layer, p.first, s))
        fail_input("{}: point \"{}\" has no statistic \"{}\" (the file has: {}); `ptq calibrate` records "
                   "imatrix_sum_sq and tokens by default: re-run it on the model without restricting the statistics",
                   stats_path, p.name, stat_name(s), meta(stats, "stats"));
    const at::Tensor sum_sq = stats.get(p.layer, p.first, Stat::SumSq).to(at::kFloat).contiguous();
    const int64_t tokens = stats.get(p.layer, p.first, Stat::Tokens).item<int64_t>();
    if (!at::isfinite(sum_sq).all().item<bool>() || (sum_sq < 0).any().item<bool>())
      fail_input("{}: point \"{}\": imatrix_sum_sq holds a negative or non-finite value", stats_path, p.name);
    for (LinearId id : p.consumers) entries[gguf_linear_tensor_name(p.layer, id)] = {sum_sq, tokens};
  }
  if (entries.empty()) fail_input("{}: no observation points", stats_path);
  return entries;
}

ImatrixExportReport export_imatrix(const std::string& stats_path, const std::string& out_path, bool force) {
  if (is_directory(out_path)) fail_input("output {} is a directory; imatrix export writes one file", out_path);
  check_output_path(out_path, stats_path, force);
  if (is_directory(stats_path))
    fail_input("{} is a directory; --format imatrix reads the statistics file of `ptq calibrate MODEL -o STATS`",
               stats_path);
  if (!file_exists(stats_path)) fail_input("calibration stats file {} does not exist", stats_path);
  // No model to check the fingerprint against: the stats file is taken for the model it names.
  std::string fingerprint;
  {
    const SafetensorsFile f(stats_path);
    auto it = f.metadata().find("model_fingerprint");
    if (it != f.metadata().end()) fingerprint = it->second;
  }
  const CalibrationStats stats = load_calibration_stats(stats_path, fingerprint, stats_path);
  const std::string model_type = meta(stats, "model_type");
  if (model_type != "llama" && model_type != "mistral" && model_type != "qwen2")
    fail_input("{}: stats of a \"{}\" model; imatrix entries are named after llama.cpp's GGUF tensors, which exist "
               "for llama, mistral and qwen2 models", stats_path, model_type);

  ImatrixExportReport rep;
  rep.output = out_path;
  rep.chunk_count = meta_int(stats, "nsamples");
  rep.chunk_size = meta_int(stats, "seqlen");
  rep.datasets = split_sources(meta(stats, "data_source"));

  const std::map<std::string, ImatrixEntry> entries = imatrix_entries(stats, stats_path);

  GgufWriter w;
  w.set("general.type", GgufValue::string("imatrix"));
  w.set(kOutputMarker, GgufValue::string(std::string("ptq ") + PTQ_VERSION));  // --force may replace it (model_dir.h)
  w.set("imatrix.datasets", GgufValue::string_array(rep.datasets));
  w.set("imatrix.chunk_count", GgufValue::u32(static_cast<uint32_t>(rep.chunk_count)));
  w.set("imatrix.chunk_size", GgufValue::u32(static_cast<uint32_t>(rep.chunk_size)));
  w.set("ptq.version", GgufValue::string(PTQ_VERSION));
  w.set("ptq.stats", GgufValue::string(stats_path));
  w.set("ptq.model", GgufValue::string(meta(stats, "model")));
  w.set("ptq.model_type", GgufValue::string(model_type));
  w.set("ptq.data_sha256", GgufValue::string(meta(stats, "data_sha256")));
  w.set("ptq.seed", GgufValue::string(meta(stats, "seed")));
  for (const auto& [name, e] : entries) {
    const at::Tensor sum_sq = e.sum_sq;
    const int64_t K = sum_sq.numel();
    w.add_tensor(name + ".in_sum2", {K}, GgmlType::F32, [sum_sq, K] {
      const auto* p = reinterpret_cast<const uint8_t*>(sum_sq.data_ptr<float>());
      return std::vector<uint8_t>(p, p + K * sizeof(float));
    });
    // F32 as llama.cpp stores it: exact up to 2^24 tokens.
    const float count = static_cast<float>(e.tokens);
    w.add_tensor(name + ".counts", {1}, GgmlType::F32, [count] {
      const auto* p = reinterpret_cast<const uint8_t*>(&count);
      return std::vector<uint8_t>(p, p + sizeof(float));
    });
  }
  w.write(out_path);
  rep.entries = static_cast<int64_t>(entries.size());
  struct stat st {};
  if (::stat(out_path.c_str(), &st) == 0) rep.bytes = static_cast<uint64_t>(st.st_size);
  return rep;
}

}  // namespace ptq
