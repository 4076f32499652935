// Reading quantized checkpoints made by other tools as models: GPTQ (AutoGPTQ / GPTQModel / transformers; "gptq"
// v1 and "gptq_v2") and compressed-tensors "pack-quantized" (llm-compressor / vLLM): the config, the modules, and
// a WeightSource that dequantizes them so every command (eval, inspect, export) can use them.
//
// Detection: config.json["quantization_config"] (or quantize_config.json when config.json has none) with
// quant_method "gptq"; checkpoint_format "gptq_v2" is v2, "gptq" or absent (older AutoGPTQ) is v1.
// Modules are the tensors named "<m>.qweight"; per module (FORMATS.md "GPTQ safetensors", formats.h):
//   <m>.qweight [K*b/32, N] I32   packed along K (pack_bits stream over each column)
//   <m>.qzeros  [G, N*b/32] I32   packed along N; v1 stores zero - 1 (read back + 1), v2 stores zero
//   <m>.scales  [G, N] F16 (BF16/F32 accepted)
//   <m>.g_idx   [K] I32           optional (natural order i / (K/G) when absent)
//   <m>.bias    [N]               unchanged
//
// compressed-tensors: config.json["quantization_config"] with quant_method "compressed-tensors" and format
// "pack-quantized" or "int-quantized" (other formats are refused by name). pack-quantized modules are the tensors
// named "<m>.weight_packed":
//   <m>.weight_packed     [N, K*b/32] I32  row n is the stream of codes q[n, 0..K) (pack_bits layout); a code is
//                                          the signed value + 2^(b-1), i.e. exactly ptq's unsigned code
//   <m>.weight_scale      [N, G] float
//   <m>.weight_shape      [2] I64          [N, K]; b = 32 * words / K
//   <m>.weight_zero_point [N*b/32, G] I32  asymmetric only: column g is the stream of zero[0..N, g], each the
//                                          signed zero + 2^(b-1) (= ptq's unsigned zero); absent: zero 2^(b-1)
//   <m>.weight_g_idx      [K] I32          actorder "group" only
// int-quantized modules are the I8 tensors "<m>.weight" with a "<m>.weight_scale" (compressed_tensors_export.h has
// the layout): signed codes + 2^(b-1) = ptq's unsigned codes, b the num_bits of the module's config group (exact
// name, "re:" regex, or "Linear" target); weight_zero_point [N, G] I8 likewise; the group's input_activations give
// the activation scheme ("tensor" static with input_scale / input_zero_point, or "token" dynamic), run through the
// integer-semantics kernels of act_linear.h by make_imported_layer_finisher.
// Dequantized exactly as ptq's own checkpoints: w = scale * (q - zero) in fp32 (quantizer.h dequantize).
#pragma once

#include <cstdint>
#include <memory>
#include <regex>
#include <string>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/model.h"
#include "quant/checkpoint.h"
#include "quant/formats.h"
#include "quant/quantizer.h"

namespace ptq {

// One GPTQ scheme: the config's global one, or a module's after GPTQModel's "dynamic" overrides.
struct GptqScheme {
  int bits = 4;
  int64_t group_size = 128;  // -1: one group per output channel
  bool sym = true, desc_act = false;
};

// GPTQModel's per-module overrides (quantize_config "dynamic", read by vLLM and transformers too): a key is a regex
// matched from the start of the module path (Python's re.match), "+:" (or no prefix) overriding bits / group_size /
// sym / desc_act, "-:" leaving the module unquantized; the first matching key decides.
struct GptqDynamicRule {
  bool positive = true;
  std::string pattern;
  std::regex re;
  nlohmann::json overrides;
};

struct GptqCheckpointConfig : GptqScheme {
  GptqFormat format = GptqFormat::V1;
  std::vector<GptqDynamicRule> dynamic;
  std::string config_path;   // where the quantization config was read (for messages)
  nlohmann::json raw;        // the whole quantization config

  // Module `module`'s scheme (the global one unless a positive dynamic rule matches it first).
  GptqScheme scheme_of(const std::string& module) const;
};

// Returns false when `dir` holds no GPTQ quantization config (an FP model or another quant method); throws
// naming the file when it is a GPTQ config that is malformed or uses a width GPTQ does not define.
bool read_gptq_config(const std::string& dir, GptqCheckpointConfig& out);

// The modules of a GPTQ archive in ptq's terms (format "gptq:w4g128" / "gptq_v2:w4g128asym", method "gptq",
// out/in features from the tensor shapes), so inspect and export treat them like a ptq checkpoint's modules.
CheckpointQuantConfig gptq_module_config(const TensorArchive& archive, const GptqCheckpointConfig& cfg);

// Codes, scales, zeros (v1 read back + 1) and g_idx of module `module`, via unpack_gptq.
QuantizedWeight load_gptq_weight(const TensorArchive& archive, const std::string& module,
                                 const GptqCheckpointConfig& cfg);

// "<m>.weight" of every module with a qweight is dequantized; everything else comes from the archive.
std::unique_ptr<WeightSource> make_gptq_weight_source(const TensorArchive& archive, const GptqCheckpointConfig& cfg);

// ---- Any imported checkpoint (what open_model, inspect and the exporters ask) ----------------------------------
struct ImportedCheckpoint {
  enum class Kind : uint8_t { Gptq, CompressedTensors };
  Kind kind = Kind::Gptq;
  GptqCheckpointConfig gptq;  // Kind::Gptq
  std::string config_path;
  nlohmann::json raw;         // the quantization config
  std::string format_name() const;  // "gptq", "gptq_v2", "compressed-tensors"
};

// False for FP models and ptq's own checkpoints; throws for a recognised config that ptq cannot read.
bool read_imported_config(const std::string& dir, ImportedCheckpoint& out);
CheckpointQuantConfig imported_module_config(const TensorArchive& archive, const ImportedCheckpoint& ck);
QuantizedWeight load_imported_weight(const TensorArchive& archive, const std::string& module,
                                     const ImportedCheckpoint& ck);
std::unique_ptr<WeightSource> make_imported_weight_source(const TensorArchive& archive, const ImportedCheckpoint& ck);
// Static activation parameters of an imported module (undefined tensors when it has no static activation scheme):
// input_scale (any float dtype, one element) and, asymmetric, input_zero_point shifted into ptq's unsigned grid.
ActQuantParams load_imported_act_params(const TensorArchive& archive, const std::string& module,
                                        const ModuleQuantInfo& info);
// Layer finisher (Model::set_layer_finisher) giving an imported int-quantized checkpoint's activation-quantized
// modules their integer-semantics kernel (act_linear.h); empty when no module quantizes its inputs.
Model::LayerFinisher make_imported_layer_finisher(const Model& model, const ImportedCheckpoint& ck);
// The model of an imported checkpoint: dequantizing weight source plus the layer finisher. make_imported_weight_source
// alone refuses a checkpoint with activation schemes (a model without their kernels would run W8A16 silently).
std::unique_ptr<Model> open_imported_model(const std::string& dir, const ImportedCheckpoint& ck);

}  // namespace ptq
