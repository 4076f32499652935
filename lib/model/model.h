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
#include "kernels/hadamard.h"
#include "kernels/memory.h"
#include "kernels/packed_weights.h"
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
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // Bytes of weights one forward reads (Model::packed_weight_bytes).
  virtual int64_t weight_bytes() const = 0;
  // The outputs of sibling modules that read the same x (q, k and v of a norm's output; gate and up), called on
  // siblings[0] with every sibling's kernel (this one first), in that order. The default runs each one's forward; a
  // kernel may share work between siblings of its own kind (ActQuantLinear: the activation codes, made once).
  virtual std::vector<at::Tensor> forward_siblings(const at::Tensor& x,
                                                   const std::vector<const LinearKernel*>& siblings) const;
};

// A linear module runs, in this order of preference, through `kernel` (activation quantization), through the
// packed weights on the CPU kernels (lib/kernels/linear.h: the packed runner), or as x Wᵀ + b on `weight`.
struct Linear {
  at::Tensor weight;  // [out, in] fp32; undefined when the module runs packed (dequantize_packed() gives it)
  at::Tensor bias;    // [out] or undefined
  // Set: forward goes through it, and it holds the module's weights (the packed runner's copy is dropped).
  std::shared_ptr<const LinearKernel> kernel;
  std::shared_ptr<const kernels::PackedWeights> packed;  // set (and weight undefined): the packed runner
  bool defined() const { return weight.defined() || packed != nullptr || kernel != nullptr; }
  int64_t out_features() const {
    return weight.defined() ? weight.size(0) : packed ? packed->n : kernel ? kernel->out_features() : 0;
  }
  int64_t in_features() const {
    return weight.defined() ? weight.size(1) : packed ? packed->k : kernel ? kernel->in_features() : 0;
  }
};

// An fp32 [n, k] tensor as F32 packed weights: a view that keeps (a contiguous copy of) the tensor alive.
std::shared_ptr<const kernels::PackedWeights> view_float_tensor(const at::Tensor& w);

// A tensor's bytes (made contiguous) in `mem`'s memory (a backend's, the GPTQ ops'), owned by the pointer; and bytes
// of `mem`'s memory back into `t` (its size and type), returned.
std::shared_ptr<void> upload_tensor(kernels::Memory& mem, const at::Tensor& t);
at::Tensor download_into(kernels::Memory& mem, const void* src, at::Tensor t);

// W [n, k] fp32 of packed weights (inspection, metrics, tests; never on the forward path).
at::Tensor dequantize_packed(const kernels::PackedWeights& w);

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
  // The same rotation as Hadamard factors, run as a fast Walsh–Hadamard transform (kernels/hadamard.h) instead of
  // the dense product: set for checkpoints that store only the rotation's seed (quant/checkpoint.cpp), where it
  // replaces down_rotation. Null: none, or down_rotation (a composed rotation from the transforms) is the one.
  std::shared_ptr<const kernels::HadamardFactors> down_hadamard;
  Linear& operator[](LinearId id) { return linear[static_cast<int>(id)]; }
  const Linear& operator[](LinearId id) const { return linear[static_cast<int>(id)]; }
};

// Called with the input of every linear module during a forward; used by calibration observers.
using LinearInputHook = std::function<void(int64_t layer, LinearId id, const at::Tensor& x)>;

// Storage of the KV cache. F16 is the default of the packed runner; Int8 keeps one fp32 step per (token, kv
// head) for keys and for values: codes = round(x / step), step = max|x| / 127 over the head's head_dim values.
enum class KvCacheType : uint8_t { F32, F16, Int8 };
const char* kv_cache_type_name(KvCacheType t);
KvCacheType parse_kv_cache_type(const std::string& name);  // "f32", "f16", "int8"; throws naming the value

// Keys and values of every layer for incremental decoding, preallocated to `capacity` positions.
struct KVCache {
  KvCacheType type = KvCacheType::F32;
  std::vector<at::Tensor> k, v;              // per layer [batch, n_kv_heads, capacity, head_dim] (F32/F16/int8 codes)
  std::vector<at::Tensor> k_step, v_step;    // Int8: per layer [batch, n_kv_heads, capacity, 1] fp32
  int64_t length = 0;                        // positions filled
  int64_t capacity = 0;
  // A ForwardRunner's own cache (device memory), in place of k and v; device_bytes is its size.
  std::shared_ptr<void> device;
  int64_t device_bytes = 0;
  int64_t bytes() const;                     // memory the cache holds
};

// Runs a Model's forward elsewhere than the LibTorch layer forward (lib/runtime/decoder_runner.h: on a
// kernels::Backend, the CUDA device or the CPU reference). Set on a Model (Model::set_forward_runner), it serves
// forward, forward_last and new_cache.
class ForwardRunner {
 public:
  virtual ~ForwardRunner() = default;
  virtual const char* device() const = 0;
  // Logits [batch, tokens, vocab] (last_only: [batch, 1, vocab]) of ids [batch, tokens]; with a cache made by
  // new_cache, continues from cache->length and advances it.
  virtual at::Tensor forward(const at::Tensor& ids, KVCache* cache, bool last_only) = 0;
  virtual KVCache new_cache(int64_t batch, int64_t capacity) = 0;
  // Bytes of weights one forward reads (linear modules + lm_head).
  virtual int64_t weight_bytes() const = 0;
};

