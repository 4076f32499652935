// This project's own quantized checkpoint ("ptq" format): writer (streamed, layer by layer) and the
// WeightSource that dequantizes it for the runner.
//
// A checkpoint is a directory a user can hand on:
//   config.json          the source config plus "quantization_config" (below)
//   model.safetensors    packed modules + every other tensor copied unchanged from the source
//   tokenizer files      copied from the source (tokenizer.model, tokenizer.json, tokenizer_config.json, ...)
// Per quantized linear module <m> with weight W[out = N, in = K], b bits, G groups:
//   <m>.qweight [N, ceil(K/32)*b] I32  row n is the bit stream of codes q[n, 0..K) padded with zero codes
//                                      to a multiple of 32: code j at stream bits [j*b, j*b+b), LSB first,
//                                      word w = stream bits [32w, 32w+32) (pack_bits layout, formats.h)
//   <m>.scales  [N, G] F16             grid step; dequantize w = scale * (q - zero)
//   <m>.qzeros  [N, ceil(G/32)*b] I32  asymmetric grids only, same stream layout over zeros[n, 0..G)
//                                      (symmetric grids: zero = 2^(b-1), not stored)
//   <m>.g_idx   [K] I32                only when columns are not in natural group order (act-order)
//   <m>.ggml    [N, ggml_nbytes(T, K)] U8  instead of the four above, for a module quantized straight onto GGUF block
//                                      type T (recipe weights.gguf_type): row n is W's row n as llama.cpp's blocks
//                                      (io/gguf.h, io/gguf_kquants.h; HF row order: the GGUF export permutes q/k rows);
//                                      the entry has "ggml_type": T, "format": "gguf:T", and bits / group_size / sym
//                                      describe T's grid (ggml_nominal_spec)
//   <m>.input_scale      [1] or [K] F32   static activation step (modules with a static "activation" scheme)
//   <m>.input_zero_point [1] or [K] F32   its zero point (integer valued; asymmetric static schemes only)
// Transforms applied while quantizing (lib/transforms, the activation methods) replace or add FP tensors
// beside them: folded norm weights, norm biases (RMSNorm shift), "<norm>.index" I64 [n'] (channel split: the
// norm emits x̂[index]·γ + β), linear biases, rotated embeddings. Every tensor a transform wrote is F32.
// quantization_config = {"quant_method": "ptq", "format_version": 1,
//   "modules": {<m>: {"format", "bits", "group_size", "sym", "method", "act_order", "out_features",
//                     "in_features", "metrics": {"nmse", "snr_db", ...},
//                     "activation": {"bits", "granularity", "sym", "clip"} (absent: FP activations),
//                     "folded": [what transforms put into this module, e.g. "smoothquant s"]}},
//   "rotation": {"down_proj_hadamard_seed": S} (optional: down_proj inputs are multiplied online by
//               random_hadamard(in, S), lib/model/hadamard.h),
//   "unquantized": {<m>: reason}, "weights": {...defaults...}, "provenance": {...}}
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "quant/act_quant.h"
#include "quant/quantizer.h"

