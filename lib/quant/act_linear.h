// A linear module with quantized weights AND quantized inputs, evaluated with exact integer semantics: the
// reference an integer runner is checked against, accumulator for accumulator.
//
//   codes  c[t, k]  = quantize_activation(x)             (act_quant.h; integers, scale a[t] or a)
//   weight w[n, k]  = q[n, k] - zero[n, g(k)]              (integers), step s[n, g]
//   acc[t, n, g]    = Σ_{k in group g} c[t, k] · w[n, k]   exact int32 (|c|, |w| <= 255; width · max|c| · max|w|
//                                                          < 2^31, see kernels/int_linear.h)
//   y[t, n]         = fp32( a[t] · Σ_g s[n, g] · acc[t, n, g] )  (+ bias in fp32; Σ_g in double, g increasing)
// Groups run over columns in g_idx order (act-order columns are gathered first, for x and w alike).
// forward() runs per-tensor and per-token modules on the integer kernel kernels::int_linear (int16 codes, int32
// group sums; bit-identical to act_quant_linear_ref), or on kernels::int_linear8 (1-byte weights, half-byte for 4-bit
// grids, AVX-512 VNNI; the same bits) where the weight integers fit a signed byte and the groups are whole dwords:
// symmetric static per-tensor and per-token dynamic inputs are rounded inside that kernel (int_linear8_static,
// int_linear8_dynamic). accumulators() keeps the former fp64 evaluation (bmm on integers held in doubles,
// |acc| < 2^53, refused past int32) as an independent reference for tests, and as the
// path of groups too wide for int32 in the worst case (e.g. > 33025 columns with asymmetric 8-bit activations).
//
// A per-input-channel static activation scale cannot leave an integer GEMM (it varies along k); methods that
// use one fold the steps into the weights (so the module sees per-tensor scale 1). An unfolded per-channel
// module is evaluated on the dequantized input instead: y = x̂ · Ŵᵀ in fp64 (documented as simulated).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "kernels/backend.h"
#include "kernels/int_linear.h"
#include "model/model.h"
#include "quant/act_quant.h"
#include "quant/quantizer.h"

namespace ptq {

class ActQuantLinear final : public LinearKernel {
 public:
  // `params` for static specs (ignored for dynamic). bias [out] or undefined.
  ActQuantLinear(const QuantizedWeight& qw, const at::Tensor& bias, const ActQuantSpec& act, ActQuantParams params);
  at::Tensor forward(const at::Tensor& x) const override;
  // Siblings that make the same byte codes from the same input (same grid, columns and groups: q, k and v after one
  // norm, gate and up) share them: the input is rounded once, then each module's GEMM; bit for bit their forwards.
  std::vector<at::Tensor> forward_siblings(const at::Tensor& x,
                                           const std::vector<const LinearKernel*>& siblings) const override;
  int64_t in_features() const override { return in_; }
  int64_t out_features() const override { return out_; }
  int64_t weight_bytes() const override;

  // The integer accumulators acc [T, out, G] (fp64 holding integers) of a quantized input, for checking a
  // kernel bit-for-bit.
  at::Tensor accumulators(const QuantizedActivation& qa) const;
  const ActQuantSpec& act() const { return act_; }
  const ActQuantParams& params() const { return params_; }
  // Whether forward() runs on kernels::int_linear (per-tensor/per-token modules whose groups fit int32 for every
  // code the grids make; otherwise the fp64 accumulators).
  bool integer_kernel() const { return int_kernel_ && act_.granularity != ActGranularity::PerChannel; }

  // The module as the device runner uploads it (kernels/backend.h): `view` points into w, steps, bias and perm.
  struct DeviceView {
    at::Tensor w, steps, bias;
    std::vector<int32_t> perm;
    kernels::Backend::ActLinearWeights view;
  };
  // Why the device runner cannot run this module, or empty: it runs the integer path on bytes (per-tensor static or
  // per-token codes within a signed byte, weight integers within a signed byte; groups that are not whole dwords are
  // padded by the CUDA backend).
  std::string device_unsupported() const;
  DeviceView device_view() const;
  // Whether forward() rounds fp32 inputs straight to byte codes (kernels::Codes8: symmetric codes, byte weights,
  // natural column order).
  bool codes_from_floats() const { return w8_ != nullptr && act_.sym && !perm_.defined(); }
  // Whether `o` makes the same byte codes from the same input (forward_siblings shares them).
  bool same_codes(const ActQuantLinear& o) const;

 private:
  // The weight integers [out, K] int16 in group order: w_int_, or unpacked from w8_ where only that is kept.
  at::Tensor weight_integers() const;
  // The weight integers and steps as the integer kernel takes them (views into w_int and this object).
  kernels::IntWeights int_weights(const at::Tensor& w_int) const;
  // x [T, in] fp32 contiguous to codes on this module's grid; false where an input is not finite.
  bool make_codes(const at::Tensor& xf, kernels::Codes8& codes) const;
  // y [..., out] (x's leading shape) from codes made by make_codes of this module or a same_codes sibling.
  at::Tensor forward_codes(const kernels::Codes8& codes, const at::Tensor& x) const;

  ActQuantSpec act_;
  ActQuantParams params_;
  at::Tensor w_int_;   // [out, K] int16 q - zero, columns in group order; dropped when w8_ holds them
  int64_t in_ = 0, out_ = 0;
  float step_ = 0;  // the static per-tensor step, for int_linear8_static (set with w8_ for such modules)
  at::Tensor scales_;  // [out, G] fp32 contiguous (the stored scales)
  at::Tensor perm_;    // [K] int64 column order (undefined: natural)
  at::Tensor w_hat_;   // [out, K] fp64 dequantized (natural order), only for the per-channel simulated path
  at::Tensor bias_;    // [out] fp32 contiguous or undefined
  int64_t groups_ = 1, width_ = 0;
  int32_t w_max_abs_ = kernels::kIntLinearMaxCode;  // max |q - zero| (set before int_weights() is used)
  // The same weights as bytes for kernels::int_linear8 (AVX-512 VNNI), where the module and the CPU allow it: what
  // forward() runs on (bit-identical), int16 weights only for codes outside a signed byte. Null otherwise.
  std::shared_ptr<const kernels::IntWeights8> w8_;
  bool int_kernel_ = true;  // groups fit int32 for every code the activation grid makes (int_linear_width_fits)
};

// Scalar twin: plain loops over the definition above (accumulators in int64), same result as forward().
at::Tensor act_quant_linear_ref(const at::Tensor& x, const QuantizedWeight& qw, const at::Tensor& bias,
                                const ActQuantSpec& act, const ActQuantParams* params);

}  // namespace ptq
