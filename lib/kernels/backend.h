// The ops one decoder forward needs, on one device's memory: what lib/runtime/decoder_runner.h runs a model on.
// Two backends implement it: the CPU reference (host memory; kernels::linear and the scalar layer ops of
// layer_ops.h) and CUDA (device memory; the kernels of cuda/). The runner's orchestration is tested on the CPU
// reference against the LibTorch forward; each CUDA op is tested against the same references (tests/kernels), so the
// CUDA runner is the composition of checked pieces.
//
// Pointers passed to the ops are the backend's memory (alloc); layouts are layer_ops.h's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/hadamard.h"
#include "kernels/int_linear.h"
#include "kernels/layer_ops.h"
#include "kernels/memory.h"
#include "kernels/packed_weights.h"

namespace ptq::kernels {

// Memory (alloc, to_device, to_host, synchronize): memory.h.
class Backend : public Memory {
 public:
  virtual const char* name() const = 0;  // "cpu-reference", "cuda"

  // A linear module's weights as this backend runs them.
  class Weights {
   public:
    virtual ~Weights() = default;
    virtual int64_t bytes() const = 0;
  };
  virtual std::unique_ptr<Weights> upload(const PackedWeights& w) = 0;

  // An activation-quantized module (quant/act_linear.h): x's codes (int_linear.h's act_codes_ref, columns in group
  // order), then the integer linear op (int_linear.h) with the module's bias; the backend copies what it needs.
  struct ActLinearWeights {
    IntWeights w;                    // q - zero in group order, steps [n, groups] (host memory)
    const int32_t* perm = nullptr;   // [k] group-order column -> input column; null: natural order
    const float* bias = nullptr;     // [n] or null (host memory)
    ActCodes codes;
  };
  virtual std::unique_ptr<Weights> upload(const ActLinearWeights& w) = 0;

  // y [m, n] = x [m, k] Wᵀ + bias; bias [n] in this backend's memory or null.
  virtual void linear(const Weights& w, const float* x, int64_t m, float* y, const float* bias) = 0;
  // y [m, n] of an activation-quantized module (weights from upload(ActLinearWeights)) on x [m, k].
  virtual void act_linear(const Weights& w, const float* x, int64_t m, float* y) = 0;
  // Whether an act_linear since the last call met an input act_codes_ref refuses (a NaN; an Inf in a per-token row)
  // and could not refuse it then, its kernels running behind the host (CUDA: codes 0 there, the outputs invalid);
  // clears the record. Waits for the queued work. The CPU reference refuses at the module (act_codes_ref throws) and
  // answers false.
  virtual bool take_nonfinite_act_input() = 0;
  // y = x̂ · gamma (+ beta: a fold's shift, OutlierTune's; null: none); with a channel split (MergeQuant's;
  // layer_ops.h's NormSplit, its index in this backend's memory) y has split.width columns.
  virtual void rms_norm(const float* x, int64_t m, int64_t d, const float* gamma, const float* beta, float eps,
                        const NormSplit& split, float* y) = 0;
  // The online rotation before down_proj (QuaRot-style; kernels/hadamard.h): factors as this backend runs them, and
  // x [rows, f.n()] ← x · Q in place, bit for bit as kernels::hadamard_rotate (the CPU runner's).
  virtual std::unique_ptr<Weights> upload(const HadamardFactors& f) = 0;
  virtual void hadamard(const Weights& f, float* x, int64_t rows) = 0;
  // Rotary embedding of x [m, heads * head_dim], token t at positions[t] (int64, this backend's memory).
  virtual void rope(float* x, int64_t m, int64_t heads, int64_t head_dim, const int64_t* positions, double theta) = 0;
  virtual void kv_append(const AttentionDims& a, const float* k_new, const float* v_new, int64_t m, int64_t past,
                         uint16_t* k_cache, uint16_t* v_cache) = 0;
  virtual void attention(const AttentionDims& a, const float* q, int64_t m, int64_t past, const uint16_t* k_cache,
                         const uint16_t* v_cache, float* out) = 0;
  virtual void swiglu(const float* gate, const float* up, int64_t count, float* out) = 0;
  // y += x, count elements.
  virtual void add(float* y, const float* x, int64_t count) = 0;
};

// Host memory, kernels::linear (the packed CPU kernels, fp32 activations) and the scalar references of layer_ops.h.
std::unique_ptr<Backend> cpu_reference_backend();
// The first CUDA device; throws cuda::Error saying why where there is none (or the build has no CUDA).
std::unique_ptr<Backend> cuda_backend();

}  // namespace ptq::kernels
