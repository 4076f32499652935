// linear_cuda.h in a build without CUDA: uploads throw device.h's Error (no buffer can be made).
#include "kernels/cuda/linear_cuda.h"

namespace ptq::kernels::cuda {

namespace {
[[noreturn]] void no_cuda() { throw Error("this ptq was built without CUDA (configure with -DPTQ_WITH_CUDA=ON)"); }
}  // namespace

int64_t DeviceWeights::bytes() const { return 0; }
DeviceWeights upload(const PackedWeights&) { no_cuda(); }
void linear(const DeviceWeights&, const float*, int64_t, float*, const float*, const Stream*) { no_cuda(); }
void linear_host(const DeviceWeights&, const float*, int64_t, float*, const float*) { no_cuda(); }

}  // namespace ptq::kernels::cuda
