// The linear op on a CUDA device: y = x Wᵀ (+ b) for the weights of packed_weights.h, fp32 activations, fp32
// accumulation (above 4 tokens, F16/BF16/quantized weights and the activations enter the tensor cores as fp16); the
// device twin of linear.h (same arguments, device pointers). Weights are copied to the device in
// the CPU layout unchanged (upload), so one packing serves both.
//
// Kernels (linear.cu; per-thread work in linear_common.h, shared with the host emulation in the tests):
//   gather_x  x [m, k] -> xp [m, xp_width]: columns in kernel order (act-order perm applied once per call), zeros past k
//   gemv      m <= kGemvMaxTokens: one warp per output row; each lane decodes 16-byte chunks of the row into registers
//             (dequantized w = scale * q - offset, float weights converted) and multiplies them with every token,
//             so the weights are read once per call; the warp's lanes are summed with shuffles
//   hmma      m > kGemvMaxTokens, F16, BF16 and quantized weights: 64 x 64 output tiles, weights dequantized and
//             activations rounded to fp16 into shared memory 32 columns at a time, tensor cores (mma.sync m16n8k16,
//             fp32 accumulation), a warp 32 x 32 outputs (linear_common.h)
//   gemm      m > kGemvMaxTokens, F32 weights: 64 x 64 output tiles, weights into shared memory 32 columns at a time
//             and reused by 64 tokens, 4 x 4 fp32 outputs per thread
#pragma once

#include <cstdint>

#include "kernels/cuda/device.h"
#include "kernels/packed_weights.h"

namespace ptq::kernels::cuda {

// PackedWeights on the device (owned buffers, same layout and fields).
struct DeviceWeights {
  WeightKind kind = WeightKind::F32;
  int64_t n = 0, k = 0;
  int bits = 0, container = 0;
  int64_t kpad = 0, group = 0, groups = 0;
  Buffer codes, scales, offsets, perm, data;

  int64_t bytes() const;  // device bytes of the weights (what a forward reads)
};

// Copies w to the current device. Throws Error without a device.
DeviceWeights upload(const PackedWeights& w);

// y [m, n] = x [m, k] · Wᵀ + bias [n] (bias may be null); x, y and bias are device pointers. Runs on `stream`
// (nullptr: the default stream) without waiting for it.
void linear(const DeviceWeights& w, const float* x, int64_t m, float* y, const float* bias = nullptr,
            const Stream* stream = nullptr);
// The same from and to host memory (copies in, runs, waits, copies out): tests and benchmarks.
void linear_host(const DeviceWeights& w, const float* x, int64_t m, float* y, const float* bias = nullptr);

}  // namespace ptq::kernels::cuda
