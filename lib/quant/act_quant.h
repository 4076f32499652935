// Activation quantizers (ALGORITHMS.md "Quantizer primitives"): b-bit grids for the inputs of linear modules,
// per-tensor static, per-input-channel static or per-token dynamic, symmetric or asymmetric, with a clip ratio.
//
// Integer semantics. A quantized activation is a matrix of integer codes c = q - zero together with its scale:
//   symmetric  (signed grid)  c = clamp(round(x / scale), -2^(b-1), 2^(b-1) - 1),     scale = clip·absmax / (2^(b-1) - 1)
//   asymmetric (unsigned)     q = clamp(round(x / scale) + zero, 0, 2^b - 1), c = q - zero,
//                             scale = clip·(max - min) / (2^b - 1), zero = round(-clip·min / scale), range with 0
// x̂ = scale · c. Rounding is half-to-even after multiplying by the precomputed inverse scale (as for weights);
// a scale of 0 (all-zero data) becomes 1. Static scales come from calibration statistics (per-channel min/max
// over the calibration tokens) and are stored in the checkpoint in fp32; dynamic ones are computed per token
// at run time in fp32. Codes are returned as fp32/fp64 tensors holding integers, so the GEMM that consumes
// them (act_linear.h) is exact.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

namespace ptq {

enum class ActGranularity : uint8_t {
  PerTensor,   // one static scale (and zero) for the whole input
  PerChannel,  // one static scale per input channel; no integer GEMM can consume it unless a method folds the
               // steps into the weights (OutlierTune, MergeQuant), so unfolded it is evaluated on x̂ in fp64
  PerToken,    // dynamic: one scale per token (row), computed at run time
};

const char* act_granularity_name(ActGranularity g);  // "per_tensor", "per_channel", "per_token"
std::optional<ActGranularity> act_granularity_from_name(const std::string& name);

struct ActQuantSpec {
  int bits = 8;  // 2..8
  ActGranularity granularity = ActGranularity::PerToken;
  bool sym = true;
  double clip = 1.0;  // the range (absmax, or [min, max]) is multiplied by clip before the grid is made
  bool is_static() const { return granularity != ActGranularity::PerToken; }
  int qmin() const { return sym ? -(1 << (bits - 1)) : 0; }
  int qmax() const { return sym ? (1 << (bits - 1)) - 1 : (1 << bits) - 1; }
  std::string describe() const;  // e.g. "a8 per_token sym"
  nlohmann::json to_json() const;
};
// Throws naming `where` for missing/invalid keys.
ActQuantSpec act_spec_from_json(const nlohmann::json& j, const std::string& where);

// Static grid of an input: scale [1] or [in] fp32 (> 0), zero [1] or [in] fp32 holding integers (sym: 0).
struct ActQuantParams {
  at::Tensor scale, zero;
};

// Static parameters from per-channel min/max of the input over calibration tokens ([in] each).
ActQuantParams static_act_params(const ActQuantSpec& spec, const at::Tensor& ch_min, const at::Tensor& ch_max);

struct QuantizedActivation {
  at::Tensor codes;  // [T, in] fp32, integers q - zero
  at::Tensor scale;  // [T, 1] (per token), [1] (per tensor) or [in] (per channel), fp32
};

// x [T, in] (fp32) -> codes and scales. `params` required for static specs, ignored for dynamic.
QuantizedActivation quantize_activation(const at::Tensor& x, const ActQuantSpec& spec, const ActQuantParams* params);
at::Tensor dequantize_activation(const QuantizedActivation& qa);  // scale · codes, fp32

// Scalar twin of quantize_activation (plain loops), bit-identical to it.
QuantizedActivation quantize_activation_ref(const at::Tensor& x, const ActQuantSpec& spec,
                                            const ActQuantParams* params);

}  // namespace ptq
