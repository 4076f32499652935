// gptq_cuda.h in a build without CUDA: every op throws device.h's Error.
#include "kernels/cuda/gptq_cuda.h"

namespace ptq::kernels::cuda {

void gemm_at_b(int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float, float*, int64_t,
               const Stream*) {
  throw_built_without_cuda();
}
bool inverse_cholesky_upper(const float*, int64_t, double, double*, float*) { throw_built_without_cuda(); }
void gptq_sweep_block(const GptqSweep&, int64_t, int64_t, const Stream*) { throw_built_without_cuda(); }

}  // namespace ptq::kernels::cuda
