#include "runtime/open_model.h"

#include "model/gguf_model.h"
#include "quant/checkpoint.h"

namespace ptq {

std::unique_ptr<Model> open_model(const std::string& path) {
  const std::string dir = resolve_model_path(path);  // a llama.cpp GGUF file is converted (cached) first
  CheckpointQuantConfig qc;
  if (!read_checkpoint_quant_config(dir, qc)) return std::make_unique<Model>(dir);
  return std::make_unique<Model>(
      dir, [&qc](const TensorArchive& archive) { return make_quantized_weight_source(archive, qc); });
}

}  // namespace ptq