// Per-call state shared by all layers: positions, RoPE tables and the attention mask.
struct ForwardContext {
  int64_t pos0 = 0;     // position of the first new token
  int64_t n_new = 0;    // tokens in this call
  at::Tensor cos, sin;  // [n_new, head_dim] (RoPE models)
  at::Tensor mask;      // [n_new, pos0 + n_new], 0 or -inf
  // Packed runner: quantized weights multiply activations rounded to int8 per 32-block (kernels::linear_q8)
  // instead of fp32 ones (Model::set_int8_activations).
  bool int8_activations = false;
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
  // Weights of linear module `module` ("<module>.weight" or its packed form) as the CPU kernels read them, or
  // null when this source has no packed form for it (the model then loads the fp32 weight).
  virtual std::shared_ptr<const kernels::PackedWeights> load_packed(const std::string& module) const { return nullptr; }
};

// "<module>.weight" of a float dtype viewed in place (mapped, not copied); null when absent or not F32/F16/BF16
// [n, k].
std::shared_ptr<const kernels::PackedWeights> view_archive_weight(const TensorArchive& archive,
                                                                  const std::string& module);

class ArchiveWeightSource final : public WeightSource {
 public:
  explicit ArchiveWeightSource(const TensorArchive& archive) : archive_(archive) {}
  bool contains(const std::string& name) const override { return archive_.contains(name); }
  at::Tensor load(const std::string& name) const override;
  std::shared_ptr<const kernels::PackedWeights> load_packed(const std::string& module) const override {
    return view_archive_weight(archive_, module);
  }

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

  // The packed runner: linear modules and the lm_head run on the CPU kernels over weights as stored (F16/BF16
  // mapped in place, quantized codes repacked once), the embedding is gathered row by row; nothing is widened
  // to fp32. Off (the default): every weight is loaded as fp32 (what quantization and the reference path use).
  // Set before the first forward.
  void set_packed_runner(bool on) { packed_ = on; }
  bool packed_runner() const { return packed_; }
  // Packed runner: quantized matmuls round their activations to int8 per block of 32 (llama.cpp's Q8_0 dot;
  // kernels::linear_q8): faster, not exact. Off: fp32 activations (exact).
  void set_int8_activations(bool on) { int8_act_ = on; }
  bool int8_activations() const { return int8_act_; }
  // Storage of caches made by new_cache().
  void set_kv_cache_type(KvCacheType t) { kv_type_ = t; }
  KvCacheType kv_cache_type() const { return kv_type_; }
  // Forward, forward_last and new_cache go through `runner` (null: the LibTorch layer forward); calibration hooks
  // are refused then.
  void set_forward_runner(std::shared_ptr<ForwardRunner> runner) { runner_ = std::move(runner); }
  const ForwardRunner* forward_runner() const { return runner_.get(); }
  // The final norm's γ and the lm_head as the packed runner holds them (loads them on first use).
  const Norm& final_norm() const;
  std::shared_ptr<const kernels::PackedWeights> packed_head() const;
  // Bytes of weights the packed runner reads per token (linear modules + lm_head), once the layers are loaded.
  int64_t packed_weight_bytes();
  // Token ids [batch, tokens] (int64) -> hidden states [batch, tokens, hidden] at positions pos0...
  at::Tensor embed(const at::Tensor& ids, int64_t pos0) const;
  // Final norm + lm_head: hidden [batch, tokens, hidden] -> logits [batch, tokens, vocab].
  at::Tensor head(const at::Tensor& h) const;
  // Full forward; with a cache, continues from cache->length and advances it.
  at::Tensor forward(const at::Tensor& ids, KVCache* cache = nullptr, const LinearInputHook* hook = nullptr);
  // The same, but only the last position's logits [batch, 1, vocab] (a generation's prompt: the head runs once).
  at::Tensor forward_last(const at::Tensor& ids, KVCache* cache);

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
  // Embedding and the decoder layers: hidden states before the final norm.
  at::Tensor hidden(const at::Tensor& ids, KVCache* cache, const LinearInputHook* hook);
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
  mutable std::shared_ptr<const kernels::PackedWeights> embed_packed_, head_packed_;  // packed runner
  bool packed_ = false, int8_act_ = false;
  KvCacheType kv_type_ = KvCacheType::F32;
  mutable Norm final_norm_;
  std::vector<std::optional<LayerWeights>> layers_;
  LayerFinisher finisher_;
  std::shared_ptr<ForwardRunner> runner_;
};

// fp32 copy of a tensor stored as F32/F16/BF16; throws naming the tensor for other dtypes.
at::Tensor to_float_tensor(const TensorView& view);

}  // namespace ptq
