// Running GPTQ Hessian H = (2/n) sum x x^T of a linear layer's inputs, accumulated batch by batch in fp32.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

namespace ptq {

namespace kernels {
class GptqOps;
}

class HessianAccumulator {
 public:
  // `name` (the linear module) appears in error messages. With `device` (kernels/gptq_ops.h, for ptq quantize
  // --device cuda) H lives in its memory and each batch's xᵀx is its gemm_at_b; hessian() copies H back.
  HessianAccumulator(int64_t in_features, std::string name, std::shared_ptr<kernels::GptqOps> device = nullptr);

  // x is [tokens, in] (one calibration sequence) or [batch, tokens, in] (batch sequences); any float dtype.
  // n counts sequences, as gptq.py's add_batch does: H *= n / (n + batch); n += batch; H += (2/n) x^T x.
  // Throws naming the module for a wrong last dimension or NaN/Inf inputs.
  void add(const at::Tensor& x);

  const at::Tensor& hessian() const;  // [in, in] fp32
  int64_t samples() const { return n_; }
  int64_t in_features() const { return in_; }

 private:
  std::string name_;
  int64_t in_ = 0;
  mutable at::Tensor h_;  // on the device: the last copy taken by hessian()
  int64_t n_ = 0;
  std::shared_ptr<kernels::GptqOps> device_;
  std::shared_ptr<void> device_h_, device_x_;  // H, and the staging buffer of x
  size_t device_x_bytes_ = 0;
  mutable bool copied_ = true;
};

}  // namespace ptq
