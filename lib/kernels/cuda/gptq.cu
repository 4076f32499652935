// CUDA kernels of gptq_cuda.h. The launch sequence of inverse_cholesky_upper is gptq_common.h's; gptq_ops.cpp's host
// emulation follows the same one.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda/gptq_common.h"
#include "kernels/cuda/gptq_cuda.h"
#include "kernels/cuda/launch.h"

namespace ptq::kernels::cuda {

namespace {

constexpr int kSide = 16;  // the triangle kernels' blocks: 16 x 16 threads

__global__ void gemm_at_b_kernel(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  __shared__ float as[kGemmDepth][kGemmTile], bs[kGemmDepth][kGemmTile];
  constexpr int kPer = kGemmTile / 16;  // elements of C per thread along each side
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t i0 = int64_t(blockIdx.y) * kGemmTile, j0 = int64_t(blockIdx.x) * kGemmTile;
  float acc[kPer][kPer] = {};
  for (int64_t t0 = 0; t0 < k; t0 += kGemmDepth) {
    for (int e = threadIdx.x; e < kGemmDepth * kGemmTile; e += kGemmThreads) {
      const int kk = e / kGemmTile, col = e % kGemmTile;
      const bool in_k = t0 + kk < k;
      as[kk][col] = in_k && i0 + col < m ? a[(t0 + kk) * lda + i0 + col] : 0.0f;
      bs[kk][col] = in_k && j0 + col < n ? b[(t0 + kk) * ldb + j0 + col] : 0.0f;
    }
    __syncthreads();
    const int depth = k - t0 < kGemmDepth ? int(k - t0) : kGemmDepth;  // gemm_at_b_dot's terms, no padding
    for (int kk = 0; kk < depth; ++kk)
      for (int x = 0; x < kPer; ++x)
        for (int y = 0; y < kPer; ++y) acc[x][y] = fmaf(as[kk][ty * kPer + x], bs[kk][tx * kPer + y], acc[x][y]);
    __syncthreads();
  }
  for (int x = 0; x < kPer; ++x)
    for (int y = 0; y < kPer; ++y) {
      const int64_t i = i0 + ty * kPer + x, j = j0 + tx * kPer + y;
      if (i < m && j < n) gemm_at_b_store(alpha, acc[x][y], beta, c + i * ldc + j);
    }
}

// Blocks of 16 x 16 threads over `rows` x `cols` elements; a thread's element is (side_row(r0), side_col(c0)).
dim3 side_grid(int64_t rows, int64_t cols) {
  return dim3(unsigned((cols + kSide - 1) / kSide), unsigned((rows + kSide - 1) / kSide));
}
__device__ int64_t side_row(int64_t r0) { return r0 + int64_t(blockIdx.y) * kSide + threadIdx.y; }
__device__ int64_t side_col(int64_t c0) { return c0 + int64_t(blockIdx.x) * kSide + threadIdx.x; }

__global__ void load_reversed_kernel(const float* h, int64_t n, double damp, double* a) {
  const int64_t i = side_row(0), m = side_col(0);
  if (i < n && m < n) load_reversed(h, n, damp, i, m, a);
}

__global__ void cholesky_step_kernel(double* a, int64_t n, int64_t j) {
  const int64_t i = side_row(j + 1), m = side_col(j + 1);
  if (i < n && m <= i) cholesky_step(a, n, j, i, m);
}

__global__ void cholesky_scale_kernel(double* a, int64_t n) {
  const int64_t i = side_row(0), j = side_col(0);
  if (i < n && j < i) cholesky_scale(a, n, i, j);
}

__global__ void cholesky_diagonal_kernel(double* a, int64_t n, int* failed) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < n) cholesky_diagonal(a, n, j, failed);
}

__global__ void identity_kernel(double* x, int64_t n) {
  const int64_t i = side_row(0), c = side_col(0);
  if (i < n && c < n) x[i * n + c] = i == c ? 1.0 : 0.0;
}

