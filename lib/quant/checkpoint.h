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
// quantization_config = {"quant_method": "ptq", "format_version": 1,
//   "modules": {<m>: {"format", "bits", "group_size", "sym", "method", "act_order", "out_features",
//                     "in_features", "metrics": {"nmse", "snr_db", ...}}},
//   "unquantized": {<m>: reason}, "weights": {...defaults...}, "provenance": {...}}
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/model.h"
#include "quant/quantizer.h"

namespace ptq {

constexpr int kCheckpointFormatVersion = 1;
constexpr const char* kCheckpointQuantMethod = "ptq";

// How one module is stored.
struct ModuleQuantInfo {
  std::string format;  // weight format name (formats.h)
  WeightQuantSpec spec;
  std::string method;  // algorithm name
  bool act_order = false;
  int64_t out_features = 0, in_features = 0;  // W[out, in]; K is not recoverable from the padded qweight
  nlohmann::json metrics;  // distortion measured when it was quantized (quant/metrics.h), shown by inspect
};

struct CheckpointQuantConfig {
  int format_version = kCheckpointFormatVersion;
  std::map<std::string, ModuleQuantInfo> modules;    // module path -> scheme
  std::map<std::string, std::string> unquantized;    // module path -> reason it stayed floating point
  nlohmann::json raw;                                // the whole quantization_config
};

// Parses config.json's quantization_config. Returns false when there is none (an FP checkpoint); throws
// when it is not ours, is a newer format version, or is malformed.
bool read_checkpoint_quant_config(const std::string& dir, CheckpointQuantConfig& out);

// Reads back the QuantizedWeight of module `module` (codes, scales as stored, zeros, g_idx).
QuantizedWeight load_quantized_weight(const TensorArchive& archive, const std::string& module,
                                      const ModuleQuantInfo& info);

// WeightSource of a ptq checkpoint: "<m>.weight" of a quantized module is dequantized from the stored
// codes and scales (so evaluation uses exactly the stored values); other tensors come from the archive.
std::unique_ptr<WeightSource> make_quantized_weight_source(const TensorArchive& archive,
                                                           const CheckpointQuantConfig& qc);

// Writes a checkpoint from `source` while the quantizer streams layers. Construction declares every output
// tensor (packed shapes follow from `modules`), so the output is written in place, never held in memory.
// The directory is assembled under OUT.tmp-* and renamed to OUT by commit(); an existing OUT is refused
// unless `force`. Without commit() (an error on the way), the temporary directory is removed.
class CheckpointWriter {
 public:
  // `modules`: the modules to pack (out/in features are filled in from the source).
  CheckpointWriter(const Model& source, const std::string& out_dir, std::map<std::string, ModuleQuantInfo> modules,
                   bool force);
  ~CheckpointWriter();

  // Packs and writes module `module` (declared in `modules`). Throws naming the module if a scale does
  // not fit fp16.
  void write_module(const std::string& module, const QuantizedWeight& qw, nlohmann::json metrics = {});
  // Copies every source tensor not replaced by a packed module (embeddings, norms, biases, FP modules),
  // straight from the source's mapped file in its original dtype.
  void copy_unquantized();
  // quantization_config is completed with "modules" and format fields; tokenizer files are copied.
  void commit(nlohmann::json quantization_config);
  uint64_t bytes() const;

 private:
  const Model& source_;
  std::string out_dir_, tmp_dir_;
  bool force_;
  std::map<std::string, ModuleQuantInfo> modules_;
  std::unique_ptr<SafetensorsStreamWriter> tensors_;
  bool committed_ = false;
};

}  // namespace ptq
