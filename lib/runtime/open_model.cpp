#include "runtime/open_model.h"

#include "core/error.h"
#include "model/gguf_model.h"
#include "quant/checkpoint.h"
#include "quant/gptq_checkpoint.h"

namespace ptq {

std::unique_ptr<Model> open_model(const std::string& path) {
  const std::string dir = resolve_model_path(path);  // a llama.cpp GGUF file is converted (cached) first
  ImportedCheckpoint ic;  // GPTQ / compressed-tensors from other tools: checked first, their quant_method is not ours
  if (read_imported_config(dir, ic)) return open_imported_model(dir, ic);  // int-quantized: with its kernels
  CheckpointQuantConfig qc;
  if (!read_checkpoint_quant_config(dir, qc)) return std::make_unique<Model>(dir);
  auto model = std::make_unique<Model>(
      dir, [&qc](const TensorArchive& archive) { return make_quantized_weight_source(archive, qc); });
  // Activation-quantized modules run through their integer-semantics kernels, down_proj through its rotation.
  model->set_layer_finisher(make_checkpoint_layer_finisher(*model, qc));
  return model;
}

std::unique_ptr<Model> open_model_to_quantize(const std::string& path) {
  const std::string dir = resolve_model_path(path);
  ImportedCheckpoint ic;
  std::string kind;
  CheckpointQuantConfig qc;
  if (read_imported_config(dir, ic)) kind = ic.format_name();
  else if (read_checkpoint_quant_config(dir, qc)) kind = "ptq";
  if (!kind.empty())
    fail_input("{} is already quantized (a {} checkpoint); give the floating-point model it came from (its "
               "provenance: `ptq inspect {}`)", path, kind, path);
  return open_model(path);
}

std::unique_ptr<Model> open_model_for_run(const std::string& path, const RunOptions& opts) {
  std::unique_ptr<Model> model = open_model(path);
  model->set_packed_runner(!opts.reference);
  model->set_int8_activations(!opts.reference && opts.int8_activations);
  model->set_kv_cache_type(opts.kv_cache.value_or(opts.reference ? KvCacheType::F32 : KvCacheType::F16));
  return model;
}

}  // namespace ptq
