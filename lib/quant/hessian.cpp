#include "quant/hessian.h"

#include <cmath>

#include <ATen/ATen.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "quant/quantizer.h"

namespace ptq {

HessianAccumulator::HessianAccumulator(int64_t in_features, std::string name)
    : name_(std::move(name)), h_(at::zeros({in_features, in_features}, at::kFloat)) {}

void HessianAccumulator::add(const at::Tensor& x) {
  const int64_t in = h_.size(0);
  if ((x.dim() != 2 && x.dim() != 3) || x.size(-1) != in || !x.is_floating_point())
    fail_input("{}: calibration input has shape {} ({}); expected float [tokens, {}] or [batch, tokens, {}]", name_,
               shape_str(x.sizes().vec()), c10::toString(x.scalar_type()), in, in);
  check_finite(x, name_ + " calibration input");
  const int64_t batch = x.dim() == 3 ? x.size(0) : 1;
  h_.mul_(static_cast<double>(n_) / static_cast<double>(n_ + batch));
  n_ += batch;
  const at::Tensor xs = x.reshape({-1, in}).to(at::kFloat) * std::sqrt(2.0 / static_cast<double>(n_));
  h_.addmm_(xs.t(), xs);
}

}  // namespace ptq
