// What `ptq inspect` reports about any checkpoint ptq reads (checkpoint/checkpoint.h), gathered without loading
// weights. A GGUF file is described as stored (its tensor types, file size, bits per weight), not as its decoded cache.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"

namespace ptq {

struct QuantizedModuleSummary {
  std::string module, format, method;
  int64_t params = 0;           // out * in
  double bits_per_weight = 0;   // stored bytes of qweight + scales + qzeros + g_idx, in bits, per weight
  nlohmann::json metrics;       // distortion recorded at quantization time (may be null)
  std::string activation = {};  // activation scheme ("a8 per_tensor sym"), empty: FP inputs
  std::vector<std::string> folded = {};  // transforms folded into the module
  double act_scale_min = 0, act_scale_max = 0;  // static input_scale range (0, 0: none stored)
  int bits = 0;                  // weight code bits
};

// The mixed-precision allocation a ptq checkpoint stores in quantization_config.allocation (written by
// pipeline/allocate.h's AllocationReport::to_json), as `inspect` shows it.
struct AllocationSummary {
  double target_bpw = 0, achieved_bpw = 0;  // bits per weight of the allocated modules
  double target_bytes = 0, size_bytes = 0;  // --target-size runs only (0 otherwise): the checkpoint's tensor bytes
  std::string metric, sensitivity, unit;    // rtn/gptq/kl, its flavour, module/layer (older files: rtn, module)
  std::map<std::string, std::string> modules;  // module path -> chosen grid (or ggml type)
  nlohmann::json to_json() const;
  std::string grid_counts() const;  // "w3g128 x20, w4g128 x22"
};
// nullopt when `quantization_config` has no allocation; throws naming the key when it is malformed.
std::optional<AllocationSummary> read_allocation_summary(const nlohmann::json& quantization_config);
// The map as a compact table: one row per decoder layer, one column per module name (q_proj, ..., down_proj), the
// grid in each cell; modules outside decoder layers get a row of their own.
std::string render_allocation_map(const AllocationSummary& a);

struct ModelSummary {
  std::string path;
  std::string kind;  // checkpoint_kind_name: float, ptq, gptq, gptq_v2, compressed-tensors, gguf
  ModelConfig config;
  int64_t parameters = 0;  // logical parameters (a packed module counts out * in)
  uint64_t file_bytes = 0;                         // all safetensors files
  std::map<std::string, int64_t> params_by_dtype;  // dtype name (GGUF: ggml type) -> elements stored with it
  std::map<std::string, int64_t> tensors_by_dtype;  // dtype name (GGUF: ggml type) -> tensors
  std::vector<std::string> files;
  int64_t tensors = 0;
  std::string tokenizer;  // description, or "none: <reason>"

  bool quantized = false;
  std::vector<QuantizedModuleSummary> modules;           // quantized modules, in name order
  std::map<std::string, std::string> unquantized;        // linear modules kept FP, with the reason
  std::map<std::string, int64_t> modules_by_format;
  double quantized_bits_per_weight = 0;  // over the quantized modules
  double model_bits_per_weight = 0;      // all stored tensor bytes over all parameters
  std::string rotation;                  // "" or a description of the stored rotation
  nlohmann::json quantization_config;    // as stored (provenance, recipe, weights; imported: the source's)
  std::optional<AllocationSummary> allocation;  // mixed precision, when the checkpoint has one
};

ModelSummary summarize_model(const std::string& dir);

}  // namespace ptq
