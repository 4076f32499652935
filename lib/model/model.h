// The FP reference model: weights from a Hugging Face checkpoint, forward pass in fp32 on CPU,
// structured one decoder layer at a time so calibration and quantization can stream layers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "io/safetensors.h"
#include "model/config.h"

namespace ptq {

// The linear modules of one decoder layer, in execution order. Names come from ArchTraits.
enum class LinearId : uint8_t { Q, K, V, O, Gate, Up, Down };
constexpr int kNumLinear = 7;
const char* linear_module_name(const ModelConfig& cfg, LinearId id);  // e.g. "self_attn.q_proj"

// A linear module's forward when it is not `x Wᵀ + b` in fp32: activation-quantized modules run through a
// kernel with integer semantics (lib/quant/act_linear.h). Defined here, implemented above the model layer.
class LinearKernel {
 public:
  virtual ~LinearKernel() = default;
  // x [..., in] -> [..., out]; the bias is applied by the kernel.
  virtual at::Tensor forward(const at::Tensor& x) const = 0;
};

struct Linear {
  at::Tensor weight;  // [out, in] fp32 (for a kernel module: the dequantized weight, for inspection/metrics)
  at::Tensor bias;    // [out] or undefined
  std::shared_ptr<const LinearKernel> kernel;  // set: forward goes through it
  bool defined() const { return weight.defined(); }
};

struct Norm {
  at::Tensor weight;  // [hidden], or [n'] with index
  at::Tensor bias;    // LayerNorm; for RMSNorm only when a fold introduced a shift (x̂·γ + β)
  // Channel split (lib/transforms/fold.h): int64 [n'], the norm emits x̂[..., index]·γ + β with the
  // statistics over the original channels. Undefined: no split (every checkpoint).
  at::Tensor index;
};

// One decoder layer's weights, fp32. `linear[int(LinearId)]`; Gate is empty for ungated MLPs.
struct LayerWeights {
  Norm attn_norm, mlp_norm;
  Linear linear[kNumLinear];
  // Online rotation of down_proj's input (QuaRot-style Hadamard, lib/model/hadamard.h): [in, in] orthogonal,
  // the MLP computes down(mid · R). Undefined: none.
  at::Tensor down_rotation;
  Linear& operator[](LinearId id) { return linear[static_cast<int>(id)]; }
  const Linear& operator[](LinearId id) const { return linear[static_cast<int>(id)]; }
};

// Called with the input of every linear module during a forward; used by calibration observers.
using LinearInputHook = std::function<void(int64_t layer, LinearId id, const at::Tensor& x)>;

// Keys and values of every layer for incremental decoding, preallocated to `capacity` positions.
struct KVCache {
  std::vector<at::Tensor> k, v;  // per layer [batch, n_kv_heads, capacity, head_dim]
  int64_t length = 0;            // positions filled
  int64_t capacity = 0;
};

// Per-call state shared by all layers: positions, RoPE tables and the attention mask.
struct ForwardContext {
  int64_t pos0 = 0;     // position of the first new token
  int64_t n_new = 0;    // tokens in this call
  at::Tensor cos, sin;  // [n_new, head_dim] (RoPE models)
  at::Tensor mask;      // [n_new, pos0 + n_new], 0 or -inf
};

ForwardContext make_forward_context(const ModelConfig& cfg, int64_t pos0, int64_t n_new);

// Runs decoder layer `layer` on hidden states h [batch, tokens, hidden]. With a cache, keys/values are
// written at ctx.pos0 and attention covers everything before; without, the call is a full causal forward.
at::Tensor decoder_layer_forward(const ModelConfig& cfg, const LayerWeights& w, int64_t layer, const at::Tensor& h,
                                 const ForwardContext& ctx, KVCache* cache, const LinearInputHook* hook);

// Where a Model's fp32 tensors come from. The default reads the checkpoint's safetensors; a quantized
// checkpoint supplies one that dequantizes packed modules (lib/quant/checkpoint.h), so the runner evaluates
// exactly the stored values.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool contains(const std::string& name) const = 0;
  // fp32 copy of tensor `name`; throws std::invalid_argument naming it when absent.
  virtual at::Tensor load(const std::string& name) const = 0;
};

class ArchiveWeightSource final : public WeightSource {
 public:
  explicit ArchiveWeightSource(const TensorArchive& archive) : archive_(archive) {}
  bool contains(const std::string& name) const override { return archive_.contains(name); }
  at::Tensor load(const std::string& name) const override;

 private:
  const TensorArchive& archive_;
};

class Model {
 public:
  // Opens a Hugging Face model directory: config.json + safetensors (mapped, not read). Weights are read
  // through `source` when given (it may refer to archive()), else straight from the safetensors.
  explicit Model(const std::string& dir);
  using SourceFactory = std::function<std::unique_ptr<WeightSource>(const TensorArchive&)>;
  Model(const std::string& dir, const SourceFactory& make_source);
  ~Model();

  const ModelConfig& config() const { return cfg_; }
  const std::string& path() const { return dir_; }
  const TensorArchive& archive() const { return *archive_; }

  const WeightSource& weights() const { return *source_; }

  // Token ids [batch, tokens] (int64) -> hidden states [batch, tokens, hidden] at positions pos0...
  at::Tensor embed(const at::Tensor& ids, int64_t pos0) const;
  // Final norm + lm_head: hidden [batch, tokens, hidden] -> logits [batch, tokens, vocab].
  at::Tensor head(const at::Tensor& h) const;
  // Full forward; with a cache, continues from cache->length and advances it.
  at::Tensor forward(const at::Tensor& ids, KVCache* cache = nullptr, const LinearInputHook* hook = nullptr);

  // Layer weights are loaded (converted to fp32) on first use and kept until released.
  const LayerWeights& layer(int64_t i);
  void release_layer(int64_t i);
  // Reads layer i's weights from the checkpoint without caching them.
  LayerWeights load_layer(int64_t i) const;

  // Called by load_layer on every layer it returns: a quantized checkpoint attaches its activation-quantized
  // kernels and online rotations here (lib/quant/checkpoint.h), above the model layer.
  using LayerFinisher = std::function<void(int64_t layer, LayerWeights& w)>;
  void set_layer_finisher(LayerFinisher f) { finisher_ = std::move(f); }

  KVCache new_cache(int64_t batch, int64_t capacity) const;
  int64_t parameter_count() const;

 private:
  at::Tensor load(const std::string& name) const;
  at::Tensor load_optional(const std::string& name) const;
  // Embedding, positions, projections, final norm and lm_head load on first use: quantizing a model
  // never needs them in fp32.
  void load_io_weights() const;

  std::string dir_;
  ModelConfig cfg_;
  std::unique_ptr<TensorArchive> archive_;
  std::unique_ptr<WeightSource> source_;
  mutable bool io_loaded_ = false;
  mutable at::Tensor embed_, pos_embed_, project_in_, project_out_, lm_head_;
  mutable Norm final_norm_;
  std::vector<std::optional<LayerWeights>> layers_;
  LayerFinisher finisher_;
};

// fp32 copy of a tensor stored as F32/F16/BF16; throws naming the tensor for other dtypes.
at::Tensor to_float_tensor(const TensorView& view);

}  // namespace ptq
