// Which integer weights the CUDA kernels take (both builds: the answer does not depend on a device).
#include <string>

#include "kernels/cuda/int_linear_cuda.h"

namespace ptq::kernels::cuda {

bool int_linear_supports_layout(const IntWeights& w, std::string* why) {
  auto refuse = [&](const std::string& reason) {
    if (why != nullptr) *why = reason;
    return false;
  };
  if (w.n <= 0 || w.k <= 0 || w.groups <= 0 || w.w == nullptr || w.s == nullptr)
    return refuse("empty weights or no steps");
  if (w.k % w.groups != 0) return refuse("groups do not divide " + std::to_string(w.k) + " columns");
  const int64_t width = w.k / w.groups;
  if (width % 4 != 0) return refuse("groups of " + std::to_string(width) + " columns are not whole dwords");
  if (width > kIntLinearCudaMaxWidth)
    return refuse("groups of " + std::to_string(width) + " columns could overflow int32 (at most " +
                  std::to_string(kIntLinearCudaMaxWidth) + ")");
  for (int64_t i = 0; i < w.n * w.k; ++i)
    if (w.w[i] < -128 || w.w[i] > 127)
      return refuse("weight " + std::to_string(w.w[i]) + " at [" + std::to_string(i / w.k) + ", " +
                    std::to_string(i % w.k) + "] does not fit a signed byte");
  return true;
}

bool int_linear_supports(const IntWeights& w) { return int_linear_supports_layout(w, nullptr); }

}  // namespace ptq::kernels::cuda
