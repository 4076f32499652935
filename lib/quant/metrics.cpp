#include "quant/metrics.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "core/error.h"
#include "io/safetensors.h"

namespace ptq {

Distortion distortion(const at::Tensor& original, const at::Tensor& dequantized) {
  if (!original.sizes().equals(dequantized.sizes()))
    fail_input("distortion: original has shape {}, dequantized has shape {}; expected equal shapes",
               shape_str(original.sizes().vec()), shape_str(dequantized.sizes().vec()));
  // Sums in double, with one double copy alive at a time (a 7B MLP weight is 360 MB per copy; converting x,
  // y and d at once made this the quantizer's peak). Converting to double is exact, so d = y - x computed
  // in place on y's copy, and signs and zeros read from the inputs, are exactly the all-double values.
  const double signal = original.to(at::kDouble).square().sum().item<double>();
  const at::Tensor d = dequantized.to(at::kDouble, /*non_blocking=*/false, /*copy=*/true).sub_(original);
  const double noise = d.square().sum().item<double>();
  const at::Tensor& x = original;
  const at::Tensor& y = dequantized;
  return distortion_from_sums(signal, noise, d.numel() ? d.abs().max().item<double>() : 0,
                              (((x > 0) & (y < 0)) | ((x < 0) & (y > 0))).sum().item<int64_t>(),
                              (x != 0).sum().item<int64_t>(), ((x != 0) & (y == 0)).sum().item<int64_t>());
}

Distortion distortion_from_sums(double signal, double noise, double max_abs_error, int64_t sign_flips,
                                int64_t nonzero, int64_t zeroed) {
  const double inf = std::numeric_limits<double>::infinity();
  Distortion m;
  m.nmse = noise == 0 ? 0 : signal == 0 ? inf : noise / signal;
  m.snr_db = m.nmse == 0 ? inf : -10 * std::log10(m.nmse);
  m.max_abs_error = max_abs_error;
  m.sign_flips = sign_flips;
  m.zero_fraction = nonzero ? static_cast<double>(zeroed) / static_cast<double>(nonzero) : 0;
  return m;
}

double hessian_loss(const at::Tensor& w, const at::Tensor& w_hat, const at::Tensor& hessian) {
  if (w.dim() != 2 || !w.sizes().equals(w_hat.sizes()) || hessian.dim() != 2 || hessian.size(0) != w.size(1) ||
      hessian.size(1) != w.size(1))
    fail_input("hessian_loss: expected W and W_hat [out, in] and H [in, in], found {}, {} and {}",
               shape_str(w.sizes().vec()), shape_str(w_hat.sizes().vec()), shape_str(hessian.sizes().vec()));
  const at::Tensor d = (w_hat.to(at::kDouble) - w.to(at::kDouble));
  return 0.5 * (d.mm(hessian.to(at::kDouble)) * d).sum().item<double>();
}

}  // namespace ptq
