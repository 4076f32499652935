// The scalar math of one b-bit weight grid: its scale and zero from a range, the clip search, quantize and dequantize
// one value; and of an activation grid (act_grid, act_code). PTQ_HD, so the CUDA GPTQ sweep (kernels/cuda/gptq_common.h) computes exactly what the CPU references of
// quant/quantizer.h compute (they are these functions); ALGORITHMS.md "Weight grids" gives the math.
//
// No multiply here may fuse with an add under nvcc's default contraction (mul_rn), so device and host round alike.
// pow() in the clip search is the one function whose last bit may differ between the CUDA and the C library; it can
// only reorder two trial grids whose errors tie to within an ulp.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "core/half.h"
#include "core/host_device.h"

namespace ptq {

// Grid of one quantization unit (the _ref paths and GPTQ work one unit at a time).
struct GridParams {
  float scale = 1;
  float inv_scale = 1;  // 1 / scale, precomputed: quantization multiplies, never divides
  float zero = 0;       // integer valued
};

namespace grid_math {

// MSE clip search of gptq.py (Quantizer.find_params with mse=True): grid = 100, maxshrink = 0.8, norm = 2.4.
constexpr int kMseSteps = 80;
constexpr double kMseNorm = 2.4;
PTQ_HD float mse_shrink(int i) { return float(1.0 - i / 100.0); }

// Scales are stored as fp16 by every checkpoint format, so each scale is made an fp16 value before any code is
// computed: the stored checkpoint then reproduces the algorithm's values exactly. In fp16's normal range it is
// rounded to nearest; below it (groups of weights under ~2^-14 * levels, e.g. 8-bit grids over small groups) it is
// rounded up to a multiple of fp16's smallest subnormal 2^-24, so no code clips; an all-zero group gets 1. A scale
// above fp16's range stays fp32, and the checkpoint writer refuses it.
constexpr float kFp16MinNormal = 6.103515625e-05f;  // 2^-14
constexpr float kFp16Max = 65504.0f;
constexpr float kFp16SubnormalSteps = 16777216.0f;  // 2^24: fp16 subnormals are k * 2^-24
constexpr float kFp16Subnormal = 5.9604644775390625e-08f;  // 2^-24

PTQ_HD int max_code(int bits) { return (1 << bits) - 1; }
PTQ_HD int sym_levels(int bits) { return (1 << (bits - 1)) - 1; }  // 2^(b-1) - 1
PTQ_HD float sym_zero(int bits) { return float(1 << (bits - 1)); }

// Grid of a range [mn, mx] with mn <= 0 <= mx: asymmetric scale = (mx - mn) / (2^b - 1), zero = round(-mn / scale);
// symmetric scale = max(-mn, mx) / (2^(b-1) - 1), zero = 2^(b-1). The quotient is taken in double (no overflow for
// huge ranges), then made an fp16 value as above.
PTQ_HD GridParams grid_from_range(float mn, float mx, int bits, bool sym) {
  const double num = sym ? double(-mn > mx ? -mn : mx) : double(mx) - double(mn);
  GridParams p;
  p.scale = float(num / double(sym ? sym_levels(bits) : max_code(bits)));
  if (p.scale < FLT_MIN)
    p.scale = 1;
  else if (p.scale < kFp16MinNormal)
    p.scale = mul_rn(ceilf(mul_rn(p.scale, kFp16SubnormalSteps)), kFp16Subnormal);
  else if (p.scale <= kFp16Max)
    p.scale = fp16_to_f32(f32_to_fp16(p.scale));
  p.inv_scale = 1.0f / p.scale;
  p.zero = sym ? sym_zero(bits) : rintf(-mn / p.scale);
  return p;
}

// clamp(round_half_even(x * inv_scale) + zero, 0, 2^b - 1)
PTQ_HD int quantize_code(float x, const GridParams& p, int bits) {
  const float q = rintf(mul_rn(x, p.inv_scale)) + p.zero;
  return q <= 0 ? 0 : q >= float(max_code(bits)) ? max_code(bits) : int(q);
}
PTQ_HD float dequantize_code(int q, const GridParams& p) { return mul_rn(p.scale, float(q) - p.zero); }

// Grid of the n values value(0), ..., value(n - 1): the range always contains 0; with mse, the clip search of
// ALGORITHMS.md (80 shrunk ranges, error Σ |Q(x) - x|^2.4 in double, the first minimum wins).
template <class Value>
PTQ_HD GridParams find_grid(const Value& value, int64_t n, int bits, bool sym, bool mse) {
  float mn = 0, mx = 0;
  for (int64_t k = 0; k < n; ++k) {
    const float v = value(k);
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
  }
  GridParams best = grid_from_range(mn, mx, bits, sym);
  if (!mse) return best;
  double best_err = HUGE_VAL;
  for (int i = 0; i < kMseSteps; ++i) {
    const float p = mse_shrink(i);
    const GridParams g = grid_from_range(mul_rn(p, mn), mul_rn(p, mx), bits, sym);
    double err = 0;
    for (int64_t k = 0; k < n; ++k) {
      const float v = value(k);
      const float d = fabsf(dequantize_code(quantize_code(v, g, bits), g) - v);
      err += pow(double(d), kMseNorm);
    }
    if (err < best_err) {
      best_err = err;
      best = g;
    }
  }
  return best;
}

// ---- activation grids (quant/act_quant.h: its scalar twin and the integer runners' codes) --------------------------

// One activation unit's grid: a tensor (static) or a token (dynamic).
struct ActGrid {
  float scale = 1, inv = 1, zero = 0;
};

// The grid of an input range [mn, max] (extended to contain 0) for codes in [qmin, qmax]: symmetric scale =
// clip · max(-mn, mx) / qmax, asymmetric scale = clip · (mx - mn) / qmax with zero = round(-clip · mn / scale); the
// quotient in double, then fp32; a scale below FLT_MIN (all-zero data) becomes 1.
PTQ_HD ActGrid act_grid(float mn, float mx, bool sym, double clip, int qmax) {
  mn = 0.0f < mn ? 0.0f : mn;  // std::min(mn, 0) and std::max(mx, 0), NaN kept as they keep it
  mx = mx < 0.0f ? 0.0f : mx;
  const double num = sym ? double(-mn < mx ? mx : -mn) * clip : (double(mx) - double(mn)) * clip;
  ActGrid g;
  g.scale = float(num / double(qmax));
  if (!(g.scale >= FLT_MIN)) g.scale = 1.0f;
  g.inv = 1.0f / g.scale;
  g.zero = sym ? 0.0f : rintf(-float(double(mn) * clip) / g.scale);
  return g;
}

// The code c = q - zero of x: q = clamp(round_half_even(x · inv) + zero, qmin, qmax), as a float holding an integer
// (NaN for a NaN input: callers that need an integer check first).
PTQ_HD float act_code(float x, const ActGrid& g, int qmin, int qmax) {
  float q = rintf(mul_rn(x, g.inv)) + g.zero;
  q = q < float(qmin) ? float(qmin) : q > float(qmax) ? float(qmax) : q;  // std::min(std::max(q, qmin), qmax)
  return q - g.zero;
}

}  // namespace grid_math

}  // namespace ptq
