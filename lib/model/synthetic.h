// Synthetic checkpoints: random weights with the exact tensor names, shapes and config keys of a real
// family, written in the Hugging Face layout. For tests of every architecture and for scale tests
// (real shapes of multi-billion-parameter models) without downloading anything.
#pragma once

#include <cstdint>
#include <string>

#include "io/dtype.h"
#include "model/config.h"

namespace ptq {

struct SyntheticSpec {
  Arch arch = Arch::Llama;
  int64_t hidden = 64, n_layers = 2, n_heads = 4, n_kv_heads = 2, ffn = 128, vocab = 512, max_positions = 256;
  bool tie_embeddings = false;
  bool opt_pre_norm = true;    // OPT do_layer_norm_before
  int64_t sliding_window = 0;  // Mistral; 0 = none
  DType dtype = DType::F32;  // F32, F16 or BF16
  uint64_t seed = 0;
};

// The config.json text a real checkpoint of this family would carry for `spec`.
std::string synthetic_config_json(const SyntheticSpec& spec);

// Writes config.json and model.safetensors into `dir` (created if missing). Weights are N(0, 0.02²)
// (norm weights 1 + N(0, 0.1²), biases N(0, 0.02²)); deterministic in `seed`.
void write_synthetic_model(const SyntheticSpec& spec, const std::string& dir);

}  // namespace ptq
