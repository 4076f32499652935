#include "transforms/outlierize.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/model_dir.h"
#include "transforms/fold.h"

namespace ptq {

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

bool is_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

// Every tensor of layer i's weights under its checkpoint name.
std::vector<std::pair<std::string, at::Tensor>> layer_tensors(const ModelConfig& cfg, int64_t i, const LayerWeights& w) {
  const ArchTraits& t = cfg.traits();
  std::vector<std::pair<std::string, at::Tensor>> out;
  auto add = [&](const char* module, const char* suffix, const at::Tensor& x) {
    if (x.defined()) out.emplace_back(cfg.layer_tensor(i, module, suffix), x);
  };
  add(t.attn_norm, "weight", w.attn_norm.weight);
  add(t.attn_norm, "bias", w.attn_norm.bias);
  add(t.mlp_norm, "weight", w.mlp_norm.weight);
  add(t.mlp_norm, "bias", w.mlp_norm.bias);
  for (int k = 0; k < kNumLinear; ++k) {
    const char* module = linear_module_name(cfg, static_cast<LinearId>(k));
    if (*module == '\0') continue;
    add(module, "weight", w.linear[k].weight);
    add(module, "bias", w.linear[k].bias);
  }
  return out;
}

}  // namespace

std::vector<int64_t> outlier_channels(int64_t hidden, int64_t k, uint64_t seed, int64_t layer) {
  if (k < 0 || k > hidden) fail_input("outlierize: --channels {} must be in [0, {}] (hidden size)", k, hidden);
  std::vector<int64_t> idx(hidden);
  std::iota(idx.begin(), idx.end(), 0);
  uint64_t state = seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(layer + 1));
  for (int64_t j = 0; j < k; ++j) {
    // Modulo bias is < hidden / 2^64: irrelevant here, and the draw stays portable.
    const int64_t r = j + static_cast<int64_t>(splitmix64(state) % static_cast<uint64_t>(hidden - j));
    std::swap(idx[j], idx[r]);
  }
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

void outlierize_layer(const ModelConfig& cfg, LayerWeights& w, const std::vector<int64_t>& channels, double scale) {
  if (!(scale > 0) || !std::isfinite(scale)) fail_input("outlierize: --scale {} must be a finite value > 0", scale);
  // fold_input_scale divides the producer by s and multiplies the consumers by s: s = 1/S plants S in γ.
  at::Tensor s = at::ones({cfg.hidden}, at::kFloat);
  for (int64_t c : channels) {
    if (c < 0 || c >= cfg.hidden) fail_input("outlierize: channel {} outside [0, {})", c, cfg.hidden);
    s[c] = 1.0 / scale;
  }
  fold_input_scale(cfg, w, FoldPoint::AttnNorm, s);
  fold_input_scale(cfg, w, FoldPoint::MlpNorm, s);
}

OutlierizeResult outlierize_model(const std::string& src, const std::string& out, const OutlierizeOptions& opt) {
  ModelDirWriter dir(out, src, opt.force);
  Model model(src);
  const ModelConfig& cfg = model.config();
  if (!cfg.pre_norm)
    fail_input("outlierize: {} is a post-norm model (do_layer_norm_before=false); its norm outputs feed the "
               "residual stream, so γ cannot be scaled without changing the function", src);
  if (!(opt.scale > 0) || !std::isfinite(opt.scale))
    fail_input("outlierize: --scale {} must be a finite value > 0", opt.scale);

  const TensorArchive& archive = model.archive();
  std::vector<SafetensorsStreamWriter::Entry> entries;
  for (const auto& name : archive.names()) {
    const TensorView v = archive.view(name);
    entries.push_back({name, is_float(v.dtype()) ? DType::F32 : v.dtype(), v.shape()});
  }
  SafetensorsStreamWriter writer(dir.file("model.safetensors"), entries, {{"format", "pt"}});
  auto write_f32 = [&](const std::string& name, const at::Tensor& t) {
    const at::Tensor c = t.to(at::kFloat).contiguous();
    writer.write(name, c.data_ptr(), static_cast<size_t>(c.numel()) * sizeof(float));
  };

  OutlierizeResult result;
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    LayerWeights w = model.load_layer(i);
    result.channels.push_back(outlier_channels(cfg.hidden, opt.channels, opt.seed, i));
    outlierize_layer(cfg, w, result.channels.back(), opt.scale);
    for (const auto& [name, t] : layer_tensors(cfg, i, w)) write_f32(name, t);
  }
  for (const auto& name : archive.names()) {
    if (writer.written(name)) continue;
    const TensorView v = archive.view(name);
    if (is_float(v.dtype()))
      write_f32(name, to_float_tensor(v));
    else
      writer.write(name, v.data, v.nbytes());
    archive.release(name);
  }
  writer.commit();

  nlohmann::json config = nlohmann::json::parse(read_text_file(src + "/config.json"));
  config["torch_dtype"] = "float32";
  config["ptq_outlierize"] = {{"source", src},      {"channels", opt.channels}, {"scale", opt.scale},
                              {"seed", opt.seed},   {"channels_per_layer", result.channels},
                              {"tool", "ptq " PTQ_VERSION}};
  write_text_file_atomic(dir.file("config.json"), config.dump(2) + "\n");
  dir.copy_tokenizer_files(src);
  dir.commit();
  return result;
}

}  // namespace ptq
