#include "quant/gptq_checkpoint.h"

#include <functional>
#include <memory>
#include <regex>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/error.h"
#include "core/file.h"
#include "quant/act_linear.h"

namespace ptq {

using nlohmann::json;

namespace {

constexpr const char* kQweight = ".qweight";

at::Tensor int_tensor(const TensorView& v, const std::string& file) {
  if (v.dtype() != DType::I32)
    fail_input("{}: tensor \"{}\" is {}, expected I32 (GPTQ packs codes into int32 words)", file, v.name(),
               dtype_name(v.dtype()));
  return at::from_blob(const_cast<uint8_t*>(v.data), v.shape(), at::TensorOptions().dtype(at::kInt)).clone();
}

// "<m>.weight" of every module with a "<m><packed_suffix>" tensor is dequantized through `load`.
class ImportedWeightSource final : public WeightSource {
 public:
  ImportedWeightSource(const TensorArchive& archive, std::string packed_suffix,
                       std::function<QuantizedWeight(const std::string&)> load)
      : archive_(archive), suffix_(std::move(packed_suffix)), load_(std::move(load)) {}
  bool contains(const std::string& name) const override { return archive_.contains(name) || quantized(name); }
  at::Tensor load(const std::string& name) const override {
    if (!quantized(name)) return to_float_tensor(archive_.view(name));
    return dequantize(load_(name.substr(0, name.size() - 7)));
  }
  std::shared_ptr<const kernels::PackedWeights> load_packed(const std::string& module) const override {
    if (!archive_.contains(module + suffix_)) return view_archive_weight(archive_, module);
    return pack_for_kernels(load_(module), module);
  }

