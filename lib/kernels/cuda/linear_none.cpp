// linear_cuda.h in a build without CUDA: uploads throw device.h's Error (no buffer can be made); the FloatGemm choice
// is kept, so callers may set it unconditionally.
#include "kernels/cuda/linear_cuda.h"

#include <atomic>

namespace ptq::kernels::cuda {

namespace {
std::atomic<FloatGemm> g_float_gemm{FloatGemm::Auto};
}  // namespace

int64_t DeviceWeights::bytes() const { return 0; }
DeviceWeights upload(const PackedWeights&) { throw_built_without_cuda(); }
void linear(const DeviceWeights&, const float*, int64_t, float*, const float*, const Stream*) {
  throw_built_without_cuda();
}
void linear_host(const DeviceWeights&, const float*, int64_t, float*, const float*) { throw_built_without_cuda(); }
void set_float_gemm(FloatGemm g) { g_float_gemm.store(g); }
FloatGemm float_gemm() { return g_float_gemm.load(); }
const char* linear_kernel(const DeviceWeights&, int64_t) { throw_built_without_cuda(); }

}  // namespace ptq::kernels::cuda
