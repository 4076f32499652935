// Weight algorithms by name: each quantizes one linear layer given W and, if it uses one, the layer's Hessian.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "io/gguf.h"
#include "quant/quantizer.h"

namespace ptq {

// GPTQ settings (quantize_config.json's damp_percent, desc_act, static_groups); ignored by algorithms without
// a Hessian.
// Where GPTQ's solve runs (ptq quantize --device): the CPU (ATen), or the first CUDA device (gptq_quantize_on).
// CudaHostEmulation runs the CUDA path's kernels one thread at a time on the CPU (kernels/gptq_ops.h): slow, no
// flag selects it; the tests run the whole device pipeline with it where no GPU is present.
enum class GptqDevice { Cpu, Cuda, CudaHostEmulation };

struct GptqOptions {
  double percdamp = 0.01;      // lambda = percdamp * mean(diag H); raised automatically when Cholesky fails
  bool act_order = false;      // desc_act: quantize columns in order of decreasing H_ii
  bool static_groups = false;  // group grids from the unpermuted W before any error update
  int64_t block_size = 128;    // lazy-batch width B (a speed knob: the result is the same for any B)
  // GPTQ on a GGUF grid (gptq_ggml_quantize): the static super-block / sub-block scales and mins come from ggml's
  // importance-weighted search with diag(H)/2 (llama-quantize --imatrix's rounding; true) or from its unweighted
  // reference search (plain llama-quantize's; false). Recipe key weights.gguf_scales: imatrix | reference.
  bool ggml_importance = true;
  GptqDevice device = GptqDevice::Cpu;  // a run option, not part of the recipe: the result is the same algorithm's
};

struct LinearQuantRequest {
  std::string name;     // module name for messages, e.g. "model.layers.3.self_attn.q_proj"
  at::Tensor weight;    // [out, in], any float dtype
  at::Tensor hessian;   // [in, in] fp32 (HessianAccumulator), or undefined
  WeightQuantSpec spec;
  GptqOptions gptq;
};

struct LinearQuantResult {
  QuantizedWeight weight;
  // The algorithm's objective: GPTQ's sum (w - q)^2 / U_ii^2 / 2 as gptq.py reports it (= 1/2 tr(dW H dW^T)
  // with the damped H); RTN's 1/2 tr(dW H dW^T) with the given H. Empty when there was no Hessian.
  std::optional<double> loss;
  std::string warning;  // non-empty when something was adjusted (e.g. damping raised), for the log
};

// A module quantized straight onto a GGUF block type (recipe weights.gguf_type): rows of ggml blocks as llama.cpp
// stores them ([out] rows of ggml_nbytes(type, in) bytes, HF row order) and the values they decode to.
struct GgmlQuantResult {
  GgmlType type{};
  std::vector<uint8_t> blocks;
  at::Tensor w_hat;  // [out, in] fp32, exactly what the blocks decode to
  std::optional<double> loss;
  std::string warning;
};

struct WeightAlgorithm {
  const char* name;  // recipe spelling: append, never rename
  const char* help;  // one line for --help
  bool needs_hessian;
  LinearQuantResult (*quantize)(const LinearQuantRequest& request);
};

// Fills the registry once (thread-safe); the lookups below call it themselves.
void register_builtin_algorithms();
const std::vector<WeightAlgorithm>& weight_algorithms();
// Throws listing the known names when `name` is not one.
const WeightAlgorithm& weight_algorithm(std::string_view name);
std::string weight_algorithm_names();  // comma separated

}  // namespace ptq
