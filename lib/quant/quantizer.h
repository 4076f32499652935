// Weight quantizer primitives shared by every algorithm: b-bit grids, scale/zero search, quantize, dequantize.
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

#include <ATen/core/Tensor.h>

#include "core/grid_math.h"
#include "core/weight_grid.h"

namespace ptq {

// Granularity is carried by group_size (weights are W[out, in], groups run along `in`):
//   g > 0        groups of g consecutive input columns, one scale/zero per (row, group); g must divide in
//   kPerChannel  one group of `in` per output row (GPTQ's group_size -1)
//   kPerTensor   one scale/zero for the whole tensor (stored repeated on every row)
constexpr int64_t kPerChannel = -1;
constexpr int64_t kPerTensor = 0;
static_assert(kPerChannel == kGridPerChannel, "a per-channel grid has the same group_size in both");

struct WeightQuantSpec {
  int bits = 4;                // 2..8
  int64_t group_size = 128;
  bool sym = true;             // signed grid stored with zero 2^(bits-1) (GPTQ-compatible)
  bool mse = false;            // shrink each group's range to minimise sum |Q(x) - x|^2.4 (80 trial grids: ~100x RTN)
};

// The grid of a spec (core/weight_grid.h: its name, storage) and back.
inline WeightGrid grid_of(const WeightQuantSpec& s) { return {s.bits, s.group_size, s.sym}; }
inline WeightQuantSpec spec_of(const WeightGrid& g, bool mse = false) { return {g.bits, g.group_size, g.sym, mse}; }

// Codes and grids of one quantized weight. Dequantize: w[r, i] = scales[r, g] * (q[r, i] - zeros[r, g]),
// g = g_idx[i]. G = number of groups (1 per-channel and per-tensor).
struct QuantizedWeight {
  at::Tensor q;       // [out, in] uint8, codes in [0, 2^bits - 1]
  at::Tensor scales;  // [out, G] fp32, never 0 or NaN
  at::Tensor zeros;   // [out, G] int32, in [0, 2^bits - 1] (2^bits can come back from a v1 GPTQ file); 2^(bits-1) sym
  at::Tensor g_idx;   // [in] int32, group of input column i (i / g, or permuted by GPTQ act-order)
  WeightQuantSpec spec;
};

// Per-row grids of a [R, n] matrix (one unit per row), as tensors [R] fp32.
struct GridTensors {
  at::Tensor scale, inv_scale, zero;
};

using grid_math::max_code;

// Throws unless bits is 2..8 and group_size fits `in` (names the tensor).
void check_spec(const WeightQuantSpec& spec, int64_t in, std::string_view name);
// Input columns per group: g, or `in` for per-channel and per-tensor.
int64_t group_width(const WeightQuantSpec& spec, int64_t in);
// Groups per row: in / g, or 1 for per-channel and per-tensor.
int64_t group_count(const WeightQuantSpec& spec, int64_t in);
// Throws naming the tensor and the first NaN/Inf element.
void check_finite(const at::Tensor& t, std::string_view name);
// W as contiguous fp32 [out, in], after checking its shape, dtype, values and the spec against it.
at::Tensor checked_weight(const at::Tensor& w, const WeightQuantSpec& spec, std::string_view name);

// Grid of a range [mn, mx] with mn <= 0 <= mx (find_grid_ref extends the data's range to contain 0):
// asymmetric scale = (mx - mn) / (2^b - 1), zero = round(-mn / scale);
// symmetric scale = max(-mn, mx) / (2^(b-1) - 1), zero = 2^(b-1).
// The scale quotient is taken in double (no overflow for huge ranges), then made an fp16 value (checkpoints
// store fp16 scales): rounded to nearest in fp16's normal range [2^-14, 65504], rounded up to a multiple of 2^-24
// below it (no code clips); a scale of 0 or below FLT_MIN (whose inverse overflows) becomes 1, so all-zero and
// subnormal-only groups quantize to exact zeros.
GridParams grid_from_range_ref(float mn, float mx, int bits, bool sym);
// Grid of n values x[0], x[stride], ...; with mse, the clip search of ALGORITHMS.md (first minimum wins).
GridParams find_grid_ref(const float* x, int64_t n, int64_t stride, int bits, bool sym, bool mse);
// clamp(round_half_even(x * inv_scale) + zero, 0, 2^b - 1)
inline int quantize_code_ref(float x, const GridParams& p, int bits) { return grid_math::quantize_code(x, p, bits); }
inline float dequantize_code_ref(int q, const GridParams& p) { return grid_math::dequantize_code(q, p); }

// Tensor twins of the above, bit-identical to them: grids [R] of x [R, n] (fp32, any strides), one unit per
// row; codes and dequantized values of x [R, n] under grids [R], or of one column x [R] (GPTQ's sweep).
GridTensors find_grid(const at::Tensor& x, int bits, bool sym, bool mse);
at::Tensor quantize_codes(const at::Tensor& x, const GridTensors& g, int bits);  // fp32, integer valued
at::Tensor dequantize_codes(const at::Tensor& codes, const GridTensors& g);

// RTN of W [out, in] (any float dtype; computed in fp32). Throws naming `name` for NaN/Inf or a bad spec.
QuantizedWeight quantize_weight(const at::Tensor& w, const WeightQuantSpec& spec, std::string_view name = "weight");
// W_hat [out, in] fp32.
at::Tensor dequantize(const QuantizedWeight& qw);

// Scalar twins: plain loops over floats, bit-identical to the above (tests compare them).
QuantizedWeight quantize_weight_ref(const at::Tensor& w, const WeightQuantSpec& spec,
                                    std::string_view name = "weight");
at::Tensor dequantize_ref(const QuantizedWeight& qw);

}  // namespace ptq
