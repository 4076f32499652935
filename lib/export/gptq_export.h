// GPTQ export: a quantized checkpoint (ptq's own, or an imported GPTQ / compressed-tensors one) to a GPTQ directory
// that AutoGPTQ, GPTQModel, transformers and vLLM load, in the "gptq" (v1) or "gptq_v2" layout of FORMATS.md; and the
// driver shared with the compressed-tensors export (compressed_tensors_export.h).
//
// Output directory (assembled under OUT.tmp-<pid>, renamed to OUT; an existing OUT needs `force`):
//   model.safetensors      per quantized module <m> with W[N, K], b bits, G groups (pack_gptq, formats.h):
//                            <m>.qweight [K*b/32, N] I32, <m>.qzeros [G, N*b/32] I32 (v1: zero - 1),
//                            <m>.scales [G, N] F16 (the stored fp16 scales, bit for bit), <m>.g_idx [K] I32
//                          every other tensor (embeddings, norms, biases, modules kept floating point) in
//                          `float_dtype` (fp16 by default, as GPTQ tools write); I32/I64/... copied unchanged.
//                          __metadata__: {"format": "pt", "ptq.provenance": JSON}
//   config.json            the source config, "torch_dtype" = float_dtype, "quantization_config" = the GPTQ
//                          config below, "ptq_provenance" (tool, version, input, the input's own provenance)
//   quantize_config.json   the same GPTQ config (AutoGPTQ reads this file)
//   tokenizer files        copied
// GPTQ config: bits, group_size, damp_percent, desc_act, static_groups, sym, true_sequential,
// quant_method "gptq", checkpoint_format "gptq" | "gptq_v2", model_file_base_name, "meta": {"quantizer": ["ptq:V"]}.
//
// The global bits and group size are the scheme most modules share; a module with another (mixed precision, a recipe's
// overrides) gets a GPTQModel "dynamic" rule "+:^<path>$": {"bits", "group_size"} (vLLM and transformers read them,
// and so does ptq's GPTQ reader, quant/gptq_checkpoint.h). sym is true only when every module is symmetric (zeros are stored for
// every module either way, so dequantization does not depend on it); desc_act is true when any module uses
// act-order (g_idx is always written). A module whose K or N does not fill whole int32 words (K*b and N*b
// multiples of 32) cannot be packed: refused with the list, or with keep_unpackable_float written as
// "<m>.weight" in float_dtype from its dequantized values (exact in float32) and reported; GPTQModel is told
// to skip those modules through its "dynamic" config ("-:" negative matches). v1 cannot store an asymmetric
// zero of 0 (it wraps to -1 and corrupts the neighbouring zeros): every such module is listed and the export
// refused, suggesting gptq_v2 or a symmetric (--sym) quantization. GPTQ stores weights only: an activation-quantized
// checkpoint, or one with tensors a standard model does not have, is refused (refuse_nonstandard below).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "core/table.h"
#include "io/dtype.h"
#include "io/safetensors.h"
#include "quant/checkpoint.h"
#include "quant/formats.h"

