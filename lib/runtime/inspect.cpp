#include "runtime/inspect.h"

#include "io/safetensors.h"
#include "model/gguf_model.h"
#include "model/tokenizer.h"
#include "quant/checkpoint.h"
#include "quant/gptq_checkpoint.h"

namespace ptq {

ModelSummary summarize_model(const std::string& path) {
  const std::string dir = resolve_model_path(path);
  ModelSummary s;
  s.path = path;
  s.config = load_model_config(dir);
  TensorArchive archive(dir);
  CheckpointQuantConfig qc;
  ImportedCheckpoint ic;  // GPTQ / compressed-tensors: modules in ptq's terms (format "gptq_v2:w4g128", ...)
  const bool imported = read_imported_config(dir, ic);
  if (imported) {
    qc = imported_module_config(archive, ic);
    s.quantized = true;
  } else {
    s.quantized = read_checkpoint_quant_config(dir, qc);
  }
  s.file_bytes = archive.total_file_bytes();
  uint64_t tensor_bytes = 0;
  std::map<std::string, uint64_t> module_bytes;  // packed bytes per quantized module
  for (const auto& f : archive.files()) {
    s.files.push_back(f->path());
    for (const auto& t : f->tensors()) {
      ++s.tensors;
      tensor_bytes += t.nbytes();
      s.params_by_dtype[dtype_name(t.dtype)] += t.numel();
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
          const ActQuantParams p = imported ? load_imported_act_params(archive, module, info)
                                            : load_act_params(archive, module, info);
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
  }
  s.model_bits_per_weight = s.parameters ? 8.0 * static_cast<double>(tensor_bytes) / static_cast<double>(s.parameters) : 0;
  try {
    s.tokenizer = load_tokenizer(dir)->describe();
  } catch (const std::exception& e) {
    s.tokenizer = std::string("none: ") + e.what();
  }
  return s;
}

}  // namespace ptq
