#include "quant/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "core/error.h"
#include "core/fault.h"
#include "core/file.h"
#include "core/model_dir.h"
#include "io/gguf_kquants.h"
#include "model/hadamard.h"
#include "quant/act_linear.h"
#include "quant/formats.h"

namespace ptq {

using nlohmann::json;

namespace {

int64_t padded32(int64_t n) { return (n + 31) / 32 * 32; }

// Codes [R, L] -> words [R, ceil(L/32)*bits]: rows padded with zero codes to a multiple of 32.
// Rows are packed independently, a block of about 1M codes at a time: pack_bits holds several int64 copies
// of its input, which for a whole 7B MLP weight (45M codes) would add ~2 GB to the peak memory.
at::Tensor pack_rows(const at::Tensor& codes, int bits, const std::string& name) {
  const int64_t R = codes.size(0), L = codes.size(1), Lp = padded32(L);
  const int64_t block = std::max<int64_t>(1, (int64_t{1} << 20) / Lp);
  at::Tensor out = at::empty({R, Lp / 32 * bits}, at::kInt);
  for (int64_t r0 = 0; r0 < R; r0 += block) {
    const int64_t n = std::min(block, R - r0);
    at::Tensor c = codes.narrow(0, r0, n).to(at::kInt);
    if (Lp != L) c = at::constant_pad_nd(c, {0, Lp - L}, 0);
    out.narrow(0, r0, n).copy_(pack_bits(c, bits, name));
  }
  return out;
}

at::Tensor unpack_rows(const at::Tensor& words, int bits, int64_t L) {
  return unpack_bits(words, bits).narrow(1, 0, L).contiguous();
}

at::Tensor natural_g_idx(const WeightQuantSpec& spec, int64_t in) {
  return at::arange(in, at::kInt).div(group_width(spec, in), "floor").to(at::kInt);
}

at::Tensor tensor_of(const TensorView& v, at::ScalarType st) {
  return at::from_blob(const_cast<uint8_t*>(v.data), v.shape(), at::TensorOptions().dtype(st)).clone();
}

// The codes [rows, L] as bytes straight from the stored words (LSB-first bit streams, a code may straddle two words),
// one pass, no wider temporaries (unpack_bits makes several int64 [rows, L] ones: ~0.5 GB for one 2048 x 5504
// module). The same values as unpack_rows for every width of 2 to 8 bits (tests/quant/test_checkpoint.cpp).
at::Tensor unpack_rows_u8(const TensorView& words, int bits, int64_t L) {
  const int64_t rows = words.shape().at(0), n_words = words.shape().at(1);
  if (bits < 1 || bits > 8 || L * bits > n_words * 32)
    fail_input("tensor \"{}\" holds {} bits per row, expected {} codes of {} bits", words.name(), n_words * 32, L, bits);
  at::Tensor out = at::empty({rows, L}, at::kByte);
  uint8_t* po = out.data_ptr<uint8_t>();
  const uint8_t* pw = words.data;
  const uint32_t mask = (1u << bits) - 1u;
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = pw + r * n_words * 4;
      for (int64_t j = 0; j < L; ++j) {
        const BitPosition p = code_position(j, bits);
        uint64_t w = 0;  // little-endian words; the mapped data need not be 4-byte aligned
        std::memcpy(&w, row + p.word * 4, p.shift + bits > 32 ? 8 : 4);
        po[r * L + j] = static_cast<uint8_t>((w >> p.shift) & mask);
      }
    }
  });
  return out;
}

void expect(const TensorView& v, DType dtype, const std::vector<int64_t>& shape) {
  if (v.dtype() != dtype || v.shape() != shape)
    fail_input("tensor \"{}\" is {} {}, expected {} {}", v.name(), dtype_name(v.dtype()), shape_str(v.shape()),
               dtype_name(dtype), shape_str(shape));
}

