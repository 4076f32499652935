#include "quant/quantizer.h"

#include <cfloat>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/half.h"
#include "io/safetensors.h"

namespace ptq {

namespace {

using grid_math::kFp16Max;
using grid_math::kFp16MinNormal;
using grid_math::kFp16Subnormal;
using grid_math::kFp16SubnormalSteps;
using grid_math::kMseNorm;
using grid_math::kMseSteps;
using grid_math::mse_shrink;
using grid_math::sym_levels;
using grid_math::sym_zero;

// Rows of a [R, n] grid tensor broadcast against x: [R, 1] for matrices, [R] for a column of R values.
at::Tensor per_row(const at::Tensor& t, const at::Tensor& x) { return x.dim() == 1 ? t : t.unsqueeze(1); }

// Tensor twin of grid_from_range_ref; true divisions by full tensors (never by a scalar, which ATen may
// turn into a multiplication by the reciprocal) keep it bit-identical to the scalar version.
GridTensors grid_from_range(const at::Tensor& mn, const at::Tensor& mx, int bits, bool sym) {
  at::Tensor num = sym ? at::maximum(-mn, mx).to(at::kDouble) : mx.to(at::kDouble) - mn.to(at::kDouble);
  at::Tensor den = at::full_like(num, static_cast<double>(sym ? sym_levels(bits) : max_code(bits)));
  GridTensors g;
  g.scale = (num / den).to(at::kFloat);
  g.scale.masked_fill_(g.scale < FLT_MIN, 1.0);
  const at::Tensor normal = (g.scale >= kFp16MinNormal) & (g.scale <= kFp16Max);
  const at::Tensor subnormal = g.scale < kFp16MinNormal;
  g.scale = at::where(normal, g.scale.to(at::kHalf).to(at::kFloat),
                      at::where(subnormal, at::ceil(g.scale * kFp16SubnormalSteps) * kFp16Subnormal, g.scale));
  g.inv_scale = at::ones_like(g.scale) / g.scale;
  g.zero = sym ? at::full_like(g.scale, sym_zero(bits)) : at::round(-mn / g.scale);
  return g;
}

// Multi-index of a flat row-major position, e.g. "[3, 17]".
std::string index_string(int64_t flat, at::IntArrayRef sizes) {
  std::vector<int64_t> idx(sizes.size());
  for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
    idx[d] = flat % sizes[d];
    flat /= sizes[d];
  }
  return shape_str(idx);
}

at::Tensor default_g_idx(const WeightQuantSpec& spec, int64_t in) {
  return at::div(at::arange(in, at::kInt), group_width(spec, in), "floor").to(at::kInt);
}

}  // namespace

at::Tensor checked_weight(const at::Tensor& w, const WeightQuantSpec& spec, std::string_view name) {
  if (w.dim() != 2 || w.size(0) == 0 || w.size(1) == 0)
    fail_input("{}: expected a non-empty weight matrix [out, in], found shape {}", name, shape_str(w.sizes().vec()));
  if (!w.is_floating_point())
    fail_input("{}: expected a floating-point weight, found {}", name, c10::toString(w.scalar_type()));
  check_spec(spec, w.size(1), name);
  at::Tensor x = w.to(at::kFloat).contiguous();
  check_finite(x, name);
  return x;
}

void check_spec(const WeightQuantSpec& spec, int64_t in, std::string_view name) {
  if (spec.bits < 2 || spec.bits > 8) fail_input("{}: {} bits requested; expected 2 to 8", name, spec.bits);
  const int64_t g = spec.group_size;
  if (g < kPerChannel || (g > 0 && in % g != 0))
    fail_input("{}: group size {} does not fit in_features {}; expected a divisor of {}, -1 (per output channel) "
               "or 0 (per tensor)", name, g, in, in);
}

int64_t group_width(const WeightQuantSpec& spec, int64_t in) { return spec.group_size > 0 ? spec.group_size : in; }

int64_t group_count(const WeightQuantSpec& spec, int64_t in) { return in / group_width(spec, in); }

void check_finite(const at::Tensor& t, std::string_view name) {
  const at::Tensor bad = ~at::isfinite(t);
  if (!bad.any().item<bool>()) return;
  const int64_t flat = at::nonzero(bad.reshape(-1))[0][0].item<int64_t>();
  const double v = t.reshape(-1)[flat].item<double>();
  fail_input("{}: element {} is {}; expected finite values", name, index_string(flat, t.sizes()), v);
}

GridParams grid_from_range_ref(float mn, float mx, int bits, bool sym) {
  return grid_math::grid_from_range(mn, mx, bits, sym);
}

GridParams find_grid_ref(const float* x, int64_t n, int64_t stride, int bits, bool sym, bool mse) {
  return grid_math::find_grid([&](int64_t k) { return x[k * stride]; }, n, bits, sym, mse);
}

