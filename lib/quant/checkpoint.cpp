#include "quant/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/file.h"
#include "quant/formats.h"

namespace ptq {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* const kTokenizerFiles[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                                       "special_tokens_map.json", "generation_config.json", "vocab.json",
                                       "merges.txt", "added_tokens.json"};

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
  } catch (const json::exception& e) {
    fail_input("{}: quantization_config.modules[\"{}\"] is malformed ({})", where, module, e.what());
  }
  if (m.spec.bits != 2 && m.spec.bits != 3 && m.spec.bits != 4 && m.spec.bits != 8)
    fail_input("{}: module \"{}\" has {} bits; packed checkpoints hold 2, 3, 4 or 8", where, module, m.spec.bits);
  return m;
}

class QuantizedWeightSource final : public WeightSource {
 public:
  QuantizedWeightSource(const TensorArchive& archive, const CheckpointQuantConfig& qc)
      : archive_(archive), qc_(qc) {
    for (const auto& [module, info] : qc_.modules) {
      if (!archive_.contains(module + ".qweight") || !archive_.contains(module + ".scales"))
        fail_input("{}: quantized module \"{}\" has no qweight/scales tensors", archive_.path(), module);
    }
  }
  bool contains(const std::string& name) const override { return archive_.contains(name) || quantized(name); }
  at::Tensor load(const std::string& name) const override {
    const std::string module = quantized(name) ? name.substr(0, name.size() - 7) : std::string();
    if (module.empty()) return to_float_tensor(archive_.view(name));
    return dequantize(load_quantized_weight(archive_, module, qc_.modules.at(module)));
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
  } catch (const json::parse_error& e) {
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

QuantizedWeight load_quantized_weight(const TensorArchive& archive, const std::string& module,
                                      const ModuleQuantInfo& info) {
  const int64_t out = info.out_features, in = info.in_features;
  const int b = info.spec.bits;
  check_spec(info.spec, in, module);
  const int64_t G = group_count(info.spec, in);
  QuantizedWeight qw;
  qw.spec = info.spec;
  const TensorView qweight = archive.view(module + ".qweight");
  expect(qweight, DType::I32, {out, padded32(in) * b / 32});
  qw.q = unpack_rows(tensor_of(qweight, at::kInt), b, in).to(at::kByte);
  const TensorView scales = archive.view(module + ".scales");
  expect(scales, DType::F16, {out, G});
  qw.scales = tensor_of(scales, at::kHalf).to(at::kFloat);
  if (info.spec.sym) {
    qw.zeros = at::full({out, G}, 1 << (b - 1), at::kInt);
  } else {
    const TensorView qzeros = archive.view(module + ".qzeros");
    expect(qzeros, DType::I32, {out, padded32(G) * b / 32});
    qw.zeros = unpack_rows(tensor_of(qzeros, at::kInt), b, G);
  }
  if (archive.contains(module + ".g_idx")) {
    const TensorView g = archive.view(module + ".g_idx");
    expect(g, DType::I32, {in});
    qw.g_idx = tensor_of(g, at::kInt);
    if (qw.g_idx.min().item<int>() < 0 || qw.g_idx.max().item<int>() >= G)
      fail_input("tensor \"{}.g_idx\" holds a group outside [0, {})", module, G);
  } else {
    qw.g_idx = natural_g_idx(info.spec, in);
  }
  return qw;
}

std::unique_ptr<WeightSource> make_quantized_weight_source(const TensorArchive& archive,
                                                           const CheckpointQuantConfig& qc) {
  return std::make_unique<QuantizedWeightSource>(archive, qc);
}

CheckpointWriter::CheckpointWriter(const Model& source, const std::string& out_dir,
                                   std::map<std::string, ModuleQuantInfo> modules, bool force)
    : source_(source), out_dir_(out_dir), force_(force), modules_(std::move(modules)) {
  while (out_dir_.size() > 1 && out_dir_.back() == '/') out_dir_.pop_back();
  if (fs::exists(out_dir_) && !force_)
    fail_input("output {} already exists; choose another -o or pass --force to replace it", out_dir_);
  if (fs::absolute(out_dir_).lexically_normal() == fs::absolute(source.path()).lexically_normal())
    fail_input("output {} is the input model; inputs are never modified", out_dir_);
  tmp_dir_ = fmt::format("{}.tmp-{}", out_dir_, ::getpid());
  fs::remove_all(tmp_dir_);
  std::error_code ec;
  fs::create_directories(tmp_dir_, ec);
  if (ec) fail_io("cannot create directory {}: {}", tmp_dir_, ec.message());

  const TensorArchive& archive = source_.archive();
  std::vector<SafetensorsStreamWriter::Entry> entries;
  for (const auto& name : archive.names()) {
    const std::string module = name.size() > 7 ? name.substr(0, name.size() - 7) : "";
    auto it = modules_.find(module);
    if (it == modules_.end() || name.compare(name.size() - 7, 7, ".weight") != 0) {
      const TensorView v = archive.view(name);
      entries.push_back({name, v.dtype(), v.shape()});
      continue;
    }
    const std::vector<int64_t> shape = archive.view(name).shape();
    const int64_t out = shape.at(0), in = shape.at(1);
    const WeightQuantSpec& spec = it->second.spec;
    check_spec(spec, in, module);
    const int b = spec.bits;
    const int64_t G = group_count(spec, in);
    entries.push_back({module + ".qweight", DType::I32, {out, padded32(in) * b / 32}});
    entries.push_back({module + ".scales", DType::F16, {out, G}});
    if (!spec.sym) entries.push_back({module + ".qzeros", DType::I32, {out, padded32(G) * b / 32}});
    if (it->second.act_order) entries.push_back({module + ".g_idx", DType::I32, {in}});
  }
  for (auto& [module, info] : modules_) {
    if (!archive.contains(module + ".weight")) fail_input("{}: no tensor \"{}.weight\" to quantize", source.path(), module);
    const std::vector<int64_t> shape = archive.view(module + ".weight").shape();
    info.out_features = shape.at(0);
    info.in_features = shape.at(1);
  }
  tensors_ = std::make_unique<SafetensorsStreamWriter>(tmp_dir_ + "/model.safetensors", entries,
                                                       std::map<std::string, std::string>{{"format", "pt"}});
}

CheckpointWriter::~CheckpointWriter() {
  tensors_.reset();
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_dir_, ec);
  }
}

