// Which integer weights the CUDA kernels take, and their padding to whole dwords (both builds: neither needs a
// device).
#include <stdexcept>
#include <string>

#include "kernels/cuda/int_linear_cuda.h"

namespace ptq::kernels::cuda {

namespace {

// The rules of int_linear_supports_layout; `padded`: judged after pad_groups_to_dwords (groups need not be dwords).
bool supports(const IntWeights& w, bool padded, std::string* why) {
  auto refuse = [&](const std::string& reason) {
    if (why != nullptr) *why = reason;
    return false;
  };
  if (w.n <= 0 || w.k <= 0 || w.groups <= 0 || w.w == nullptr || w.s == nullptr)
    return refuse("empty weights or no steps");
  if (w.k % w.groups != 0) return refuse("groups do not divide " + std::to_string(w.k) + " columns");
  const int64_t width = padded ? (w.k / w.groups + 3) / 4 * 4 : w.k / w.groups;
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

}  // namespace

bool int_linear_supports_layout(const IntWeights& w, std::string* why) { return supports(w, false, why); }

bool int_linear_supports(const IntWeights& w) { return supports(w, false, nullptr); }

bool int_linear_supports_padded(const IntWeights& w) { return supports(w, true, nullptr); }

DwordPadded pad_groups_to_dwords(const IntWeights& w, const int32_t* perm) {
  if (w.n <= 0 || w.k <= 0 || w.groups <= 0 || w.k % w.groups != 0 || w.w == nullptr)
    throw std::invalid_argument("pad_groups_to_dwords: empty weights or groups that do not divide the columns");
  const int64_t width = w.k / w.groups, padded = (width + 3) / 4 * 4, k = w.groups * padded;
  DwordPadded d;
  d.w.assign(size_t(w.n * k), 0);
  d.perm.resize(size_t(k));
  for (int64_t g = 0; g < w.groups; ++g)
    for (int64_t j = 0; j < padded; ++j) {
      const int64_t src = g * width + (j < width ? j : 0);  // a padding column reads the group's first column
      d.perm[size_t(g * padded + j)] = perm != nullptr ? perm[src] : int32_t(src);
      if (j < width)
        for (int64_t r = 0; r < w.n; ++r) d.w[size_t(r * k + g * padded + j)] = w.w[r * w.k + src];
    }
  d.view = w;
  d.view.w = d.w.data();
  d.view.k = k;
  return d;
}

}  // namespace ptq::kernels::cuda