namespace ptq {

// ---- What a checkpoint holds beyond a standard model of its architecture (every exporter asks) --------------------
// A runtime loading an export (transformers, vLLM, llama.cpp) runs its architecture's own forward on the tensors that
// architecture declares. A ptq checkpoint can hold more, written by the transforms and activation methods
// (quant/checkpoint.h): RMSNorm biases (OutlierTune's shift), norm channel-index tensors and modules wider than
// config.json says (MergeQuant's channel splits), linear biases on modules the architecture has none on, an online
// Hadamard rotation before down_proj (quantization_config.rotation), and activation quantization schemes. A format
// that dropped them would silently change the model's function, so every exporter refuses such a checkpoint before
// writing anything, naming what is in the way and where.
//
// activation_gap(info): why the output format cannot carry module info's activation scheme, "" when it can; an empty
// function stands for a weight-only format (GGUF, GPTQ, compressed-tensors pack-quantized).
using ActivationGap = std::function<std::string(const ModuleQuantInfo&)>;

// One line per kind of gap, "what (why): names" (empty for a standard model). An all-zero linear bias is no gap.
std::vector<std::string> nonstandard_features(const std::string& model_dir, const TensorArchive& archive,
                                              const CheckpointQuantConfig& qc, const ActivationGap& activation_gap = {});

// Throws std::invalid_argument "<dir>: <format> export cannot represent ...: (1) ...; (2) ..." when
// nonstandard_features is not empty; when activation schemes are all that is in the way and compressed-tensors
// int-quantized carries every one of them, the message suggests that export.
void refuse_nonstandard(const std::string& model_dir, const std::string& format, const TensorArchive& archive,
                        const CheckpointQuantConfig& qc, const ActivationGap& activation_gap = {});

// Options of every packed-checkpoint export (GPTQ, compressed-tensors).
struct PackedExportOptions {
  GptqFormat format = GptqFormat::V2;  // GPTQ only
  DType float_dtype = DType::F16;      // F16, BF16 or F32 for the tensors that are not packed
  bool keep_unpackable_float = false;
  bool force = false;
};
using GptqExportOptions = PackedExportOptions;

struct PackedExportReport {
  std::string output, format;
  uint64_t bytes = 0;
  std::vector<std::string> modules;                 // packed modules
  std::map<std::string, std::string> kept_float;    // module -> why it is stored as a float weight
  std::vector<std::string> notes;                   // what a particular runtime will not run as written (printed)
  double bits_per_weight = 0;                       // bytes of the packed modules' tensors per packed weight
  nlohmann::json quantization_config;               // as written into config.json
};
using GptqExportReport = PackedExportReport;

// Throws std::invalid_argument when `model_dir` is not a quantized checkpoint (an FP model: quantize it first),
// has unpackable modules (without keep_unpackable_float), or, for v1, a zero of 0.
GptqExportReport export_gptq(const std::string& model_dir, const std::string& out_dir, const GptqExportOptions& opts);

// ---- The shared driver (GPTQ here, compressed-tensors in compressed_tensors_export.cpp) -------------------------
// Reads a quantized checkpoint (ptq's own or an imported one: quant/gptq_checkpoint.h), refuses what the format
// cannot represent (refuse_nonstandard with the format's activation_gap), writes every packed module through
// `PackedFormat`, every other tensor in float_dtype (non-float dtypes unchanged), config.json with the format's
// quantization_config, tokenizer files; atomically (OUT.tmp-<pid> renamed to OUT).
struct PackedExportInput {
  std::string dir;
  CheckpointQuantConfig qc;
  nlohmann::json provenance;  // of the input checkpoint
  std::function<ActQuantParams(const std::string&)> load_act;  // a module's static activation parameters
  double damp = 0.01;
  bool true_sequential = true, static_groups = false;
};

struct PackedFormat {
  std::string name;
  ActivationGap activation_gap;  // empty: weights only, every activation-quantized module is refused
  std::function<void(const PackedExportInput&)> check;  // whole-checkpoint constraints (may be empty)
  // Remarks on the output for a particular runtime (may be empty), reported as PackedExportReport::notes.
  std::function<std::vector<std::string>(const PackedExportInput&)> notes;
  // Why a module cannot be stored in this format ("" when it can); listed, or kept float with keep_unpackable_float.
  std::function<std::string(const ModuleQuantInfo&)> unpackable;
  std::function<std::vector<SafetensorsStreamWriter::Entry>(const std::string& module, const ModuleQuantInfo&)> declare;
  // True when this module's values cannot be written (collected over all modules, then refused with `refusal`).
  std::function<bool(const QuantizedWeight&)> refuse;
  std::function<std::string(const std::string& module_list)> refusal;
  // `act`: the module's static activation parameters (undefined tensors for weight-only / dynamic schemes).
  std::function<std::vector<std::pair<std::string, at::Tensor>>(const std::string& module, const ModuleQuantInfo&,
                                                                 const QuantizedWeight&, const ActQuantParams& act)>
      pack;
  // The quantization_config, from the input and the modules packed / kept float (in the report).
  std::function<nlohmann::json(const PackedExportInput&, const PackedExportReport&)> config;
  bool quantize_config_json = false;  // also write quantize_config.json (AutoGPTQ)
};

PackedExportReport export_packed(const std::string& model_dir, const std::string& out_dir, const PackedFormat& format,
                                 const PackedExportOptions& opts);


}  // namespace ptq
