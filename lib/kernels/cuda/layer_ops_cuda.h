// The decoder's non-linear layer ops on a CUDA device: the twins of layer_ops.h (same names, arguments and layouts,
// device pointers), each running on `stream` (nullptr: the default stream) without waiting for it. Arguments are
// checked as the references check them (std::invalid_argument); a build without CUDA throws Error.
//
// Kernels (layer_ops.cu; what one thread computes is in layer_ops_common.h, shared with the host emulation in
// tests/kernels/test_layer_ops.cpp):
//   rms_norm, layer_norm  one block per row; each thread sums its columns in double, a shared-memory tree sums the
//                         block (norms are memory-bound: fp64 costs nothing visible), then each thread writes its
//                         columns as float((x - mean) · r) · gamma (+ beta)
//   rope                  one thread per (token, head, pair i < head_dim / 2); angles in double as the reference
//   swiglu                one thread per element, fp32 (expf)
//   kv_append             one thread per new (token, kv head, dim): fp32 -> fp16 bits, round to nearest even
//   attention             one block per (token, head), 4 warps: keys in chunks of kAttnChunk; a warp per key computes
//                         the score (lanes over head_dim, shuffle sum), then an online softmax (running maximum and
//                         sum, rescaled per chunk) and each thread accumulates its output dims over the chunk's
//                         values; all in fp32. head_dim at most kAttnMaxHeadDim.
//   hadamard_rotate       one block per row, the row in shared memory: signs, log2(p) butterfly stages, 1/√p, the
//                         m x m mix; the same fp32 operations as kernels::hadamard_rotate, so bit for bit its output
#pragma once

#include <cstdint>

#include "kernels/cuda/device.h"
#include "kernels/hadamard.h"
#include "kernels/layer_ops.h"

namespace ptq::kernels::cuda {

constexpr int64_t kAttnMaxHeadDim = 256;

// split: a norm's channel split (layer_ops.h), its index in device memory (not read on the host: the caller checks
// it, as the model loader does).
void rms_norm(const float* x, int64_t m, int64_t d, const float* gamma, float eps, float* y,
              const float* beta = nullptr, const NormSplit& split = {}, const Stream* stream = nullptr);
void layer_norm(const float* x, int64_t m, int64_t d, const float* gamma, const float* beta, float eps, float* y,
                const Stream* stream = nullptr);
// positions [m] int64 on the device.
void rope(float* x, int64_t m, int64_t heads, int64_t head_dim, const int64_t* positions, double theta,
          const Stream* stream = nullptr);
void swiglu(const float* gate, const float* up, int64_t count, float* out, const Stream* stream = nullptr);
void add(float* y, const float* x, int64_t count, const Stream* stream = nullptr);
void kv_append(const AttentionDims& a, const float* k_new, const float* v_new, int64_t m, int64_t past,
               uint16_t* k_cache, uint16_t* v_cache, const Stream* stream = nullptr);
// Also throws std::invalid_argument where head_dim > kAttnMaxHeadDim.
void attention(const AttentionDims& a, const float* q, int64_t m, int64_t past, const uint16_t* k_cache,
               const uint16_t* v_cache, float* out, const Stream* stream = nullptr);

// kernels/hadamard.h's factors on the device (upload_hadamard): signs [p], float(R) [m, m].
struct DeviceHadamard {
  Buffer signs, r;
  int64_t p = 1, m = 1;
  float scale = 1;  // 1 / √p in fp32, as hadamard.cpp computes it
  int64_t n() const { return p * m; }
};
DeviceHadamard upload_hadamard(const HadamardFactors& f);
// x [rows, f.n()] ← x · Q in place (hadamard.h), bit for bit as kernels::hadamard_rotate. Throws
// std::invalid_argument where a row does not fit the device's shared memory per block.
void hadamard_rotate(const DeviceHadamard& f, float* x, int64_t rows, const Stream* stream = nullptr);

}  // namespace ptq::kernels::cuda
