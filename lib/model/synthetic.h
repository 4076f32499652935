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
  // 0: one model.safetensors. Otherwise tensors go, in order, into model-0000i-of-0000n.safetensors
  // files of at most this many data bytes (a larger tensor gets a file of its own) plus
  // model.safetensors.index.json, as Hugging Face shards real checkpoints.
  uint64_t shard_bytes = 0;
};

// The config.json text a real checkpoint of this family would carry for `spec`.
std::string synthetic_config_json(const SyntheticSpec& spec);

// Writes config.json and the safetensors file(s) into `dir` (created if missing), streaming one tensor at a
// time: memory for the largest tensor suffices, whatever the model size. Weights are mean + stddev * z with
// z approximately standard normal: linear weights and embeddings 0.02 z, norm weights 1 + 0.1 z, biases
// 0.02 z. z is the Irwin-Hall sum of four uniforms, centred and scaled to unit variance (bounded by
// ±2√3 ≈ ±3.46; the tails are lighter than a Gaussian's), drawn from a counter-based hash of (seed, tensor,
// element): deterministic in `seed`, independent of the thread count, fast enough for billions of values.
void write_synthetic_model(const SyntheticSpec& spec, const std::string& dir);

}  // namespace ptq
