// Opens any model ptq can run: a Hugging Face FP checkpoint, a ptq quantized checkpoint, or a llama GGUF file.
#pragma once

#include <memory>
#include <string>

#include "model/model.h"

namespace ptq {

// Quantized checkpoints are dequantized on load from their stored codes and scales, so every command
// (eval, generate, bench) evaluates exactly the stored values.
std::unique_ptr<Model> open_model(const std::string& path);

}  // namespace ptq