 private:
  bool quantized(const std::string& name) const {
    return name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0 &&
           archive_.contains(name.substr(0, name.size() - 7) + suffix_);
  }
  const TensorArchive& archive_;
  const std::string suffix_;
  const std::function<QuantizedWeight(const std::string&)> load_;
};

// config.json's quantization_config (null when absent).
json quantization_config_of(const std::string& path) {
  if (!file_exists(path)) return json();
  json cfg;
  try {
    cfg = json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    fail_input("{}: not valid JSON ({})", path, e.what());
  }
  return cfg.is_object() && cfg.contains("quantization_config") ? cfg["quantization_config"] : json();
}

constexpr const char* kPacked = ".weight_packed";

// ---- compressed-tensors pack-quantized ----
struct CtModule {
  int64_t N = 0, K = 0, G = 0;
  int bits = 0;
  bool sym = true, act_order = false;
};

CtModule ct_module(const TensorArchive& archive, const std::string& m) {
  CtModule c;
  const TensorView packed = archive.view(m + kPacked);
  const TensorView shape = archive.view(m + ".weight_shape");
  const TensorView scale = archive.view(m + ".weight_scale");
  if (shape.numel() != 2 || (shape.dtype() != DType::I64 && shape.dtype() != DType::I32))
    fail_input("{}: tensor \"{}\" is {} {}, expected I64 [2] ([N, K])", archive.path(), shape.name(),
               dtype_name(shape.dtype()), shape_str(shape.shape()));
  if (shape.dtype() == DType::I64) {
    const auto* p = reinterpret_cast<const int64_t*>(shape.data);
    c.N = p[0], c.K = p[1];
  } else {
    const auto* p = reinterpret_cast<const int32_t*>(shape.data);
    c.N = p[0], c.K = p[1];
  }
  if (packed.dtype() != DType::I32 || packed.shape().size() != 2 || packed.shape()[0] != c.N || c.K <= 0 ||
      (packed.shape()[1] * 32) % c.K != 0)
    fail_input("{}: tensor \"{}\" is {} {}, expected I32 [{}, {}*bits/32]", archive.path(), packed.name(),
               dtype_name(packed.dtype()), shape_str(packed.shape()), c.N, c.K);
  c.bits = static_cast<int>(packed.shape()[1] * 32 / c.K);
  if (c.bits < kGridMinBits || c.bits > kGridMaxBits || !bit_width_traits(c.bits).int32_lanes)
    fail_input("{}: module \"{}\" packs {} bits per weight; pack-quantized holds 2, 4 or 8", archive.path(), m, c.bits);
  if (scale.shape().size() != 2 || scale.shape()[0] != c.N || scale.shape()[1] < 1 || c.K % scale.shape()[1] != 0)
    fail_input("{}: tensor \"{}\" has shape {}, expected [{}, G] with G dividing {}", archive.path(), scale.name(),
               shape_str(scale.shape()), c.N, c.K);
  c.G = scale.shape()[1];
  c.sym = !archive.contains(m + ".weight_zero_point");
  c.act_order = archive.contains(m + ".weight_g_idx");
  return c;
}

QuantizedWeight load_ct_weight(const TensorArchive& archive, const std::string& m) {
  const CtModule c = ct_module(archive, m);
  QuantizedWeight qw;
  qw.spec = {c.bits, c.G == 1 ? kPerChannel : c.K / c.G, c.sym, false};
  qw.q = unpack_bits(int_tensor(archive.view(m + kPacked), archive.path()), c.bits).to(at::kByte);
  qw.scales = to_float_tensor(archive.view(m + ".weight_scale")).contiguous();
  if (c.sym) {
    qw.zeros = at::full({c.N, c.G}, 1 << (c.bits - 1), at::kInt);
  } else {
    const at::Tensor zp = int_tensor(archive.view(m + ".weight_zero_point"), archive.path());
    if ((c.N * c.bits) % 32 != 0 || zp.dim() != 2 || zp.size(0) != packed_words(c.N, c.bits) || zp.size(1) != c.G)
      fail_input("{}: tensor \"{}.weight_zero_point\" has shape {}, expected [{}, {}] (packed along N)",
                 archive.path(), m, shape_str(zp.sizes().vec()), packed_words(c.N, c.bits), c.G);
    qw.zeros = unpack_bits(zp.t().contiguous(), c.bits).t().contiguous();
  }
  if (c.act_order) {
    qw.g_idx = int_tensor(archive.view(m + ".weight_g_idx"), archive.path());
    if (qw.g_idx.numel() != c.K || qw.g_idx.min().item<int64_t>() < 0 || qw.g_idx.max().item<int64_t>() >= c.G)
      fail_input("{}: tensor \"{}.weight_g_idx\" must hold {} groups in [0, {})", archive.path(), m, c.K, c.G);
  } else {
    qw.g_idx = at::arange(c.K, at::kInt).div(c.K / c.G, "floor").to(at::kInt);
  }
  return qw;
}

// ---- compressed-tensors int-quantized (one signed integer per weight) ----
constexpr const char* kIntWeightScale = ".weight_scale";

// The config group of module `m`: an exact target, else a "re:" target matching from the start (as
// compressed-tensors and vLLM match), else "Linear"; null when none.
const json* ct_group_of(const json& q, const std::string& m) {
  const json* linear = nullptr;
  const json* regex_hit = nullptr;
  if (!q.contains("config_groups") || !q["config_groups"].is_object()) return nullptr;
  for (const auto& [name, g] : q["config_groups"].items()) {  // by reference: the result points into q
    if (!g.is_object() || !g.contains("targets") || !g["targets"].is_array()) continue;
    for (const auto& t : g["targets"]) {
      if (!t.is_string()) continue;
      const std::string target = t.get<std::string>();
      if (target == m) return &g;
      if (target.rfind("re:", 0) == 0 && !regex_hit && std::regex_search(m, std::regex("^(?:" + target.substr(3) + ")")))
        regex_hit = &g;
      if (target == "Linear" && !linear) linear = &g;
    }
  }
  return regex_hit ? regex_hit : linear;
}

// Input activations of a config group as ptq's scheme: "tensor" static or "token" dynamic int, clip 1.
std::optional<ActQuantSpec> ct_input_scheme(const json& group, const std::string& where) {
  const json a = group.value("input_activations", json());
  if (a.is_null()) return std::nullopt;
  ActQuantSpec spec;
  spec.bits = a.value("num_bits", 8);
  spec.sym = a.value("symmetric", true);
  const std::string strategy = a.value("strategy", "tensor"), type = a.value("type", "int");
  const bool dynamic = a.value("dynamic", false);
  if (type != "int" || spec.bits < 2 || spec.bits > 8)
    fail_input("{}: input_activations {} {}-bit: ptq reads int activations of 2 to 8 bits", where, type, spec.bits);
  if (strategy == "tensor" && !dynamic) {
    spec.granularity = ActGranularity::PerTensor;
  } else if (strategy == "token" && dynamic) {
    spec.granularity = ActGranularity::PerToken;
  } else {
    fail_input("{}: input_activations strategy \"{}\" with dynamic {}: ptq reads static \"tensor\" and dynamic "
               "\"token\" activations", where, strategy, dynamic);
  }
  return spec;
}

ModuleQuantInfo ct_int_module(const TensorArchive& archive, const std::string& m, const json& q,
                              const std::string& config_path) {
  const TensorView w = archive.view(m + ".weight");
  const TensorView scale = archive.view(m + kIntWeightScale);
  if (w.shape().size() != 2)
    fail_input("{}: tensor \"{}\" has shape {}, expected [N, K]", archive.path(), w.name(), shape_str(w.shape()));
  const int64_t N = w.shape()[0], K = w.shape()[1];
  if (scale.shape().size() != 2 || scale.shape()[0] != N || scale.shape()[1] < 1 || K % scale.shape()[1] != 0)
    fail_input("{}: tensor \"{}\" has shape {}, expected [{}, G] with G dividing {}", archive.path(), scale.name(),
               shape_str(scale.shape()), N, K);
  const json* group = ct_group_of(q, m);
  if (!group) fail_input("{}: module \"{}\" has int8 weights but no config group targets it", config_path, m);
  ModuleQuantInfo info;
  info.out_features = N;
  info.in_features = K;
  const int64_t G = scale.shape()[1];
  const int bits = group->value("weights", json::object()).value("num_bits", 8);
  if (bits < 2 || bits > 8) fail_input("{}: module \"{}\": {}-bit weights in int8 tensors", config_path, m, bits);
  info.spec = {bits, G == 1 ? kPerChannel : K / G, !archive.contains(m + ".weight_zero_point"), false};
  info.act_order = archive.contains(m + ".weight_g_idx");
  info.format = "compressed-tensors:" + grid_of(info.spec).name();
  info.method = "imported compressed-tensors";
  info.act = ct_input_scheme(*group, fmt::format("{}: module \"{}\"", config_path, m));
  return info;
}

// An I8 (or I32) tensor of signed values, shifted by 2^(bits-1) into ptq's unsigned grid.
at::Tensor unsigned_from_signed(const TensorView& v, int bits, const std::string& file) {
  at::Tensor t;
  if (v.dtype() == DType::I8) {
    t = at::from_blob(const_cast<uint8_t*>(v.data), v.shape(), at::TensorOptions().dtype(at::kChar)).to(at::kInt);
  } else {
    t = int_tensor(v, file);
  }
  t = t + (1 << (bits - 1));
  if (t.numel() > 0 && (t.min().item<int>() < 0 || t.max().item<int>() >= (1 << bits)))
    fail_input("{}: tensor \"{}\" holds values outside the signed {}-bit range", file, v.name(), bits);
  return t.contiguous();
}

QuantizedWeight load_ct_int_weight(const TensorArchive& archive, const std::string& m, const ModuleQuantInfo& info) {
  const int bits = info.spec.bits;
  const int64_t N = info.out_features, K = info.in_features, G = group_count(info.spec, K);
  const TensorView w = archive.view(m + ".weight");
  if (w.dtype() != DType::I8)
    fail_input("{}: tensor \"{}\" is {}, expected I8", archive.path(), w.name(), dtype_name(w.dtype()));
  QuantizedWeight qw;
  qw.spec = info.spec;
  qw.q = unsigned_from_signed(w, bits, archive.path()).to(at::kByte);
  qw.scales = to_float_tensor(archive.view(m + kIntWeightScale)).contiguous();
  if (info.spec.sym) {
    qw.zeros = at::full({N, G}, 1 << (bits - 1), at::kInt);
  } else {
    const TensorView zv = archive.view(m + ".weight_zero_point");
    if (zv.shape() != std::vector<int64_t>{N, G})
      fail_input("{}: tensor \"{}\" has shape {}, expected [{}, {}]", archive.path(), zv.name(), shape_str(zv.shape()),
                 N, G);
    qw.zeros = unsigned_from_signed(zv, bits, archive.path());
  }
  if (info.act_order) {
    qw.g_idx = int_tensor(archive.view(m + ".weight_g_idx"), archive.path());
    if (qw.g_idx.numel() != K || qw.g_idx.min().item<int64_t>() < 0 || qw.g_idx.max().item<int64_t>() >= G)
      fail_input("{}: tensor \"{}.weight_g_idx\" must hold {} groups in [0, {})", archive.path(), m, K, G);
  } else {
    qw.g_idx = at::arange(K, at::kInt).div(K / G, "floor").to(at::kInt);
  }
  return qw;
}

bool is_int_quantized(const ImportedCheckpoint& ck) {
  return ck.kind == ImportedCheckpoint::Kind::CompressedTensors && ck.raw.value("format", "") == "int-quantized";
}

std::unique_ptr<WeightSource> imported_weight_source(const TensorArchive& archive, const ImportedCheckpoint& ck) {
  if (ck.kind == ImportedCheckpoint::Kind::Gptq) return make_gptq_weight_source(archive, ck.gptq);
  if (is_int_quantized(ck)) {
    auto qc = std::make_shared<CheckpointQuantConfig>(imported_module_config(archive, ck));
    return std::make_unique<ImportedWeightSource>(archive, kIntWeightScale, [&archive, qc](const std::string& m) {
      return load_ct_int_weight(archive, m, qc->modules.at(m));
    });
  }
  return std::make_unique<ImportedWeightSource>(
      archive, kPacked, [&archive](const std::string& m) { return load_ct_weight(archive, m); });
}

}  // namespace

bool read_gptq_config(const std::string& dir, GptqCheckpointConfig& out) {
  std::string path = dir + "/config.json";
  json q = quantization_config_of(path);
  if (q.is_null() && file_exists(dir + "/quantize_config.json")) {  // AutoGPTQ before transformers integration
    path = dir + "/quantize_config.json";
    try {
      q = json::parse(read_text_file(path));
    } catch (const json::exception& e) {
      fail_input("{}: not valid JSON ({})", path, e.what());
    }
    if (!q.contains("quant_method")) q["quant_method"] = "gptq";
  }
  if (!q.is_object() || q.value("quant_method", "") != "gptq") return false;
  out.config_path = path;
  out.raw = q;
  const std::string fmt_name = q.value("checkpoint_format", "gptq");
  if (fmt_name == "gptq") {
    out.format = GptqFormat::V1;
  } else if (fmt_name == "gptq_v2") {
    out.format = GptqFormat::V2;
  } else {
    fail_input("{}: quantization_config.checkpoint_format \"{}\" is not a GPTQ layout ptq reads (\"gptq\", "
               "\"gptq_v2\")", path, fmt_name);
  }
  try {
    out.bits = q.at("bits").get<int>();
    out.group_size = q.value("group_size", int64_t{-1});
    out.sym = q.value("sym", true);
    out.desc_act = q.value("desc_act", false);
  } catch (const json::exception& e) {
    fail_input("{}: quantization_config is malformed ({})", path, e.what());
  }
  auto check = [&](const GptqScheme& g, const std::string& where) {
    if (g.bits < kGridMinBits || g.bits > kGridMaxBits || !bit_width_traits(g.bits).gptq)
      fail_input("{}: GPTQ bits {}{} is not one of 2, 3, 4, 8", path, g.bits, where);
    if (g.group_size == 0 || g.group_size < -1)
      fail_input("{}: GPTQ group_size {}{} is neither -1 nor positive", path, g.group_size, where);
  };
  check(out, "");
  if (q.contains("dynamic") && q["dynamic"].is_object()) {
    for (auto it = q["dynamic"].begin(); it != q["dynamic"].end(); ++it) {
      GptqDynamicRule r;
      std::string key = it.key();
      if (key.rfind("-:", 0) == 0 || key.rfind("+:", 0) == 0) {
        r.positive = key[0] == '+';
        key = key.substr(2);
      }
      r.pattern = key;
      try {
        r.re = std::regex(key);
      } catch (const std::regex_error& e) {
        fail_input("{}: quantization_config.dynamic key \"{}\" is not a valid regex ({})", path, it.key(), e.what());
      }
      if (!it.value().is_object())
        fail_input("{}: quantization_config.dynamic[\"{}\"] must be an object of overrides", path, it.key());
      r.overrides = it.value();
      GptqScheme g = out;
      g.bits = r.overrides.value("bits", g.bits);
      g.group_size = r.overrides.value("group_size", g.group_size);
      check(g, fmt::format(" (dynamic \"{}\")", it.key()));
      out.dynamic.push_back(std::move(r));
    }
  }
  return true;
}

GptqScheme GptqCheckpointConfig::scheme_of(const std::string& module) const {
  GptqScheme g = *this;
  for (const GptqDynamicRule& r : dynamic) {
    if (!std::regex_search(module, r.re, std::regex_constants::match_continuous)) continue;
    if (r.positive) {
      g.bits = r.overrides.value("bits", g.bits);
      g.group_size = r.overrides.value("group_size", g.group_size);
      g.sym = r.overrides.value("sym", g.sym);
      g.desc_act = r.overrides.value("desc_act", g.desc_act);
    }
    break;
  }
  return g;
}

CheckpointQuantConfig gptq_module_config(const TensorArchive& archive, const GptqCheckpointConfig& cfg) {
  CheckpointQuantConfig qc;
  qc.raw = cfg.raw;
  const std::string method = fmt::format("imported {}", gptq_format_name(cfg.format));
  for (const auto& name : archive.names()) {
    if (name.size() <= 8 || name.compare(name.size() - 8, 8, kQweight) != 0) continue;
    const std::string module = name.substr(0, name.size() - 8);
    const std::vector<int64_t>& qshape = archive.view(name).shape();
    const GptqScheme g = cfg.scheme_of(module);
    if (qshape.size() != 2)
      fail_input("{}: tensor \"{}\" has shape {}, expected [K*{}/32, N]", archive.path(), name, shape_str(qshape),
                 g.bits);
    ModuleQuantInfo m;
    m.in_features = qshape[0] * 32 / g.bits;
    m.out_features = qshape[1];
    m.spec = {g.bits, g.group_size > 0 ? g.group_size : kPerChannel, g.sym, false};
    m.format = fmt::format("{}:{}", gptq_format_name(cfg.format), WeightGrid{g.bits, g.group_size, g.sym}.name());
    m.method = method;
    m.act_order = g.desc_act;
    qc.modules[module] = m;
  }
  if (qc.modules.empty())
    fail_input("{}: GPTQ config ({}) but no \"*.qweight\" tensor in the checkpoint", archive.path(), cfg.config_path);
  return qc;
}

QuantizedWeight load_gptq_weight(const TensorArchive& archive, const std::string& module,
                                 const GptqCheckpointConfig& cfg) {
  const std::string& file = archive.path();
  GptqTensors t;
  t.qweight = int_tensor(archive.view(module + kQweight), file);
  t.qzeros = int_tensor(archive.view(module + ".qzeros"), file);
  t.scales = to_float_tensor(archive.view(module + ".scales"));
  if (t.qweight.dim() != 2 || t.scales.dim() != 2)
    fail_input("{}: module \"{}\": qweight {} and scales {} must be 2-D", file, module,
               shape_str(t.qweight.sizes().vec()), shape_str(t.scales.sizes().vec()));
  const GptqScheme g = cfg.scheme_of(module);
  const int64_t k = t.qweight.size(0) * 32 / g.bits, groups = t.scales.size(0);
  if (archive.contains(module + ".g_idx")) {
    t.g_idx = int_tensor(archive.view(module + ".g_idx"), file);
  } else {
    if (groups <= 0 || k % groups != 0)
      fail_input("{}: module \"{}\" has {} groups of scales for K = {} input columns and no g_idx", file, module,
                 groups, k);
    t.g_idx = at::arange(k, at::kInt).div(k / groups, "floor").to(at::kInt);
  }
  QuantizedWeight qw = unpack_gptq(t, g.bits, cfg.format, fmt::format("{}: module \"{}\"", file, module));
  if (g.group_size > 0 && groups != (k + g.group_size - 1) / g.group_size)
    fail_input("{}: module \"{}\" has {} scale groups; group_size {} over K = {} needs {}", file, module, groups,
               g.group_size, k, (k + g.group_size - 1) / g.group_size);
  return qw;
}

std::unique_ptr<WeightSource> make_gptq_weight_source(const TensorArchive& archive, const GptqCheckpointConfig& cfg) {
  return std::make_unique<ImportedWeightSource>(
      archive, kQweight, [&archive, cfg](const std::string& m) { return load_gptq_weight(archive, m, cfg); });
}

std::string ImportedCheckpoint::format_name() const {
  return kind == Kind::CompressedTensors ? "compressed-tensors" : gptq_format_name(gptq.format);
}

bool read_imported_config(const std::string& dir, ImportedCheckpoint& out) {
  if (read_gptq_config(dir, out.gptq)) {
    out.kind = ImportedCheckpoint::Kind::Gptq;
    out.config_path = out.gptq.config_path;
    out.raw = out.gptq.raw;
    return true;
  }
  const std::string path = dir + "/config.json";
  const json q = quantization_config_of(path);
  if (!q.is_object() || q.value("quant_method", "") != "compressed-tensors") return false;
  const std::string format = q.value("format", "");
  if (format != "pack-quantized" && format != "int-quantized")
    fail_input("{}: compressed-tensors format \"{}\" is not supported as input (ptq reads \"pack-quantized\" and "
               "\"int-quantized\")", path, format);
  if (q.value("quantization_status", "compressed") != "compressed")
    fail_input("{}: compressed-tensors quantization_status \"{}\": ptq reads \"compressed\" checkpoints", path,
               q.value("quantization_status", ""));
  out.kind = ImportedCheckpoint::Kind::CompressedTensors;
  out.config_path = path;
  out.raw = q;
  return true;
}

CheckpointQuantConfig imported_module_config(const TensorArchive& archive, const ImportedCheckpoint& ck) {
  if (ck.kind == ImportedCheckpoint::Kind::Gptq) return gptq_module_config(archive, ck.gptq);
  CheckpointQuantConfig qc;
  qc.raw = ck.raw;
  if (is_int_quantized(ck)) {
    for (const auto& name : archive.names()) {
      if (name.size() <= 7 || name.compare(name.size() - 7, 7, ".weight") != 0) continue;
      const std::string m = name.substr(0, name.size() - 7);
      if (archive.view(name).dtype() != DType::I8 || !archive.contains(m + kIntWeightScale)) continue;
      qc.modules[m] = ct_int_module(archive, m, ck.raw, ck.config_path);
    }
    if (qc.modules.empty())
      fail_input("{}: compressed-tensors int-quantized config ({}) but no int8 \"*.weight\" with a weight_scale",
                 archive.path(), ck.config_path);
    return qc;
  }
  for (const auto& name : archive.names()) {
    if (name.size() <= 14 || name.compare(name.size() - 14, 14, kPacked) != 0) continue;
    const std::string m = name.substr(0, name.size() - 14);
    const CtModule c = ct_module(archive, m);
    ModuleQuantInfo info;
    info.out_features = c.N;
    info.in_features = c.K;
    info.spec = {c.bits, c.G == 1 ? kPerChannel : c.K / c.G, c.sym, false};
    info.format = "compressed-tensors:" + grid_of(info.spec).name();
    info.method = "imported compressed-tensors";
    info.act_order = c.act_order;
    qc.modules[m] = info;
  }
  if (qc.modules.empty())
    fail_input("{}: compressed-tensors config ({}) but no \"*.weight_packed\" tensor", archive.path(), ck.config_path);
  return qc;
}

QuantizedWeight load_imported_weight(const TensorArchive& archive, const std::string& module,
                                     const ImportedCheckpoint& ck) {
  if (ck.kind == ImportedCheckpoint::Kind::Gptq) return load_gptq_weight(archive, module, ck.gptq);
  if (is_int_quantized(ck)) return load_ct_int_weight(archive, module, ct_int_module(archive, module, ck.raw, ck.config_path));
  return load_ct_weight(archive, module);
}

ActQuantParams load_imported_act_params(const TensorArchive& archive, const std::string& module,
                                        const ModuleQuantInfo& info) {
  ActQuantParams p;
  if (!info.act || !info.act->is_static()) return p;
  const std::string sname = module + ".input_scale", zname = module + ".input_zero_point";
  if (!archive.contains(sname))
    fail_input("{}: module \"{}\" has a static activation scheme but no {}", archive.path(), module, sname);
  const TensorView sv = archive.view(sname);
  if (sv.numel() != 1)
    fail_input("{}: tensor \"{}\" has shape {}, expected one per-tensor scale", archive.path(), sname,
               shape_str(sv.shape()));
  p.scale = to_float_tensor(sv).to(at::kFloat).reshape({1}).contiguous();
  if (!(p.scale > 0).all().item<bool>() || !at::isfinite(p.scale).all().item<bool>())
    fail_input("{}: tensor \"{}\" holds a scale that is not finite and > 0", archive.path(), sname);
  if (info.act->sym) {
    p.zero = at::zeros({1}, at::kFloat);
  } else {
    if (!archive.contains(zname))
      fail_input("{}: asymmetric module \"{}\" has no {}", archive.path(), module, zname);
    const TensorView zv = archive.view(zname);
    if (zv.numel() != 1)
      fail_input("{}: tensor \"{}\" has shape {}, expected one zero point", archive.path(), zname,
                 shape_str(zv.shape()));
    p.zero = unsigned_from_signed(zv, info.act->bits, archive.path()).to(at::kFloat).reshape({1});
  }
  return p;
}

std::unique_ptr<WeightSource> make_imported_weight_source(const TensorArchive& archive, const ImportedCheckpoint& ck) {
  if (is_int_quantized(ck))
    for (const auto& [m, info] : imported_module_config(archive, ck).modules)
      if (info.act)
        fail_input("{}: module \"{}\" quantizes its inputs ({}); without its activation kernels the model would run "
                   "W8A16, so it is opened only through open_imported_model (quant/gptq_checkpoint.h)", archive.path(),
                   m, info.act->describe());
  return imported_weight_source(archive, ck);
}

Model::LayerFinisher make_imported_layer_finisher(const Model& model, const ImportedCheckpoint& ck) {
  auto qc = std::make_shared<CheckpointQuantConfig>(imported_module_config(model.archive(), ck));
  bool any_act = false;
  for (const auto& [m, info] : qc->modules) any_act = any_act || info.act.has_value();
  if (!any_act) return {};
  const Model* mp = &model;
  return [mp, qc](int64_t layer, LayerWeights& w) {
    const TensorArchive& archive = mp->archive();
    attach_act_kernels(
        mp->config(), layer, w, *qc,
        [&](const std::string& m, const ModuleQuantInfo& info) { return load_ct_int_weight(archive, m, info); },
        [&](const std::string& m, const ModuleQuantInfo& info) { return load_imported_act_params(archive, m, info); });
  };
}

std::unique_ptr<Model> open_imported_model(const std::string& dir, const ImportedCheckpoint& ck) {
  auto model = std::make_unique<Model>(
      dir, [&ck](const TensorArchive& archive) { return imported_weight_source(archive, ck); });
  model->set_layer_finisher(make_imported_layer_finisher(*model, ck));
  return model;
}

}  // namespace ptq
