// kernels/gptq_ops.h's two implementations: CUDA (the kernels of gptq_cuda.h on device memory) and its host emulation
// (gptq_common.h's per-thread functions over every thread of each launch, in gptq.cu's launch order, on host memory).
// Plain C++, so it compiles in every build; without CUDA, cuda_gptq_ops() throws saying why.
#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/device.h"
#include "kernels/cuda/gptq_common.h"
#include "kernels/cuda/gptq_cuda.h"
#include "kernels/gptq_ops.h"

namespace ptq::kernels {

int64_t gptq_device_block(int64_t width, int64_t in) {
  if (width >= in) return std::min(kGptqDeviceBlock, in);  // one group per row: its grid is computed at column 0
  if (width <= kGptqDeviceBlock) return kGptqDeviceBlock / width * width;
  int64_t b = kGptqDeviceBlock;
  while (width % b != 0) --b;
  return b;
}

GptqSweepBuffers alloc_gptq_sweep(GptqOps& ops, int64_t in, int64_t out, int64_t groups) {
  auto floats = [&](int64_t n) { return ops.alloc(static_cast<size_t>(n) * sizeof(float)); };
  GptqSweepBuffers b;
  b.wt = floats(in * out);
  b.err = floats(kGptqDeviceBlock * out);
  b.codes = ops.alloc(static_cast<size_t>(in * out));
  b.scale = floats(groups * out);
  b.inv_scale = floats(groups * out);
  b.zero = floats(groups * out);
  b.column_group = ops.alloc(static_cast<size_t>(in) * sizeof(int32_t));
  b.loss = ops.alloc(static_cast<size_t>(out) * sizeof(double));
  GptqSweep& v = b.view;
  v.wt = static_cast<float*>(b.wt.get());
  v.err = static_cast<float*>(b.err.get());
  v.codes = static_cast<uint8_t*>(b.codes.get());
  v.scale = static_cast<float*>(b.scale.get());
  v.inv_scale = static_cast<float*>(b.inv_scale.get());
  v.zero = static_cast<float*>(b.zero.get());
  v.column_group = static_cast<const int32_t*>(b.column_group.get());
  v.loss = static_cast<double*>(b.loss.get());
  v.in = in;
  v.out = out;
  return b;
}

void gptq_sweep(GptqOps& ops, const GptqSweep& s) {
  const int64_t block = gptq_device_block(s.grids_at_starts ? s.width : s.in, s.in);
  for (int64_t i1 = 0; i1 < s.in; i1 += block) {
    const int64_t i2 = std::min(i1 + block, s.in);
    ops.sweep_block(s, i1, i2);
    if (i2 < s.in)
      ops.gemm_at_b(s.in - i2, s.out, i2 - i1, -1.0f, s.u + i1 * s.in + i2, s.in, s.err, s.out, 1.0f,
                    s.wt + i2 * s.out, s.out);
  }
}

namespace {

class CudaGptqOps final : public OnCuda<GptqOps> {
 public:
  const char* name() const override { return "cuda"; }
  void gemm_at_b(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float beta, float* c, int64_t ldc) override {
    cuda::gemm_at_b(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  bool inverse_cholesky_upper(const float* h, int64_t n, double damp, double* work, float* u) override {
    return cuda::inverse_cholesky_upper(h, n, damp, work, u);
  }
  void sweep_block(const GptqSweep& s, int64_t i1, int64_t i2) override { cuda::gptq_sweep_block(s, i1, i2); }
};

class HostEmulationGptqOps final : public OnHost<GptqOps> {
 public:
  const char* name() const override { return "cuda-host-emulation"; }

  // The kernel's tiles only stage operands: each element is gemm_at_b_dot over k in order, as here.
  void gemm_at_b(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float beta, float* c, int64_t ldc) override {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        cuda::gemm_at_b_store(alpha, cuda::gemm_at_b_dot(i, j, 0, k, a, lda, b, ldb, 0.0f), beta, c + i * ldc + j);
  }

  bool inverse_cholesky_upper(const float* h, int64_t n, double damp, double* work, float* u) override {
    double* a = work;
    double* x = work + n * n;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t m = 0; m < n; ++m) cuda::load_reversed(h, n, damp, i, m, a);
    for (int64_t j = 0; j + 1 < n; ++j)
      for (int64_t i = j + 1; i < n; ++i)
        for (int64_t m = j + 1; m <= i; ++m) cuda::cholesky_step(a, n, j, i, m);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < i; ++j) cuda::cholesky_scale(a, n, i, j);
    int failed = 0;
    for (int64_t j = 0; j < n; ++j) cuda::cholesky_diagonal(a, n, j, &failed);
    if (failed != 0) return false;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < n; ++c) x[i * n + c] = i == c ? 1.0 : 0.0;
    for (int64_t k = 0; k + 1 < n; ++k)
      for (int64_t i = k + 1; i < n; ++i)
        for (int64_t c = 0; c <= k; ++c) cuda::inverse_step(a, x, n, k, i, c);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t s = 0; s < n; ++s) cuda::write_u(a, x, n, r, s, u);
    return true;
  }

  void sweep_block(const GptqSweep& s, int64_t i1, int64_t i2) override {
    std::vector<float> block(static_cast<size_t>(i2 - i1));
    for (int64_t r = 0; r < s.out; ++r) {
      for (int64_t i = i1; i < i2; ++i) block[i - i1] = s.wt[i * s.out + r];
      cuda::sweep_row(s, r, i1, i2, [&](int64_t i) -> float& { return block[i - i1]; });
    }
  }
};

}  // namespace

std::unique_ptr<GptqOps> cuda_gptq_ops() {
  if (cuda::device_count() == 0) throw cuda::Error("no CUDA device: " + cuda::unavailable_reason());
  return std::make_unique<CudaGptqOps>();
}

std::unique_ptr<GptqOps> cuda_gptq_host_emulation() { return std::make_unique<HostEmulationGptqOps>(); }

}  // namespace ptq::kernels