void CheckpointWriter::write_module(const std::string& module, const QuantizedWeight& qw, json metrics) {
  auto it = modules_.find(module);
  if (it == modules_.end()) fail_input("checkpoint writer: module \"{}\" was not planned", module);
  it->second.metrics = std::move(metrics);
  const int b = qw.spec.bits;
  auto write = [&](const std::string& name, const at::Tensor& t) {
    const at::Tensor c = t.contiguous();
    tensors_->write(name, c.data_ptr(), static_cast<size_t>(c.numel() * c.element_size()));
  };
  if (at::isinf(qw.scales.to(at::kHalf)).any().item<bool>())
    fail_input("module \"{}\": a scale of {} does not fit fp16; the checkpoint stores fp16 scales", module,
               qw.scales.abs().max().item<double>());
  write(module + ".qweight", pack_rows(qw.q, b, module));
  write(module + ".scales", qw.scales.to(at::kHalf));
  if (!qw.spec.sym) write(module + ".qzeros", pack_rows(qw.zeros, b, module + " zeros"));
  if (it->second.act_order) {
    write(module + ".g_idx", qw.g_idx.to(at::kInt));
  } else if (!qw.g_idx.to(at::kInt).equal(natural_g_idx(qw.spec, qw.q.size(1)))) {
    fail_input("module \"{}\": columns are permuted (act-order) but the plan did not say so", module);
  }
}

void CheckpointWriter::copy_unquantized() {
  const TensorArchive& archive = source_.archive();
  for (const auto& name : archive.names()) {
    if (tensors_->written(name)) continue;
    const std::string module = name.size() > 7 ? name.substr(0, name.size() - 7) : "";
    if (modules_.count(module) && name.compare(name.size() - 7, 7, ".weight") == 0) continue;
    const TensorView v = archive.view(name);
    tensors_->write(name, v.data, v.nbytes());
    archive.release(name);  // embeddings and lm_head are large; keep RSS at one tensor, not all of them
  }
}

uint64_t CheckpointWriter::bytes() const { return tensors_ ? tensors_->file_size() : 0; }

void CheckpointWriter::commit(json quantization_config) {
  tensors_->commit();
  json cfg = json::parse(read_text_file(source_.path() + "/config.json"));
  quantization_config["quant_method"] = kCheckpointQuantMethod;
  quantization_config["format_version"] = kCheckpointFormatVersion;
  json modules = json::object();
  for (const auto& [module, info] : modules_) {
    modules[module] = {{"format", info.format},   {"bits", info.spec.bits},
                       {"group_size", info.spec.group_size}, {"sym", info.spec.sym},
                       {"method", info.method},   {"act_order", info.act_order},
                       {"out_features", info.out_features},  {"in_features", info.in_features}};
    if (!info.metrics.is_null()) modules[module]["metrics"] = info.metrics;
  }
  quantization_config["modules"] = modules;
  cfg["quantization_config"] = quantization_config;
  write_text_file_atomic(tmp_dir_ + "/config.json", cfg.dump(2) + "\n");
  for (const char* f : kTokenizerFiles) {
    const std::string src = source_.path() + "/" + f;
    if (file_exists(src)) write_text_file_atomic(tmp_dir_ + "/" + f, read_text_file(src));
  }
  if (fs::exists(out_dir_)) {
    if (!force_) fail_input("output {} appeared while quantizing; not replacing it without --force", out_dir_);
    fs::remove_all(out_dir_);
  }
  std::error_code ec;
  fs::rename(tmp_dir_, out_dir_, ec);
  if (ec) fail_io("cannot rename {} to {}: {}", tmp_dir_, out_dir_, ec.message());
  committed_ = true;
}

}  // namespace ptq