__global__ void inverse_step_kernel(const double* l, double* x, int64_t n, int64_t k) {
  const int64_t i = side_row(k + 1), c = side_col(0);
  if (i < n && c <= k) inverse_step(l, x, n, k, i, c);
}

__global__ void write_u_kernel(const double* l, const double* x, int64_t n, float* u) {
  const int64_t r = side_row(0), s = side_col(0);
  if (r < n && s < n) write_u(l, x, n, r, s, u);
}

__global__ void sweep_kernel(GptqSweep s, int64_t i1, int64_t i2) {
  __shared__ float block[kGptqDeviceBlock][kGptqRows];
  const int64_t r = int64_t(blockIdx.x) * kGptqRows + threadIdx.x;
  if (r >= s.out) return;
  for (int64_t i = i1; i < i2; ++i) block[i - i1][threadIdx.x] = s.wt[i * s.out + r];
  sweep_row(s, r, i1, i2, [&](int64_t i) -> float& { return block[i - i1][threadIdx.x]; });
}

void check_square(int64_t n, const char* who) {
  if (n < 1 || n > (int64_t(1) << 19)) throw std::invalid_argument(std::string(who) + ": bad matrix size");
}

}  // namespace

void gemm_at_b(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
               int64_t ldb, float beta, float* c, int64_t ldc, const Stream* stream) {
  if (m <= 0 || n <= 0) return;
  const dim3 grid(unsigned((n + kGemmTile - 1) / kGemmTile), unsigned((m + kGemmTile - 1) / kGemmTile));
  if (grid.y > 65535) throw std::invalid_argument("gemm_at_b: too many rows for one launch");
  gemm_at_b_kernel<<<grid, kGemmThreads, 0, stream_of(stream)>>>(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  check_launch("gemm_at_b");
}

bool inverse_cholesky_upper(const float* h, int64_t n, double damp, double* work, float* u) {
  check_square(n, "inverse_cholesky_upper");
  double* a = work;
  double* x = work + n * n;
  const dim3 side(kSide, kSide);
  Buffer failed(sizeof(int));
  failed.zero();
  load_reversed_kernel<<<side_grid(n, n), side>>>(h, n, damp, a);
  for (int64_t j = 0; j + 1 < n; ++j)
    cholesky_step_kernel<<<side_grid(n - j - 1, n - j - 1), side>>>(a, n, j);
  cholesky_scale_kernel<<<side_grid(n, n), side>>>(a, n);
  cholesky_diagonal_kernel<<<unsigned((n + 255) / 256), 256>>>(a, n, failed.as<int>());
  check_launch("cholesky");
  int flag = 0;
  failed.download(&flag, sizeof flag);
  if (flag != 0) return false;
  identity_kernel<<<side_grid(n, n), side>>>(x, n);
  for (int64_t k = 0; k + 1 < n; ++k) inverse_step_kernel<<<side_grid(n - k - 1, k + 1), side>>>(a, x, n, k);
  write_u_kernel<<<side_grid(n, n), side>>>(a, x, n, u);
  check_launch("triangular inverse");
  return true;
}

void gptq_sweep_block(const GptqSweep& s, int64_t i1, int64_t i2, const Stream* stream) {
  if (i2 - i1 > kGptqDeviceBlock || i1 < 0 || i2 > s.in || i1 >= i2)
    throw std::invalid_argument("gptq_sweep_block: columns [" + std::to_string(i1) + ", " + std::to_string(i2) +
                                ") are not a block of at most " + std::to_string(kGptqDeviceBlock));
  const unsigned blocks = unsigned((s.out + kGptqRows - 1) / kGptqRows);
  sweep_kernel<<<blocks, kGptqRows, 0, stream_of(stream)>>>(s, i1, i2);
  check_launch("gptq sweep");
}

}  // namespace ptq::kernels::cuda
