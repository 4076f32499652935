#include "runtime/open_model.h"

#include "quant/checkpoint.h"

namespace ptq {

std::unique_ptr<Model> open_model(const std::string& dir) {
  CheckpointQuantConfig qc;
  if (!read_checkpoint_quant_config(dir, qc)) return std::make_unique<Model>(dir);
  return std::make_unique<Model>(
      dir, [&qc](const TensorArchive& archive) { return make_quantized_weight_source(archive, qc); });
}

}  // namespace ptq
