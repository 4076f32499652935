// int_linear_cuda.h in a build without CUDA: the layout check answers, the rest says there is no CUDA.
#include <string>

#include "kernels/cuda/int_linear_cuda.h"

namespace ptq::kernels::cuda {

bool int_linear_supports_layout(const IntWeights& w, std::string* why);  // int_linear_layout.cpp

namespace {
[[noreturn]] void no_cuda() { throw Error("this ptq was built without CUDA (configure with -DPTQ_WITH_CUDA=ON)"); }
}  // namespace

bool int_linear_supports(const IntWeights& w) { return int_linear_supports_layout(w, nullptr); }
DeviceIntWeights upload(const IntWeights&) { no_cuda(); }
void int_linear(const DeviceIntWeights&, const int8_t*, const float*, int64_t, bool, float*, const float*,
                const Stream*) {
  no_cuda();
}
void int_linear_host(const DeviceIntWeights&, const IntActivations&, float*, const float*) { no_cuda(); }

}  // namespace ptq::kernels::cuda
