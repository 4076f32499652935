#include "runtime/open_model.h"

#include "model/gguf_model.h"
#include "quant/checkpoint.h"
#include "quant/gptq_checkpoint.h"

namespace ptq {

std::unique_ptr<Model> open_model(const std::string& path) {
  const std::string dir = resolve_model_path(path);  // a llama.cpp GGUF file is converted (cached) first
  ImportedCheckpoint ic;  // GPTQ / compressed-tensors from other tools: checked first, their quant_method is not ours
  if (read_imported_config(dir, ic))
    return std::make_unique<Model>(
        dir, [&ic](const TensorArchive& archive) { return make_imported_weight_source(archive, ic); });
  CheckpointQuantConfig qc;
  if (!read_checkpoint_quant_config(dir, qc)) return std::make_unique<Model>(dir);
  return std::make_unique<Model>(
      dir, [&qc](const TensorArchive& archive) { return make_quantized_weight_source(archive, qc); });
}

}  // namespace ptq
