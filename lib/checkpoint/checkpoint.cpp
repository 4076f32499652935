#include "checkpoint/checkpoint.h"

#include "core/error.h"
#include "model/config.h"
#include "model/gguf_model.h"

namespace ptq {

namespace {

struct KindRow {
  CheckpointKind kind;
  const char* name;
};
constexpr KindRow kKinds[] = {{CheckpointKind::Float, "float"},
                              {CheckpointKind::Ptq, "ptq"},
                              {CheckpointKind::Gptq, "gptq"},
                              {CheckpointKind::GptqV2, "gptq_v2"},
                              {CheckpointKind::CompressedTensors, "compressed-tensors"},
                              {CheckpointKind::Gguf, "gguf"}};

CheckpointKind imported_kind(const ImportedCheckpoint& ic) {
  if (ic.kind == ImportedCheckpoint::Kind::CompressedTensors) return CheckpointKind::CompressedTensors;
  return ic.gptq.format == GptqFormat::V2 ? CheckpointKind::GptqV2 : CheckpointKind::Gptq;
}

}  // namespace

const char* checkpoint_kind_name(CheckpointKind k) {
  for (const auto& r : kKinds)
    if (r.kind == k) return r.name;
  return "?";
}

Checkpoint::Checkpoint(const std::string& path) : path_(path) {
  const bool gguf = is_gguf_file(path);
  dir_ = resolve_model_path(path);  // a GGUF file is decoded (once, cached) into an HF directory
  load_model_config(dir_);          // "no config.json" and the like, named, before anything else is read
  if (gguf) {
    kind_ = CheckpointKind::Gguf;
  } else if (read_imported_config(dir_, imported_)) {
    kind_ = imported_kind(imported_);
  } else if (read_checkpoint_quant_config(dir_, qc_)) {
    kind_ = CheckpointKind::Ptq;
  }
  archive_ = std::make_unique<TensorArchive>(dir_);
  if (imported()) qc_ = imported_module_config(*archive_, imported_);
}

bool Checkpoint::imported() const {
  return kind_ == CheckpointKind::Gptq || kind_ == CheckpointKind::GptqV2 || kind_ == CheckpointKind::CompressedTensors;
}

QuantSettings Checkpoint::settings() const {
  QuantSettings s;
  if (imported()) {
    s.damp = imported_.raw.value("damp_percent", 0.01);
    s.true_sequential = imported_.raw.value("true_sequential", true);
    s.static_groups = imported_.raw.value("static_groups", false);
    s.provenance = {{"source_format", imported_.format_name()}};
  } else if (kind_ == CheckpointKind::Ptq) {
    const nlohmann::json w = qc_.raw.value("weights", nlohmann::json::object());
    s.damp = w.value("damp", 0.01);
    s.true_sequential = w.value("true_sequential", true);
    s.static_groups = w.value("static_groups", false);
    s.provenance = qc_.raw.value("provenance", nlohmann::json::object());
  }
  return s;
}

const ModuleQuantInfo& Checkpoint::module_info(const std::string& module) const {
  const auto it = qc_.modules.find(module);
  if (it == qc_.modules.end())
    fail_input("{}: \"{}\" is not a quantized module of this {} checkpoint", path_, module, kind_name());
  return it->second;
}

QuantizedWeight Checkpoint::load_weight(const std::string& module) const {
  const ModuleQuantInfo& info = module_info(module);
  return imported() ? load_imported_weight(*archive_, module, imported_) : load_quantized_weight(*archive_, module, info);
}

ActQuantParams Checkpoint::load_act_params(const std::string& module) const {
  const ModuleQuantInfo& info = module_info(module);
  return imported() ? load_imported_act_params(*archive_, module, info) : ptq::load_act_params(*archive_, module, info);
}

std::unique_ptr<Model> Checkpoint::open_model() const {
  if (imported()) return open_imported_model(dir_, imported_);  // int-quantized: with its kernels
  if (kind_ == CheckpointKind::Gguf) return open_gguf_model(path_, dir_);  // packed from the file's blocks
  if (kind_ != CheckpointKind::Ptq) return std::make_unique<Model>(dir_);
  const CheckpointQuantConfig& qc = qc_;
  auto model = std::make_unique<Model>(
      dir_, [&qc](const TensorArchive& archive) { return make_quantized_weight_source(archive, qc); });
  // Activation-quantized modules run through their integer-semantics kernels, down_proj through its rotation.
  model->set_layer_finisher(make_checkpoint_layer_finisher(*model, qc));
  return model;
}

}  // namespace ptq
