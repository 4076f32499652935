// Running GPTQ Hessian H = (2/n) sum x x^T of a linear layer's inputs, accumulated batch by batch in fp32.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

namespace ptq {

class HessianAccumulator {
 public:
  // `name` (the linear module) appears in error messages.
  HessianAccumulator(int64_t in_features, std::string name);

  // x is [tokens, in] (one calibration sequence) or [batch, tokens, in] (batch sequences); any float dtype.
  // n counts sequences, as gptq.py's add_batch does: H *= n / (n + batch); n += batch; H += (2/n) x^T x.
  // Throws naming the module for a wrong last dimension or NaN/Inf inputs.
  void add(const at::Tensor& x);

  const at::Tensor& hessian() const { return h_; }  // [in, in] fp32
  int64_t samples() const { return n_; }
  int64_t in_features() const { return h_.size(0); }

 private:
  std::string name_;
  at::Tensor h_;
  int64_t n_ = 0;
};

}  // namespace ptq
