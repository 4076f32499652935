// Model helpers shared by the tests: a full forward over explicitly given (rewritten) layer weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "calibration/stats.h"
#include "model/model.h"

namespace ptq::test {

// Logits of `ids` [1, T] through m's embedding and head with `layers` in place of m's own layer weights.
at::Tensor logits_with(Model& m, const std::vector<LayerWeights>& layers, const at::Tensor& ids);

// `model` (repo-relative) quantized by configs/w4a16-rtn.yaml with this grid into `dir`; returns dir.
std::string quantize_rtn(const std::string& model, const std::string& dir, int bits, int64_t group, bool sym);

// Statistics with Hessians of the FP `model` on `nsamples` windows x `seqlen` tokens of data/sotu-test.txt.
CalibrationStats hessian_stats(Model& model, int64_t nsamples = 8, int64_t seqlen = 64);

}  // namespace ptq::test
