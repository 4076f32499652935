// A decoder's forward on a kernels::Backend (lib/kernels/backend.h): every weight uploaded once to the backend's
// memory, activations and an F16 KV cache there, each op a backend call; the host only embeds the token ids and reads
// the logits back. `--device cuda` runs models through it on the CUDA backend; its orchestration is tested on the CPU
// reference backend against the LibTorch forward (tests/runtime/test_decoder_runner.cpp).
//
// One layer, m tokens of each sequence of a batch at positions p .. p + m - 1, the batch's rows together (h [batch · m,
// hidden] in backend memory; every op below on all rows at once, but kv_append and attention per sequence):
//   x = rms_norm(h) · γ_attn (+ β_attn) [, split];  q = x Wqᵀ (+b), k = x Wkᵀ (+b), v = x Wvᵀ (+b);  rope(q), rope(k)
//   kv_append(k, v at p);  a = attention(q over cache 0 .. p + t);  h += a Woᵀ (+b)
//   x = rms_norm(h) · γ_mlp (+ β_mlp) [, split];  g = silu(x Wgᵀ) · x Wuᵀ [; g ← g · Q];  h += g Wdᵀ
// then the final norm and the lm_head (only on the last token for forward_last). β is a fold's shift (OutlierTune),
// the split a fold's channel split (MergeQuant: the norm emits copies of channels, x is wider than hidden), Q the
// online rotation before down_proj (QuaRot-style: stored as its seed, Backend::hadamard; or a dense matrix composed
// by a transform in memory, the backend's linear op with weights Qᵀ).
//
// Takes Llama-family decoders (RMSNorm, RoPE, gated SiLU MLP, pre-norm, no learned positions or embedding
// projections) with float, weight-only quantized and activation-quantized modules (the latter on the backend's
// integer path, Backend::act_linear, where ActQuantLinear::device_unsupported() is empty: codes and weight integers
// within a signed byte, per-tensor static or per-token codes); refuses, naming what the model has, other
// activation-quantized modules, a split final norm and other KV cache types than f16. An activation-quantized
// module's input the CPU path refuses (NaN; Inf in a per-token row) is refused here too, once the forward's logits
// are back (Backend::take_nonfinite_act_input: the device's kernels cannot stop at the module).
#pragma once

#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "model/model.h"

namespace ptq {

class DecoderRunner final : public ForwardRunner {
 public:
  // The most rows (sequences x tokens) one pass takes by default: a batch is run in chunks of whole sequences within
  // it (one sequence where it alone is longer), which bounds the activations' scratch (hidden, ffn and vocab wide).
  static constexpr int64_t kMaxRows = 2048;

  // Uploads every layer of `model` (opened for the packed runner: weights as stored) and its head; each layer's host
  // copy is released once uploaded. `model` must outlive the runner (the embedding is gathered on the host).
  // `max_rows`: the most rows (sequences x tokens) one pass takes (kMaxRows; the tests set fewer to split batches).
  DecoderRunner(Model& model, std::unique_ptr<kernels::Backend> backend, int64_t max_rows = kMaxRows);
  ~DecoderRunner() override;

  const char* device() const override { return backend_->name(); }
  at::Tensor forward(const at::Tensor& ids, KVCache* cache, bool last_only) override;
  KVCache new_cache(int64_t batch, int64_t capacity) override;
  int64_t weight_bytes() const override { return weight_bytes_; }

 private:
  // A norm on the backend: gamma, a fold's shift (beta, or null) and channel split (index [width] int64, or null).
  struct NormWeights {
    std::shared_ptr<void> gamma, beta, index;
    int64_t width = 0;  // columns the norm emits: the index length, else hidden
    kernels::NormSplit split() const { return {static_cast<const int64_t*>(index.get()), width}; }
  };
  struct Layer;
  struct Sequence;
  // Logits of `batch` sequences' m tokens each (ids [batch, m]) at their common length (advanced): [batch, rows,
  // vocab] into `out` (host), rows = 1 (last_only) or m. The batch's rows run every linear op, norm and add together;
  // RoPE with each row's position; kv_append and attention per sequence, on its own cache.
  void run_batch(const int64_t* ids, int64_t batch, int64_t m, Sequence* seqs, bool last_only, float* out);

  // A forward's activations in backend memory, one slot each, kept and grown across calls: the residual stream, the
  // norms' output, q, k, v, attention's output, a module's output added to the residual, gate and up (and the dense
  // rotation's output, in up's), the logits, the tokens' positions.
  enum class Slot { Hidden, Normed, Q, K, V, Attention, Residual, Gate, Up, Logits, Positions, Count };
  // Backend memory of `count` T for scratch slot `slot`.
  template <class T>
  T* scratch(Slot slot, size_t count) {
    return static_cast<T*>(scratch_bytes(slot, count * sizeof(T)));
  }
  void* scratch_bytes(Slot slot, size_t bytes);
  NormWeights upload_norm(const Norm& n);

  Model& model_;
  std::unique_ptr<kernels::Backend> backend_;
  std::vector<Layer> layers_;
  NormWeights final_norm_;
  int64_t max_norm_width_ = 0;  // the widest norm output: the scratch the q/k/v and gate/up inputs share
  int64_t max_ffn_ = 0;         // the widest MLP (gate/up outputs)
  int64_t max_rows_;
  std::unique_ptr<kernels::Backend::Weights> head_;
  int64_t weight_bytes_ = 0;
  std::pair<size_t, std::shared_ptr<void>> scratch_[size_t(Slot::Count)];
};

}  // namespace ptq
