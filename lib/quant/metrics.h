// Distortion between a weight (or activation) tensor and its dequantized version.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace ptq {

struct Distortion {
  double nmse = 0;           // sum (x_hat - x)^2 / sum x^2; 0 when both are 0, inf when only x is all zero
  double snr_db = 0;         // -10 log10(nmse): +inf for an exact copy
  double max_abs_error = 0;  // max |x_hat - x|
  int64_t sign_flips = 0;    // elements with x and x_hat of opposite, nonzero signs
  double zero_fraction = 0;  // of the nonzero x, the fraction that became exactly 0 (0 if x is all zero)
};

// Sums in double. Throws unless the shapes match.
Distortion distortion(const at::Tensor& original, const at::Tensor& dequantized);
// The figures from their sums: signal = sum x^2, noise = sum (x_hat - x)^2, max |x_hat - x|, sign flips, nonzero x,
// nonzero x that became 0 (a fused pass computes them itself: quant/rtn_packed.h).
Distortion distortion_from_sums(double signal, double noise, double max_abs_error, int64_t sign_flips,
                                int64_t nonzero, int64_t zeroed);

// GPTQ's proxy objective for a weight error dW = w_hat - w [out, in] under a Hessian H [in, in]:
// 1/2 tr(dW H dW^T) = sum over rows of 1/2 dW_r H dW_r^T (with H = 2/n sum x x^T, equals ||X dW^T||^2 / n).
double hessian_loss(const at::Tensor& w, const at::Tensor& w_hat, const at::Tensor& hessian);

}  // namespace ptq