ModuleQuantInfo parse_module_info(const std::string& where, const std::string& module, const json& j) {
  ModuleQuantInfo m;
  try {
    m.format = j.at("format").get<std::string>();
    m.spec.bits = j.at("bits").get<int>();
    m.spec.group_size = j.at("group_size").get<int64_t>();
    m.spec.sym = j.at("sym").get<bool>();
    m.method = j.value("method", "");
    m.act_order = j.value("act_order", false);
    m.out_features = j.at("out_features").get<int64_t>();
    m.in_features = j.at("in_features").get<int64_t>();
    m.metrics = j.value("metrics", json());
    if (j.contains("activation") && !j["activation"].is_null())
      m.act = act_spec_from_json(j["activation"], fmt::format("{}: module \"{}\"", where, module));
    if (j.contains("folded")) m.folded = j["folded"].get<std::vector<std::string>>();
    if (j.contains("ggml_type")) {
      const std::string t = j["ggml_type"].get<std::string>();
      m.ggml = ggml_type_from_name(t);
      if (!m.ggml || !ggml_grid_traits(*m.ggml))
        fail_input("{}: module \"{}\" has ggml_type \"{}\", not a GGUF block type", where, module, t);
    }
  } catch (const json::exception& e) {
    fail_input("{}: quantization_config.modules[\"{}\"] is malformed ({})", where, module, e.what());
  }
  if (m.spec.bits < 2 || m.spec.bits > 8)
    fail_input("{}: module \"{}\" has {} bits; packed checkpoints hold 2 to 8", where, module, m.spec.bits);
  return m;
}

// The inverse of parse_module_info (config.json's quantization_config.modules entries).
json module_info_json(const ModuleQuantInfo& info) {
  json j = {{"format", info.format},   {"bits", info.spec.bits},
            {"group_size", info.spec.group_size}, {"sym", info.spec.sym},
            {"method", info.method},   {"act_order", info.act_order},
            {"out_features", info.out_features},  {"in_features", info.in_features}};
  if (!info.metrics.is_null()) j["metrics"] = info.metrics;
  if (info.act) j["activation"] = info.act->to_json();
  if (!info.folded.empty()) j["folded"] = info.folded;
  if (info.ggml) j["ggml_type"] = ggml_type_name(*info.ggml);
  return j;
}

// A packed module's tensors, checked against its scheme: the mapped qweight stream, and the small ones decoded.
struct StoredModule {
  TensorView qweight;  // I32 [out, padded32(in) * b / 32]: the row bit streams (layout atop checkpoint.h)
  int64_t groups = 0;
  at::Tensor scales;   // [out, G] fp32 (stored fp16)
  at::Tensor zeros;    // [out, G] int32; undefined for symmetric grids (zero 2^(b-1))
  at::Tensor g_idx;    // [in] int32; undefined when absent (natural group order)
};

StoredModule read_stored_module(const TensorArchive& archive, const std::string& module, const ModuleQuantInfo& info) {
  const int64_t out = info.out_features, in = info.in_features;
  const int b = info.spec.bits;
  check_spec(info.spec, in, module);
  StoredModule m;
  m.groups = group_count(info.spec, in);
  m.qweight = archive.view(module + ".qweight");
  expect(m.qweight, DType::I32, {out, padded32(in) * b / 32});
  const TensorView scales = archive.view(module + ".scales");
  expect(scales, DType::F16, {out, m.groups});
  m.scales = tensor_of(scales, at::kHalf).to(at::kFloat);
  if (!info.spec.sym) {
    const TensorView qzeros = archive.view(module + ".qzeros");
    expect(qzeros, DType::I32, {out, padded32(m.groups) * b / 32});
    m.zeros = unpack_rows(tensor_of(qzeros, at::kInt), b, m.groups).contiguous();
  }
  if (archive.contains(module + ".g_idx")) {
    const TensorView g = archive.view(module + ".g_idx");
    expect(g, DType::I32, {in});
    m.g_idx = tensor_of(g, at::kInt);
    if (m.g_idx.min().item<int>() < 0 || m.g_idx.max().item<int>() >= m.groups)
      fail_input("tensor \"{}.g_idx\" holds a group outside [0, {})", module, m.groups);
  } else if (info.act_order) {  // natural order would silently pair columns with the wrong group steps
    fail_input("module {} is marked act_order in quantization_config but the checkpoint has no \"{}.g_idx\"", module,
               module);
  }
  return m;
}

// A module's codes straight from the mapped qweight stream into the kernels' layout (no [out, in] intermediate:
// LibTorch's unpacking made loading a 1B model take ~50 s).
std::shared_ptr<const kernels::PackedWeights> load_packed_module(const TensorArchive& archive, const std::string& module,
                                                                 const ModuleQuantInfo& info) {
  const StoredModule m = read_stored_module(archive, module, info);
  const int64_t in = info.in_features;
  const int b = info.spec.bits;
  return std::make_shared<const kernels::PackedWeights>(kernels::pack_quantized_stream(
      m.qweight.data, padded32(in) * b / 8, info.out_features, in, b, m.groups, m.scales.data_ptr<float>(),
      m.zeros.defined() ? m.zeros.data_ptr<int32_t>() : nullptr,
      m.g_idx.defined() ? m.g_idx.data_ptr<int32_t>() : nullptr, module.c_str()));
}

