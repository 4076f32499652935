// linear_cuda.h in a build without CUDA: uploads throw device.h's Error (no buffer can be made).
#include "kernels/cuda/linear_cuda.h"

namespace ptq::kernels::cuda {

int64_t DeviceWeights::bytes() const { return 0; }
DeviceWeights upload(const PackedWeights&) { throw_built_without_cuda(); }
void linear(const DeviceWeights&, const float*, int64_t, float*, const float*, const Stream*) {
  throw_built_without_cuda();
}
void linear_host(const DeviceWeights&, const float*, int64_t, float*, const float*) { throw_built_without_cuda(); }

}  // namespace ptq::kernels::cuda
