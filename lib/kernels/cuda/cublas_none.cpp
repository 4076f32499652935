// cublas.h in a build without CUDA: no library is looked for, and the GEMM says why.
#include "kernels/cuda/cublas.h"

#include "kernels/cuda/device.h"

namespace ptq::kernels::cuda {

std::string cublas_load_error() { return unavailable_reason(); }
std::string cublas_library() { return {}; }
std::string cublas_unavailable() { return unavailable_reason(); }
void cublas_gemm_xwt(WeightKind, const void*, int64_t, const void*, int64_t, int64_t, int64_t, int64_t, bool, float*,
                     void*) {
  throw_built_without_cuda();
}

}  // namespace ptq::kernels::cuda