class QuantizedWeightSource final : public WeightSource {
 public:
  QuantizedWeightSource(const TensorArchive& archive, const CheckpointQuantConfig& qc)
      : archive_(archive), qc_(qc) {
    for (const auto& [module, info] : qc_.modules) {
      if (info.ggml) {
        if (!archive_.contains(module + ".ggml"))
          fail_input("{}: module \"{}\" is stored as GGUF {} blocks but has no \"{}.ggml\" tensor", archive_.path(),
                     module, ggml_type_name(*info.ggml), module);
        continue;
      }
      if (!archive_.contains(module + ".qweight") || !archive_.contains(module + ".scales"))
        fail_input("{}: quantized module \"{}\" has no qweight/scales tensors", archive_.path(), module);
    }
  }
  bool contains(const std::string& name) const override { return archive_.contains(name) || quantized(name); }
  at::Tensor load(const std::string& name) const override {
    const std::string module = quantized(name) ? name.substr(0, name.size() - 7) : std::string();
    if (module.empty()) return to_float_tensor(archive_.view(name));
    const ModuleQuantInfo& info = qc_.modules.at(module);
    if (info.ggml) {  // decoded as llama.cpp decodes the blocks
      const std::vector<uint8_t> blocks = load_ggml_blocks(archive_, module, info);
      at::Tensor w = at::empty({info.out_features, info.in_features});
      ggml_decode(*info.ggml, blocks.data(), w.data_ptr<float>(), w.numel());
      return w;
    }
    return dequantize(load_quantized_weight(archive_, module, info));
  }
  // Quantized modules are repacked for the kernels (their mapped pages released once copied). A module with an
  // activation scheme loads packed too (its weights as a weight-only module would run them): the layer finisher
  // then attaches its integer-semantics kernel and drops this copy (make_checkpoint_layer_finisher).
  std::shared_ptr<const kernels::PackedWeights> load_packed(const std::string& module) const override {
    const auto it = qc_.modules.find(module);
    if (it == qc_.modules.end()) return view_archive_weight(archive_, module);
    if (it->second.ggml) return nullptr;  // GGUF blocks: decoded to fp32 by load() (issue 11)
    auto packed = load_packed_module(archive_, module, it->second);
    for (const char* suffix : {".qweight", ".scales", ".qzeros", ".g_idx"})
      if (archive_.contains(module + suffix)) archive_.release(module + suffix);
    return packed;
  }

 private:
  bool quantized(const std::string& name) const {
    return name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0 &&
           qc_.modules.count(name.substr(0, name.size() - 7)) != 0;
  }

  const TensorArchive& archive_;
  const CheckpointQuantConfig qc_;
};

}  // namespace