namespace ptq {

class ModelDirWriter;

constexpr int kCheckpointFormatVersion = 1;
constexpr const char* kCheckpointQuantMethod = "ptq";

// How one module is stored.
struct ModuleQuantInfo {
  std::string format;  // grid name (core/weight_grid.h), prefixed "gptq:" etc. for imported modules
  WeightQuantSpec spec;
  std::string method;  // algorithm name
  bool act_order = false;
  int64_t out_features = 0, in_features = 0;  // W[out, in]; K is not recoverable from the padded qweight
  nlohmann::json metrics = {};  // distortion measured when it was quantized (quant/metrics.h), shown by inspect
  std::optional<ActQuantSpec> act = std::nullopt;  // activation scheme; nullopt: FP inputs (weight-only)
  std::vector<std::string> folded = {};  // transforms folded into the module (inspect shows them)
  std::optional<GgmlType> ggml = std::nullopt;  // stored as GGUF blocks of this type (<m>.ggml), not as codes
};

// The grid a GGUF block type stands for in ModuleQuantInfo: bits of its code range, its sub-block as the group, sym
// when it has no min (Q4_K: 4 bits, group 32, asym). Throws for a type without blocks.
WeightQuantSpec ggml_nominal_spec(GgmlType t);
// "gguf:q4_k": the format name of a module stored as type t.
std::string ggml_format_name(GgmlType t);

struct CheckpointQuantConfig {
  int format_version = kCheckpointFormatVersion;
  std::map<std::string, ModuleQuantInfo> modules;    // module path -> scheme
  std::map<std::string, std::string> unquantized;    // module path -> reason it stayed floating point
  nlohmann::json raw;                                // the whole quantization_config
};

// Parses config.json's quantization_config. Returns false when there is none (an FP checkpoint); throws
// when it is not ours, is a newer format version, or is malformed.
bool read_checkpoint_quant_config(const std::string& dir, CheckpointQuantConfig& out);

// Reads back the QuantizedWeight of module `module` (codes, scales as stored, zeros, g_idx). Throws for a module
// stored as GGUF blocks (it has no integer codes on a uniform grid; load_ggml_blocks reads it).
QuantizedWeight load_quantized_weight(const TensorArchive& archive, const std::string& module,
                                      const ModuleQuantInfo& info);

// The rows of GGUF blocks of a module stored as such ([out] rows of ggml_nbytes(type, in) bytes).
std::vector<uint8_t> load_ggml_blocks(const TensorArchive& archive, const std::string& module,
                                      const ModuleQuantInfo& info);

// Codes, steps, zeros and g_idx of a QuantizedWeight repacked into the CPU kernels' layout (lib/kernels/
// packed_weights.h); the QuantizedWeight can be dropped afterwards. Throws naming `module` when it cannot be packed.
std::shared_ptr<const kernels::PackedWeights> pack_for_kernels(const QuantizedWeight& qw, const std::string& module);

// WeightSource of a ptq checkpoint: "<m>.weight" of a quantized module is dequantized from the stored
// codes and scales (so evaluation uses exactly the stored values); other tensors come from the archive.
std::unique_ptr<WeightSource> make_quantized_weight_source(const TensorArchive& archive,
                                                           const CheckpointQuantConfig& qc);

// Static activation parameters of `module` (input_scale / input_zero_point), checked against the scheme.
ActQuantParams load_act_params(const TensorArchive& archive, const std::string& module, const ModuleQuantInfo& info);

// Gives every module of layer `layer` that has an activation scheme in `qc` its integer-semantics kernel
// (act_linear.h), reading the codes and static parameters through the loaders (ptq and imported checkpoints store
// them differently).
using QuantWeightLoader = std::function<QuantizedWeight(const std::string& module, const ModuleQuantInfo& info)>;
using ActParamsLoader = std::function<ActQuantParams(const std::string& module, const ModuleQuantInfo& info)>;
void attach_act_kernels(const ModelConfig& cfg, int64_t layer, LayerWeights& w, const CheckpointQuantConfig& qc,
                        const QuantWeightLoader& load_weight, const ActParamsLoader& load_params);

// Layer finisher (Model::set_layer_finisher) of a ptq checkpoint with activation schemes or rotations: gives
// activation-quantized modules their integer-semantics kernel (act_linear.h) and down_proj its online rotation.
// Returns an empty function for a weight-only checkpoint.
Model::LayerFinisher make_checkpoint_layer_finisher(const Model& model, const CheckpointQuantConfig& qc);

// Writes a checkpoint from `source` while the quantizer streams layers. Tensors are spooled to disk as they
// come (lib/io/safetensors.h SafetensorsSpoolWriter), so shapes may be decided late (a split widens a module)
// and the output is never held in memory.
// The directory is assembled under OUT.tmp-* and renamed to OUT by commit(); an existing OUT is refused
// unless `force`. Without commit() (an error on the way), the temporary directory is removed.
// One module's packed tensors in the layout above (fp16 scales as raw bits): what a writer stores for it.
struct PackedModuleTensors {
  int64_t out = 0, in = 0;
  std::vector<int32_t> qweight;  // [out, padded32(in) * b / 32]
  std::vector<uint16_t> scales;  // [out, G] fp16
  std::vector<int32_t> qzeros;   // [out, padded32(G) * b / 32]; asymmetric grids only
};
// Words per row of a stream of `count` b-bit codes padded to a multiple of 32 codes.
int64_t packed_row_words(int64_t count, int bits);

class CheckpointWriter {
 public:
  // `modules`: the modules to pack (out/in features are filled in from the source).
  // Resumable runs (quantize --resume, pipeline/resume.h): the tensors are spooled to `spool`, a file the caller
  // keeps, and `state` (what state() returned before the run was interrupted; null for a new run) restores what was
  // written so far.
  CheckpointWriter(const Model& source, const std::string& out_dir, std::map<std::string, ModuleQuantInfo> modules,
                   bool force, const std::string& spool = "", const nlohmann::json* state = nullptr);
  ~CheckpointWriter();
  // What a resumed writer needs: the spooled tensors and what write_module / write_activation recorded (syncs the
  // spool first).
  nlohmann::json state();

  // Packs and writes module `module` (declared in `modules`). Throws naming the module if a scale does
  // not fit fp16.
  void write_module(const std::string& module, const QuantizedWeight& qw, nlohmann::json metrics = {});
  // Writes module `module` already packed (quant/rtn_packed.h), natural column order.
  void write_packed_module(const std::string& module, const WeightQuantSpec& spec, const PackedModuleTensors& t,
                           nlohmann::json metrics = {});
  // Writes module `module` as rows of GGUF blocks of `type` (planned with that ggml type).
  void write_ggml_module(const std::string& module, GgmlType type, int64_t out, int64_t in,
                         const std::vector<uint8_t>& blocks, nlohmann::json metrics = {});
  // Static activation scheme of a written module and its parameters (input_scale, input_zero_point).
  void write_activation(const std::string& module, const ActQuantSpec& act, const ActQuantParams* params,
                        std::vector<std::string> folded = {});
  // A floating-point tensor replacing the source's `name` (or a new one), stored as F32 (I64 for indices).
  void write_tensor(const std::string& name, const at::Tensor& t);
  // Copies every source tensor not replaced by a packed module (embeddings, norms, biases, FP modules),
  // straight from the source's mapped file in its original dtype.
  void copy_unquantized();
  // quantization_config is completed with "modules" and format fields; tokenizer files are copied.
  void commit(nlohmann::json quantization_config);
  uint64_t bytes() const;

 private:
  const Model& source_;
  std::unique_ptr<ModelDirWriter> dir_;  // OUT.tmp-PID until commit()
  std::map<std::string, ModuleQuantInfo> modules_;
  std::unique_ptr<SafetensorsSpoolWriter> tensors_;

  // Records the module's shape and metrics in its plan entry (after checking the spec fits); returns the entry.
  ModuleQuantInfo& record(const std::string& module, const WeightQuantSpec& spec, int64_t out, int64_t in,
                          nlohmann::json metrics);
};

}  // namespace ptq
