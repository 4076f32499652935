#include "quant/hessian.h"

#include <cmath>

#include <ATen/ATen.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/gptq_ops.h"
#include "quant/quantizer.h"

namespace ptq {

HessianAccumulator::HessianAccumulator(int64_t in_features, std::string name,
                                       std::shared_ptr<kernels::GptqOps> device)
    : name_(std::move(name)), in_(in_features), device_(std::move(device)) {
  if (device_)
    device_h_ = device_->alloc(static_cast<size_t>(in_ * in_) * sizeof(float));
  else
    h_ = at::zeros({in_, in_}, at::kFloat);
}

void HessianAccumulator::add(const at::Tensor& x) {
  const int64_t in = in_;
  if ((x.dim() != 2 && x.dim() != 3) || x.size(-1) != in || !x.is_floating_point())
    fail_input("{}: calibration input has shape {} ({}); expected float [tokens, {}] or [batch, tokens, {}]", name_,
               shape_str(x.sizes().vec()), c10::toString(x.scalar_type()), in, in);
  check_finite(x, name_ + " calibration input");
  const int64_t batch = x.dim() == 3 ? x.size(0) : 1;
  const double decay = static_cast<double>(n_) / static_cast<double>(n_ + batch);
  n_ += batch;
  if (!device_) {
    h_.mul_(decay);
    const at::Tensor xs = x.reshape({-1, in}).to(at::kFloat) * std::sqrt(2.0 / static_cast<double>(n_));
    h_.addmm_(xs.t(), xs);
    return;
  }
  const at::Tensor xs = x.reshape({-1, in}).to(at::kFloat).contiguous();
  if (xs.nbytes() > device_x_bytes_) {
    device_x_.reset();
    device_x_ = device_->alloc(xs.nbytes());
    device_x_bytes_ = xs.nbytes();
  }
  device_->to_device(device_x_.get(), xs.data_ptr(), xs.nbytes());
  const float* xd = static_cast<const float*>(device_x_.get());
  device_->gemm_at_b(in, in, xs.size(0), static_cast<float>(2.0 / static_cast<double>(n_)), xd, in, xd, in,
                     static_cast<float>(decay), static_cast<float*>(device_h_.get()), in);
  copied_ = false;
}

const at::Tensor& HessianAccumulator::hessian() const {
  if (device_ && !copied_) {
    if (!h_.defined()) h_ = at::empty({in_, in_}, at::kFloat);
    device_->to_host(h_.data_ptr(), device_h_.get(), h_.nbytes());
    copied_ = true;
  }
  if (!h_.defined()) h_ = at::zeros({in_, in_}, at::kFloat);  // a device accumulator that saw no input
  return h_;
}

}  // namespace ptq
