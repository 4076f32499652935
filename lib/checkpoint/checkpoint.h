// One interface over every checkpoint ptq reads: what a path is, its quantized modules with their grids, a module's
// codes / scales / zeros or activation steps, its quantization settings, and the runnable Model. Every command that
// takes a model (inspect, eval, generate, bench, quantize, export, report) asks this class, not the readers.
//
// Kinds, each with one reader and one writer:
//   kind                 input                                       reader                   writer
//   float                Hugging Face directory (F32 / F16 / BF16)   model/model.h            (the source)
//   ptq                  ptq's own checkpoint directory              quant/checkpoint.h       quant/checkpoint.h
//   gptq, gptq_v2        AutoGPTQ / GPTQModel directory              quant/gptq_checkpoint.h  export/gptq_export.h
//   compressed-tensors   llm-compressor directory (pack-/int-)       quant/gptq_checkpoint.h  export/compressed_tensors_export.h
//   gguf                 llama.cpp file, decoded once into an HF     model/gguf_model.h       export/gguf_export.h
//                        directory cache (fp32 weights); the packed
//                        runner reads the file's own blocks
// Detection order: a GGUF file by its magic; then a directory's quantization config: another tool's (GPTQ,
// compressed-tensors: their quant_method is not ptq's) before ptq's own; otherwise float.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/model.h"
#include "quant/act_quant.h"
#include "quant/checkpoint.h"
#include "quant/gptq_checkpoint.h"
#include "quant/quantizer.h"

namespace ptq {

enum class CheckpointKind : uint8_t { Float, Ptq, Gptq, GptqV2, CompressedTensors, Gguf };
const char* checkpoint_kind_name(CheckpointKind k);  // "float", "ptq", "gptq", "gptq_v2", "compressed-tensors", "gguf"

// How a quantized checkpoint says it was made (the settings a GPTQ export records).
struct QuantSettings {
  double damp = 0.01;
  bool true_sequential = true, static_groups = false;
  nlohmann::json provenance = nlohmann::json::object();
};

class Checkpoint {
 public:
  // Throws std::invalid_argument naming `path` when it is neither a model directory nor a GGUF file, or when its
  // quantization config is one ptq recognises but cannot read.
  explicit Checkpoint(const std::string& path);

  const std::string& path() const { return path_; }  // as given
  const std::string& dir() const { return dir_; }    // the Hugging Face layout (GGUF: the decoded cache)
  CheckpointKind kind() const { return kind_; }
  const char* kind_name() const { return checkpoint_kind_name(kind_); }
  bool quantized() const { return kind_ != CheckpointKind::Float && kind_ != CheckpointKind::Gguf; }
  // Made by another tool (GPTQ, compressed-tensors), read through quant/gptq_checkpoint.h.
  bool imported() const;
  const TensorArchive& archive() const { return *archive_; }
  // The quantized modules with their grids (empty unless quantized()).
  const CheckpointQuantConfig& quant_config() const { return qc_; }
  QuantSettings settings() const;

  // Codes, fp32 scales, zeros and g_idx of quantized module `module`; throws naming it when it is not one.
  QuantizedWeight load_weight(const std::string& module) const;
  // Static activation steps of a quantized module with a static activation scheme.
  ActQuantParams load_act_params(const std::string& module) const;
  // A Model over the checkpoint: quantized modules dequantized by their reader (or run by their kernels).
  std::unique_ptr<Model> open_model() const;

 private:
  const ModuleQuantInfo& module_info(const std::string& module) const;

  std::string path_, dir_;
  CheckpointKind kind_ = CheckpointKind::Float;
  std::unique_ptr<TensorArchive> archive_;
  CheckpointQuantConfig qc_;
  ImportedCheckpoint imported_;  // gptq, gptq_v2, compressed-tensors
};

}  // namespace ptq