GridTensors find_grid(const at::Tensor& x, int bits, bool sym, bool mse) {
  const at::Tensor mn = x.amin(1).clamp_max(0), mx = x.amax(1).clamp_min(0);
  GridTensors best = grid_from_range(mn, mx, bits, sym);
  if (!mse) return best;
  at::Tensor best_err = at::full({x.size(0)}, std::numeric_limits<double>::infinity(), x.options().dtype(at::kDouble));
  for (int i = 0; i < kMseSteps; ++i) {
    const float p = mse_shrink(i);
    const GridTensors g = grid_from_range(mn * p, mx * p, bits, sym);
    const at::Tensor d = dequantize_codes(quantize_codes(x, g, bits), g) - x;
    const at::Tensor err = d.to(at::kDouble).abs_().pow_(kMseNorm).sum(1);
    const at::Tensor better = err < best_err;
    best_err = at::where(better, err, best_err);
    best.scale = at::where(better, g.scale, best.scale);
    best.inv_scale = at::where(better, g.inv_scale, best.inv_scale);
    best.zero = at::where(better, g.zero, best.zero);
  }
  return best;
}

at::Tensor quantize_codes(const at::Tensor& x, const GridTensors& g, int bits) {
  return at::clamp(at::round(x * per_row(g.inv_scale, x)) + per_row(g.zero, x), 0, max_code(bits));
}

at::Tensor dequantize_codes(const at::Tensor& codes, const GridTensors& g) {
  return (codes - per_row(g.zero, codes)) * per_row(g.scale, codes);
}

QuantizedWeight quantize_weight(const at::Tensor& w, const WeightQuantSpec& spec, std::string_view name) {
  const at::Tensor x = checked_weight(w, spec, name);
  const int64_t out = x.size(0), in = x.size(1), groups = group_count(spec, in);
  // One unit per row of `units`: the whole tensor, or each (row, group) of g consecutive columns.
  const at::Tensor units = spec.group_size == kPerTensor ? x.reshape({1, -1}) : x.reshape({out * groups, -1});
  const GridTensors g = find_grid(units, spec.bits, spec.sym, spec.mse);
  QuantizedWeight qw;
  qw.spec = spec;
  qw.q = quantize_codes(units, g, spec.bits).to(at::kByte).reshape({out, in});
  qw.scales = g.scale.expand({out * groups}).reshape({out, groups}).contiguous();
  qw.zeros = g.zero.expand({out * groups}).reshape({out, groups}).to(at::kInt);
  qw.g_idx = default_g_idx(spec, in);
  return qw;
}

at::Tensor dequantize(const QuantizedWeight& qw) {
  const at::Tensor gi = qw.g_idx.to(at::kLong);
  const at::Tensor scale = qw.scales.index_select(1, gi), zero = qw.zeros.index_select(1, gi).to(at::kFloat);
  return (qw.q.to(at::kFloat) - zero) * scale;
}

QuantizedWeight quantize_weight_ref(const at::Tensor& w, const WeightQuantSpec& spec, std::string_view name) {
  const at::Tensor x = checked_weight(w, spec, name);
  const int64_t out = x.size(0), in = x.size(1), groups = group_count(spec, in), width = group_width(spec, in);
  QuantizedWeight qw;
  qw.spec = spec;
  qw.q = at::empty({out, in}, at::kByte);
  qw.scales = at::empty({out, groups}, at::kFloat);
  qw.zeros = at::empty({out, groups}, at::kInt);
  qw.g_idx = at::empty({in}, at::kInt);
  const float* px = x.data_ptr<float>();
  uint8_t* pq = qw.q.data_ptr<uint8_t>();
  float* ps = qw.scales.data_ptr<float>();
  int32_t* pz = qw.zeros.data_ptr<int32_t>();
  const GridParams whole =
      spec.group_size == kPerTensor ? find_grid_ref(px, out * in, 1, spec.bits, spec.sym, spec.mse) : GridParams{};
  for (int64_t r = 0; r < out; ++r)
    for (int64_t gi = 0; gi < groups; ++gi) {
      const float* unit = px + r * in + gi * width;
      const GridParams g =
          spec.group_size == kPerTensor ? whole : find_grid_ref(unit, width, 1, spec.bits, spec.sym, spec.mse);
      ps[r * groups + gi] = g.scale;
      pz[r * groups + gi] = static_cast<int32_t>(g.zero);
      for (int64_t k = 0; k < width; ++k)
        pq[r * in + gi * width + k] = static_cast<uint8_t>(quantize_code_ref(unit[k], g, spec.bits));
    }
  int32_t* pg = qw.g_idx.data_ptr<int32_t>();
  for (int64_t i = 0; i < in; ++i) pg[i] = static_cast<int32_t>(i / width);
  return qw;
}

at::Tensor dequantize_ref(const QuantizedWeight& qw) {
  const at::Tensor q = qw.q.contiguous(), s = qw.scales.contiguous(), z = qw.zeros.contiguous(),
                   gi = qw.g_idx.contiguous();
  const int64_t out = q.size(0), in = q.size(1), groups = s.size(1);
  at::Tensor w = at::empty({out, in}, at::kFloat);
  const uint8_t* pq = q.data_ptr<uint8_t>();
  const float* ps = s.data_ptr<float>();
  const int32_t* pz = z.data_ptr<int32_t>();
  const int32_t* pg = gi.data_ptr<int32_t>();
  float* pw = w.data_ptr<float>();
  for (int64_t r = 0; r < out; ++r)
    for (int64_t i = 0; i < in; ++i) {
      const int64_t g = r * groups + pg[i];
      pw[r * in + i] = ps[g] * (static_cast<float>(pq[r * in + i]) - static_cast<float>(pz[g]));
    }
  return w;
}

}  // namespace ptq