bool read_checkpoint_quant_config(const std::string& dir, CheckpointQuantConfig& out) {
  const std::string path = dir + "/config.json";
  if (!file_exists(path)) return false;
  json cfg;
  try {
    cfg = json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    fail_input("{}: not valid JSON ({})", path, e.what());
  }
  if (!cfg.is_object() || !cfg.contains("quantization_config")) return false;
  const json& q = cfg["quantization_config"];
  const std::string method = q.value("quant_method", "");
  if (method != kCheckpointQuantMethod)
    fail_input("{}: quantization_config.quant_method \"{}\" is not supported as input yet (ptq reads its own \"ptq\" "
               "checkpoints)", path, method);
  out.format_version = q.value("format_version", 0);
  if (out.format_version > kCheckpointFormatVersion)
    fail_input("{}: checkpoint format version {} is newer than this ptq understands ({}); upgrade ptq to read it",
               path, out.format_version, kCheckpointFormatVersion);
  if (out.format_version < 1) fail_input("{}: quantization_config.format_version is missing or invalid", path);
  if (!q.contains("modules") || !q["modules"].is_object()) fail_input("{}: quantization_config.modules missing", path);
  for (auto it = q["modules"].begin(); it != q["modules"].end(); ++it)
    out.modules[it.key()] = parse_module_info(path, it.key(), it.value());
  if (q.contains("unquantized") && q["unquantized"].is_object())
    for (auto it = q["unquantized"].begin(); it != q["unquantized"].end(); ++it)
      out.unquantized[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
  out.raw = q;
  return true;
}

WeightQuantSpec ggml_nominal_spec(GgmlType t) {
  const GgmlGridTraits* g = ggml_grid_traits(t);
  if (!g) fail_input("ggml type {} has no blocks", ggml_type_name(t));
  int bits = 1;
  while ((1 << bits) < g->hi - g->lo + 1) ++bits;
  return WeightQuantSpec{bits, g->sub, !g->min, false};
}

std::string ggml_format_name(GgmlType t) { return std::string("gguf:") + ggml_type_name(t); }

std::vector<uint8_t> load_ggml_blocks(const TensorArchive& archive, const std::string& module,
                                      const ModuleQuantInfo& info) {
  if (!info.ggml) fail_input("module \"{}\" is not stored as GGUF blocks", module);
  if (info.in_features % ggml_type_traits(*info.ggml).block_size != 0)
    fail_input("module \"{}\": rows of {} are not a multiple of {}'s block", module, info.in_features,
               ggml_type_name(*info.ggml));
  const TensorView v = archive.view(module + ".ggml");
  expect(v, DType::U8, {info.out_features, static_cast<int64_t>(ggml_nbytes(*info.ggml, info.in_features))});
  return std::vector<uint8_t>(v.data, v.data + v.nbytes());
}

QuantizedWeight load_quantized_weight(const TensorArchive& archive, const std::string& module,
                                      const ModuleQuantInfo& info) {
  if (info.ggml)
    fail_input("module \"{}\" is stored as GGUF {} blocks (quantized onto GGUF's grid), which have no integer codes on "
               "a uniform grid: export this checkpoint with --format gguf", module, ggml_type_name(*info.ggml));
  const StoredModule m = read_stored_module(archive, module, info);
  const int b = info.spec.bits;
  QuantizedWeight qw;
  qw.spec = info.spec;
  qw.q = unpack_rows_u8(m.qweight, b, info.in_features);
  qw.scales = m.scales;
  qw.zeros = m.zeros.defined() ? m.zeros : at::full({info.out_features, m.groups}, 1 << (b - 1), at::kInt);
  qw.g_idx = m.g_idx.defined() ? m.g_idx : natural_g_idx(info.spec, info.in_features);
  return qw;
}

std::shared_ptr<const kernels::PackedWeights> pack_for_kernels(const QuantizedWeight& qw, const std::string& module) {
  const at::Tensor q = qw.q.to(at::kByte).contiguous();
  const at::Tensor scales = qw.scales.to(at::kFloat).contiguous();
  const at::Tensor zeros = qw.zeros.to(at::kInt).contiguous();
  const at::Tensor g_idx = qw.g_idx.defined() ? qw.g_idx.to(at::kInt).contiguous() : at::Tensor();
  return std::make_shared<const kernels::PackedWeights>(kernels::pack_quantized(
      q.data_ptr<uint8_t>(), q.size(0), q.size(1), qw.spec.bits, scales.size(1), scales.data_ptr<float>(),
      zeros.data_ptr<int32_t>(), g_idx.defined() ? g_idx.data_ptr<int32_t>() : nullptr, module.c_str()));
}

std::unique_ptr<WeightSource> make_quantized_weight_source(const TensorArchive& archive,
                                                           const CheckpointQuantConfig& qc) {
  return std::make_unique<QuantizedWeightSource>(archive, qc);
}

ActQuantParams load_act_params(const TensorArchive& archive, const std::string& module, const ModuleQuantInfo& info) {
  ActQuantParams p;
  if (!info.act || !info.act->is_static()) return p;
  const int64_t n = info.act->granularity == ActGranularity::PerChannel ? info.in_features : 1;
  const std::string sname = module + ".input_scale";
  if (!archive.contains(sname)) fail_input("{}: module \"{}\" has a static activation scheme but no {}", archive.path(), module, sname);
  const TensorView sv = archive.view(sname);
  expect(sv, DType::F32, {n});
  p.scale = tensor_of(sv, at::kFloat);
  if (!(p.scale > 0).all().item<bool>() || !at::isfinite(p.scale).all().item<bool>())
    fail_input("tensor \"{}\" holds a scale that is not finite and > 0", sname);
  if (info.act->sym) {
    p.zero = at::zeros({n}, at::kFloat);
  } else {
    const std::string zname = module + ".input_zero_point";
    if (!archive.contains(zname)) fail_input("{}: asymmetric module \"{}\" has no {}", archive.path(), module, zname);
    const TensorView zv = archive.view(zname);
    expect(zv, DType::F32, {n});
    p.zero = tensor_of(zv, at::kFloat);
  }
  return p;
}

void attach_act_kernels(const ModelConfig& cfg, int64_t layer, LayerWeights& w, const CheckpointQuantConfig& qc,
                        const QuantWeightLoader& load_weight, const ActParamsLoader& load_params) {
  for (int id = 0; id < kNumLinear; ++id) {
    const char* name = linear_module_name(cfg, static_cast<LinearId>(id));
    if (*name == '\0') continue;
    const std::string path = cfg.layer_module(layer, name);
    const auto it = qc.modules.find(path);
    if (it == qc.modules.end() || !it->second.act) continue;
    w.linear[id].kernel = std::make_shared<ActQuantLinear>(load_weight(path, it->second), w.linear[id].bias,
                                                           *it->second.act, load_params(path, it->second));
  }
}

Model::LayerFinisher make_checkpoint_layer_finisher(const Model& model, const CheckpointQuantConfig& qc) {
  std::optional<uint64_t> down_seed;
  if (qc.raw.contains("rotation") && qc.raw["rotation"].is_object() &&
      qc.raw["rotation"].contains("down_proj_hadamard_seed"))
    down_seed = qc.raw["rotation"]["down_proj_hadamard_seed"].get<uint64_t>();
  bool any_act = false;
  for (const auto& [m, info] : qc.modules) any_act = any_act || info.act.has_value();
  if (!any_act && !down_seed) return {};
  const Model* mp = &model;
  return [mp, qc, down_seed](int64_t layer, LayerWeights& w) {
    const TensorArchive& archive = mp->archive();
    attach_act_kernels(
        mp->config(), layer, w, qc,
        [&](const std::string& m, const ModuleQuantInfo& info) { return load_quantized_weight(archive, m, info); },
        [&](const std::string& m, const ModuleQuantInfo& info) { return load_act_params(archive, m, info); });
    // The packed runner keeps a kernel's weights once, in the kernel: the fp32 copy the model loaded for the module
    // (or a packed one) goes, and so do the mapped pages of its stored tensors (read again only if touched).
    for (int id = 0; id < kNumLinear && mp->packed_runner(); ++id) {
      Linear& l = w.linear[id];
      if (l.kernel == nullptr) continue;
      l.weight = at::Tensor();
      l.packed.reset();
      const std::string path = mp->config().layer_module(layer, linear_module_name(mp->config(), LinearId(id)));
      for (const char* suffix : {".qweight", ".scales", ".qzeros", ".g_idx"})
        if (archive.contains(path + suffix)) archive.release(path + suffix);
    }
    // The factors (p + m² numbers, microseconds to draw) per layer: a split may have widened this layer's down_proj.
    if (down_seed && w[LinearId::Down].defined())
      w.down_hadamard = std::make_shared<const kernels::HadamardFactors>(
          random_hadamard_factors(w[LinearId::Down].in_features(), *down_seed));
  };
}

CheckpointWriter::CheckpointWriter(const Model& source, const std::string& out_dir,
                                   std::map<std::string, ModuleQuantInfo> modules, bool force, const std::string& spool,
                                   const json* state)
    : source_(source), dir_(std::make_unique<ModelDirWriter>(out_dir, source.path(), force)),
      modules_(std::move(modules)) {
  const TensorArchive& archive = source_.archive();
  for (auto& [module, info] : modules_) {
    if (!archive.contains(module + ".weight")) fail_input("{}: no tensor \"{}.weight\" to quantize", source.path(), module);
    const std::vector<int64_t> shape = archive.view(module + ".weight").shape();
    info.out_features = shape.at(0);
    info.in_features = shape.at(1);
  }
  const std::map<std::string, std::string> metadata{{"format", "pt"}};
  if (spool.empty()) {
    tensors_ = std::make_unique<SafetensorsSpoolWriter>(dir_->file("model.safetensors"), metadata);
    return;
  }
  tensors_ = std::make_unique<SafetensorsSpoolWriter>(dir_->file("model.safetensors"), metadata, spool,
                                                      state ? &state->at("spool") : nullptr);
  if (!state) return;
  // What write_module / write_activation recorded; the plan (format, grid, method, act_order) is the same run's.
  for (const auto& [module, j] : state->at("modules").items()) {
    auto it = modules_.find(module);
    if (it == modules_.end()) fail_input("resume state: module \"{}\" was not planned", module);
    const ModuleQuantInfo stored = parse_module_info("resume state", module, j);
    ModuleQuantInfo& info = it->second;
    info.out_features = stored.out_features;
    info.in_features = stored.in_features;
    info.metrics = stored.metrics;
    info.act = stored.act;
    info.folded = stored.folded;
  }
}

json CheckpointWriter::state() {
  json modules = json::object();
  for (const auto& [module, info] : modules_)
    if (tensors_->contains(module + (info.ggml ? ".ggml" : ".qweight"))) modules[module] = module_info_json(info);
  return {{"spool", tensors_->state()}, {"modules", modules}};
}

// Members go in reverse order: the spool writer (its temporaries live in the directory) before the directory,
// which removes itself unless committed.
CheckpointWriter::~CheckpointWriter() = default;

int64_t packed_row_words(int64_t count, int bits) { return padded32(count) / 32 * bits; }

ModuleQuantInfo& CheckpointWriter::record(const std::string& module, const WeightQuantSpec& spec, int64_t out,
                                          int64_t in, json metrics) {
  auto it = modules_.find(module);
  if (it == modules_.end()) fail_input("checkpoint writer: module \"{}\" was not planned", module);
  ModuleQuantInfo& info = it->second;
  info.metrics = std::move(metrics);
  // A transform may have widened the module (channel split): the stored shape is the quantized one.
  info.out_features = out;
  info.in_features = in;
  check_spec(spec, in, module);
  return info;
}

void CheckpointWriter::write_packed_module(const std::string& module, const WeightQuantSpec& spec,
                                           const PackedModuleTensors& t, json metrics) {
  const ModuleQuantInfo& info = record(module, spec, t.out, t.in, std::move(metrics));
  if (info.act_order) fail_input("checkpoint writer: module \"{}\" is planned act-order but was packed in natural order", module);
  const int b = spec.bits;
  const int64_t groups = group_count(spec, t.in);
  auto check_size = [&](const char* what, size_t have, int64_t want) {
    if (have != static_cast<size_t>(want))
      fail_input("checkpoint writer: module \"{}\" {} holds {} values, expected {}", module, what, have, want);
  };
  check_size("qweight", t.qweight.size(), t.out * packed_row_words(t.in, b));
  check_size("scales", t.scales.size(), t.out * groups);
  tensors_->add(module + ".qweight", DType::I32, {t.out, packed_row_words(t.in, b)}, t.qweight.data(),
                t.qweight.size() * sizeof(int32_t));
  tensors_->add(module + ".scales", DType::F16, {t.out, groups}, t.scales.data(), t.scales.size() * sizeof(uint16_t));
  if (!spec.sym) {
    check_size("qzeros", t.qzeros.size(), t.out * packed_row_words(groups, b));
    tensors_->add(module + ".qzeros", DType::I32, {t.out, packed_row_words(groups, b)}, t.qzeros.data(),
                  t.qzeros.size() * sizeof(int32_t));
  }
  fault_point("module");
}

void CheckpointWriter::write_module(const std::string& module, const QuantizedWeight& qw, json metrics) {
  const ModuleQuantInfo& info = record(module, qw.spec, qw.q.size(0), qw.q.size(1), std::move(metrics));
  const int b = qw.spec.bits;
  auto write = [&](const std::string& name, const at::Tensor& t, DType dtype) {
    const at::Tensor c = t.contiguous();
    tensors_->add(name, dtype, c.sizes().vec(), c.data_ptr(), static_cast<size_t>(c.numel() * c.element_size()));
  };
  if (at::isinf(qw.scales.to(at::kHalf)).any().item<bool>())
    fail_input("module \"{}\": a scale of {} does not fit fp16; the checkpoint stores fp16 scales", module,
               qw.scales.abs().max().item<double>());
  write(module + ".qweight", pack_rows(qw.q, b, module), DType::I32);
  write(module + ".scales", qw.scales.to(at::kHalf), DType::F16);
  if (!qw.spec.sym) write(module + ".qzeros", pack_rows(qw.zeros, b, module + " zeros"), DType::I32);
  if (info.act_order) {
    write(module + ".g_idx", qw.g_idx.to(at::kInt), DType::I32);
  } else if (!qw.g_idx.to(at::kInt).equal(natural_g_idx(qw.spec, qw.q.size(1)))) {
    fail_input("module \"{}\": columns are permuted (act-order) but the plan did not say so", module);
  }
  fault_point("module");
}

void CheckpointWriter::write_ggml_module(const std::string& module, GgmlType type, int64_t out, int64_t in,
                                        const std::vector<uint8_t>& blocks, json metrics) {
  const ModuleQuantInfo& info = record(module, ggml_nominal_spec(type), out, in, std::move(metrics));
  if (info.ggml != type)
    fail_input("checkpoint writer: module \"{}\" was planned as {}, written as GGUF {}", module, info.format,
               ggml_type_name(type));
  const int64_t row_bytes = static_cast<int64_t>(ggml_nbytes(type, in));
  if (blocks.size() != static_cast<size_t>(out * row_bytes))
    fail_input("checkpoint writer: module \"{}\" has {} bytes of {} blocks, expected {}", module, blocks.size(),
               ggml_type_name(type), out * row_bytes);
  tensors_->add(module + ".ggml", DType::U8, {out, row_bytes}, blocks.data(), blocks.size());
  fault_point("module");
}

void CheckpointWriter::write_activation(const std::string& module, const ActQuantSpec& act, const ActQuantParams* params,
                                        std::vector<std::string> folded) {
  auto it = modules_.find(module);
  if (it == modules_.end()) fail_input("checkpoint writer: module \"{}\" was not planned", module);
  it->second.act = act;
  it->second.folded = std::move(folded);
  if (!act.is_static()) return;
  if (params == nullptr || !params->scale.defined())
    fail_input("checkpoint writer: module \"{}\" has a static activation scheme but no scales", module);
  write_tensor(module + ".input_scale", params->scale);
  if (!act.sym) write_tensor(module + ".input_zero_point", params->zero);
}

void CheckpointWriter::write_tensor(const std::string& name, const at::Tensor& t) {
  const bool index = t.scalar_type() == at::kLong;
  const at::Tensor c = index ? t.contiguous() : t.to(at::kFloat).contiguous();
  tensors_->add(name, index ? DType::I64 : DType::F32, c.sizes().vec(), c.data_ptr(),
                static_cast<size_t>(c.numel() * c.element_size()));
}

void CheckpointWriter::copy_unquantized() {
  const TensorArchive& archive = source_.archive();
  for (const auto& name : archive.names()) {
    if (tensors_->contains(name)) continue;
    const std::string module = name.size() > 7 ? name.substr(0, name.size() - 7) : "";
    if (modules_.count(module) && name.compare(name.size() - 7, 7, ".weight") == 0) continue;
    const TensorView v = archive.view(name);
    // A NaN/Inf norm or embedding copied unchanged would make every result of the checkpoint NaN.
    if (const auto bad = first_nonfinite(v.dtype(), v.data, v.nbytes() / dtype_size(v.dtype())))
      fail_input("tensor \"{}\" of {} holds NaN or Inf (element {}); the model is damaged", name, source_.path(), *bad);
    tensors_->add(name, v.dtype(), v.shape(), v.data, v.nbytes());
    archive.release(name);  // embeddings and lm_head are large; keep RSS at one tensor, not all of them
  }
}

uint64_t CheckpointWriter::bytes() const {
  if (!tensors_) return 0;
  return tensors_->file_size() ? tensors_->file_size() : tensors_->data_bytes();
}

void CheckpointWriter::commit(json quantization_config) {
  tensors_->commit();
  json cfg = json::parse(read_text_file(source_.path() + "/config.json"));
  quantization_config["quant_method"] = kCheckpointQuantMethod;
  quantization_config["format_version"] = kCheckpointFormatVersion;
  json modules = json::object();
  for (const auto& [module, info] : modules_) modules[module] = module_info_json(info);
  quantization_config["modules"] = modules;
  cfg["quantization_config"] = quantization_config;
  write_text_file_atomic(dir_->file("config.json"), cfg.dump(2) + "\n");
  dir_->copy_tokenizer_files(source_.path());
  fault_point("commit");
  dir_->commit();
}

}  // namespace ptq
