// int_linear_cuda.h in a build without CUDA: the rest says there is no CUDA (int_linear_supports, in
// int_linear_layout.cpp, answers in both builds).
#include "kernels/cuda/int_linear_cuda.h"

namespace ptq::kernels::cuda {

DeviceIntWeights upload(const IntWeights&) { throw_built_without_cuda(); }
void int_linear(const DeviceIntWeights&, const int8_t*, const float*, int64_t, bool, float*, const float*,
                const Stream*) {
  throw_built_without_cuda();
}
void act_codes(const ActCodes&, const float*, int64_t, int64_t, int64_t, const int32_t*, int8_t*, float*, int*,
               const Stream*) {
  throw_built_without_cuda();
}
void int_linear_host(const DeviceIntWeights&, const IntActivations&, float*, const float*) {
  throw_built_without_cuda();
}

}  // namespace ptq::kernels::cuda
