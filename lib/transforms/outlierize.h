// ptq outlierize: plants LLM-like activation outlier channels in a model by a function-preserving fold
// (K channels of each norm's γ × S, the consumers' matching columns ÷ S), written as a new HF model directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/model.h"

namespace ptq {

struct OutlierizeOptions {
  int64_t channels = 4;  // K outlier channels per layer
  double scale = 50.0;   // S
  uint64_t seed = 0;
  bool force = false;    // replace an existing output directory
};

// The K distinct channels of [0, hidden) for `layer`, sorted: a Fisher-Yates draw from splitmix64 of
// (seed, layer), so the choice is the same on every platform and standard library.
std::vector<int64_t> outlier_channels(int64_t hidden, int64_t k, uint64_t seed, int64_t layer);

// In place on one layer: both norms' γ (and β) × scale on `channels`, q/k/v and gate/up (fc1) columns ÷ scale.
// Refused for post-norm models (see fold_input_scale).
void outlierize_layer(const ModelConfig& cfg, LayerWeights& w, const std::vector<int64_t>& channels, double scale);

struct OutlierizeResult {
  std::vector<std::vector<int64_t>> channels;  // per layer
};

// Reads the HF model directory `src`, writes the outlierized model to `out`: every floating tensor as F32
// (the weights divided by S would lose bits in F16, and F16 has no room below 6e-5), config.json with
// torch_dtype "float32" and a "ptq_outlierize" provenance entry, tokenizer files copied. Atomic: a temporary
// directory renamed at the end. Refuses an existing `out` unless options.force, and out == src always.
OutlierizeResult outlierize_model(const std::string& src, const std::string& out, const OutlierizeOptions& options);

}  // namespace ptq
