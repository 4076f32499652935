// GPTQ's device kernels (kernels/gptq_ops.h describes the ops; cuda/gptq_common.h holds what each thread computes).
// Each runs on `stream` (nullptr: the default stream) without waiting for it, except inverse_cholesky_upper, which
// waits to read its failure flag. A build without CUDA throws Error.
//
//   gemm_at_b               64 x 64 tiles of C per block of 256 threads (4 x 4 elements each), Aᵀ and B staged
//                           through shared memory 16 rows of k at a time; fp32 FMA in k order
//   inverse_cholesky_upper  one launch per column for the factorisation and per row for the triangular inverse (the
//                           right-looking outer-product forms, 16 x 16 threads per block over the updated triangle);
//                           double. O(n³/3) flops over n launches: ~n³ · 16 / 3 bytes of trailing-matrix traffic
//   gptq_sweep_block        one thread per output row, kGptqRows rows per block; the row's block columns in shared
//                           memory ([column][row], conflict-free), the U rows read through the cache (every thread of
//                           a block reads the same U element: a broadcast)
#pragma once

#include <cstdint>

#include "kernels/cuda/device.h"
#include "kernels/gptq_ops.h"

namespace ptq::kernels::cuda {

void gemm_at_b(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
               int64_t ldb, float beta, float* c, int64_t ldc, const Stream* stream = nullptr);
bool inverse_cholesky_upper(const float* h, int64_t n, double damp, double* work, float* u);
void gptq_sweep_block(const GptqSweep& s, int64_t i1, int64_t i2, const Stream* stream = nullptr);

}  // namespace ptq::kernels::cuda
