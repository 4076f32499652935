// Layer streaming: the hidden states of all calibration windows, advanced one decoder layer at a time,
// so calibration and quantization hold one layer's weights (plus these activations) at once.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "model/model.h"

namespace ptq {

struct CalibrationData;

class LayerStreamer {
 public:
  // Embeds every window: hidden states [nsamples, seqlen, hidden] fp32. `batch` windows per forward call.
  LayerStreamer(Model& model, const CalibrationData& data, int64_t batch = 8);

  // Runs decoder layer `layer` with weights `w` over all windows, `batch` at a time; `hook` (optional) sees
  // each linear module's input [batch, seqlen, in]. With `advance`, the hidden states become the outputs.
  void run(int64_t layer, const LayerWeights& w, const LinearInputHook* hook, bool advance);

  const at::Tensor& hidden() const { return hidden_; }
  // For a transform of the residual stream (rotation): the caller rewrites the states in place.
  at::Tensor& mutable_hidden() { return hidden_; }
  int64_t samples() const { return hidden_.size(0); }
  int64_t tokens() const { return hidden_.size(0) * hidden_.size(1); }

 private:
  Model& model_;
  int64_t batch_;
  at::Tensor hidden_;
  ForwardContext ctx_;
};

}  // namespace ptq
