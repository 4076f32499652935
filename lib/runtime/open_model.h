// Opens any model ptq can run: a Hugging Face FP checkpoint, a ptq quantized checkpoint, or a llama GGUF file.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "model/model.h"

namespace ptq {

// fp32 weights: quantized checkpoints are dequantized on load from their stored codes and scales. What
// quantization, export and the reference runner use.
std::unique_ptr<Model> open_model(const std::string& path);

// The FP model `ptq quantize` starts from: throws naming the format when `path` is already a quantized checkpoint
// (ptq's, GPTQ or compressed-tensors), since quantizing its dequantized weights again would stack two roundings.
std::unique_ptr<Model> open_model_to_quantize(const std::string& path);

enum class RunDevice { Cpu, Cuda };

// How eval, generate, bench and logits run a model.
struct RunOptions {
  // Cuda: the forward runs on the first CUDA device (runtime/decoder_runner.h on kernels::cuda_backend()), the
  // weights uploaded once as the packed runner holds them; throws naming why where that cannot be (no CUDA build or
  // device, a model or option the device runner does not take).
  RunDevice device = RunDevice::Cpu;
  // false: the packed runner (Model::set_packed_runner): weights stay at their stored size and run on the CPU
  // kernels (lib/kernels). true: the reference runner (open_model above: fp32 weights, LibTorch matmul).
  bool reference = false;
  // KV cache storage; unset: f16 for the packed runner, f32 for the reference runner.
  std::optional<KvCacheType> kv_cache;
  // Packed runner: round activations to int8 per 32-block inside quantized matmuls (Model::set_int8_activations).
  bool int8_activations = false;
};
std::unique_ptr<Model> open_model_for_run(const std::string& path, const RunOptions& opts);

}  // namespace ptq
