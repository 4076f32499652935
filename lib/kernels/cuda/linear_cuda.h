// The linear op on a CUDA device: y = x Wᵀ (+ b) for the weights of packed_weights.h, fp32 activations, fp32
// accumulation (above 4 tokens the activations enter the tensor cores rounded: to fp16 with quantized weights, to the
// weights' type with F16 / BF16 weights on cuBLAS); the device twin of linear.h (same arguments, device pointers).
// Weights are copied to the device in the CPU layout unchanged (upload), so one packing serves both.
//
// Kernels (linear.cu; per-thread work in linear_common.h, shared with the host emulation in the tests):
//   gather_x  x [m, k] -> xp [m, xp_width]: columns in kernel order (act-order perm applied once per call), zeros past k;
//             fp32, or for cublas rounded to nearest fp16 / bf16
//   gemv      m <= kGemvMaxTokens: one warp per output row; each lane decodes 16-byte chunks of the row into registers
//             (dequantized w = scale * q - offset, float weights converted) and multiplies them with every token,
//             so the weights are read once per call; the warp's lanes are summed with shuffles
//   cublas    m > kGemvMaxTokens, F16 and BF16 weights, where cuBLAS is there (float_gemm() below): x rounded to
//             nearest in the weights' type (fp16 or bf16: bf16 weights are not rounded into fp16) into the workspace
//             by gather_x, then one cublasGemmEx (cublas.h: fp32 accumulation, fp32 y); a bias is broadcast into y
//             first and the GEMM adds onto it (beta = 1): the bias joins the fp32 sum once, as in the other kernels
//   hmma      m > kGemvMaxTokens, quantized weights, and F16 / BF16 weights where cuBLAS is not taken: 64 x 64 output
//             tiles, weights dequantized and activations rounded to fp16 into shared memory 32 columns at a time,
//             tensor cores (mma.sync m16n8k16, fp32 accumulation), a warp 32 x 32 outputs (linear_common.h)
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

// Which GEMM runs F16 / BF16 weights above kGemvMaxTokens tokens; process-wide, Auto unless set (benchmarks and tests
// force either):
//   Auto    cuBLAS where cublas_unavailable() (cublas.h) is empty for the calling thread's device; otherwise hmma,
//           and the first such fallback prints the reason once on stderr
//   Own     hmma
//   Cublas  cuBLAS; linear() throws Error naming why where cuBLAS is unavailable
enum class FloatGemm { Auto, Own, Cublas };
void set_float_gemm(FloatGemm g);
FloatGemm float_gemm();

// The kernel linear(w, x, m, ...) runs now on this thread: "gemv", "cublas", "hmma" or "gemm" (the list above); throws
// what linear would under FloatGemm::Cublas without cuBLAS. Without a CUDA build: throws "built without CUDA".
const char* linear_kernel(const DeviceWeights& w, int64_t m);

}  // namespace ptq::kernels::cuda
