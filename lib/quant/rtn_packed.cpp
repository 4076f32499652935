#include "quant/rtn_packed.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/half.h"

namespace ptq {

namespace {

constexpr float kFp16Max = 65504.0f;

// Appends b-bit codes to an int32 word stream, LSB first (the pack_bits layout of quant/formats.h).
class StreamPacker {
 public:
  StreamPacker(int32_t* out, int bits) : out_(out), bits_(bits) {}
  void put(uint32_t code) {
    acc_ |= static_cast<uint64_t>(code) << filled_;
    filled_ += bits_;
    if (filled_ >= 32) {
      *out_++ = static_cast<int32_t>(static_cast<uint32_t>(acc_));
      acc_ >>= 32;
      filled_ -= 32;
    }
  }
  // Pads with zero codes up to `end` (the row's words: a multiple of 32 codes).
  void finish(const int32_t* end) {
    while (out_ < end) {
      *out_++ = static_cast<int32_t>(static_cast<uint32_t>(acc_));
      acc_ >>= 32;
    }
  }

 private:
  int32_t* out_;
  int bits_;
  uint64_t acc_ = 0;
  int filled_ = 0;
};

// What one row contributes to the distortion figures, and the first problem found in it.
struct RowResult {
  double signal = 0, noise = 0, max_abs_error = 0;
  int64_t sign_flips = 0, nonzero = 0, zeroed = 0;
  int64_t bad_column = -1;  // first NaN/Inf
  float bad_value = 0;
  float bad_scale = 0;      // a scale beyond fp16 (0: none)
};

// find_grid_ref's range (it always contains 0) and grid_from_range_ref.
GridParams group_grid(const float* x, int64_t n, int bits, bool sym) {
  float mn = 0, mx = 0;
  for (int64_t k = 0; k < n; ++k) {
    mn = std::min(mn, x[k]);
    mx = std::max(mx, x[k]);
  }
  return grid_from_range_ref(mn, mx, bits, sym);
}

// quantize_code_ref of n values, as floats (integer valued). round_half_even(v) is (v + 1.5 * 2^23) - 1.5 * 2^23
// for |v| < 2^22 in round-to-nearest float arithmetic (the sum's ulp is 1), which vectorizes where nearbyint (a
// libm call below SSE4.1) does not; |x * inv_scale| never exceeds the grid's levels (< 2^8) by more than the fp16
// rounding of the scale (2^-11 relative), or x is 0 (scale 1 of an all-zero group).
constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23
// The hot loops are also compiled for AVX2 (the loader picks the clone); the file has -ffp-contract=off, so no clone
// fuses a multiply-add and every clone computes the same floats.
[[gnu::target_clones("avx2", "default")]] void quantize_group(const float* x, int64_t n, const GridParams& p, int bits, float* q) {
  const float top = static_cast<float>(max_code(bits));
  for (int64_t k = 0; k < n; ++k) {
    const float v = (x[k] * p.inv_scale + kRoundMagic) - kRoundMagic + p.zero;
    q[k] = v <= 0 ? 0.0f : v >= top ? top : v;
  }
}

// Adds the group's terms to the row's distortion sums: 8 interleaved lanes (fixed, so the figures do not depend on
// the compiler or thread count) that the compiler can keep in vector registers.
[[gnu::target_clones("avx2", "default")]] void accumulate_error(const float* x, const float* q, int64_t n, const GridParams& p, RowResult& rr) {
  constexpr int kLanes = 8;
  double signal[kLanes] = {}, noise[kLanes] = {}, max_err[kLanes] = {};
  int64_t flips = 0, nonzero = 0, zeroed = 0;
  for (int64_t k0 = 0; k0 < n; k0 += kLanes) {
    const int m = static_cast<int>(std::min<int64_t>(kLanes, n - k0));
    for (int l = 0; l < m; ++l) {
      const float v = x[k0 + l];
      const float y = p.scale * (q[k0 + l] - p.zero);  // dequantize_code_ref
      const double d = static_cast<double>(y) - static_cast<double>(v);
      signal[l] += static_cast<double>(v) * static_cast<double>(v);
      noise[l] += d * d;
      max_err[l] = std::max(max_err[l], std::fabs(d));
      flips += (v > 0 && y < 0) || (v < 0 && y > 0);
      nonzero += v != 0;
      zeroed += v != 0 && y == 0;
    }
  }
  for (int l = 0; l < kLanes; ++l) {
    rr.signal += signal[l];
    rr.noise += noise[l];
    rr.max_abs_error = std::max(rr.max_abs_error, max_err[l]);
  }
  rr.sign_flips += flips;
  rr.nonzero += nonzero;
  rr.zeroed += zeroed;
}

}  // namespace

bool rtn_pack_supports(const TensorView& w, const WeightQuantSpec& spec) {
  return is_float_matrix(w) && !spec.mse &&
         (spec.group_size == kPerChannel || (spec.group_size > 0 && w.shape()[1] % spec.group_size == 0));
}

RtnPacked rtn_pack(const TensorView& w, const WeightQuantSpec& spec, std::string_view name) {
  if (!rtn_pack_supports(w, spec))
    fail_input("{}: the packed RTN path takes F32/F16/BF16 [out, in] weights with per-channel or dividing groups and "
               "no MSE search; found {} {}", name, dtype_name(w.dtype()), shape_str(w.shape()));
  const int64_t out = w.shape()[0], in = w.shape()[1];
  check_spec(spec, in, name);
  const int bits = spec.bits;
  const int64_t width = group_width(spec, in), groups = group_count(spec, in);
  const int64_t row_words = packed_row_words(in, bits), zero_words = packed_row_words(groups, bits);
  RtnPacked res;
  PackedModuleTensors& t = res.tensors;
  t.out = out;
  t.in = in;
  t.qweight.resize(static_cast<size_t>(out * row_words));
  t.scales.resize(static_cast<size_t>(out * groups));
  if (!spec.sym) t.qzeros.resize(static_cast<size_t>(out * zero_words));
  std::vector<RowResult> rows(static_cast<size_t>(out));

#pragma omp parallel
  {
    std::vector<float> x(static_cast<size_t>(in));
    std::vector<float> q(static_cast<size_t>(width));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < out; ++r) {
      RowResult& rr = rows[static_cast<size_t>(r)];
      view_row_f32(w, r, x.data());
      for (int64_t k = 0; k < in && rr.bad_column < 0; ++k)
        if (!std::isfinite(x[k])) {
          rr.bad_column = k;
          rr.bad_value = x[k];
        }
      if (rr.bad_column >= 0) continue;
      int32_t* qrow = t.qweight.data() + r * row_words;
      StreamPacker codes(qrow, bits);
      int32_t* zrow = spec.sym ? nullptr : t.qzeros.data() + r * zero_words;
      StreamPacker zeros(zrow, bits);
      for (int64_t g = 0; g < groups; ++g) {
        const float* xg = x.data() + g * width;
        const GridParams p = group_grid(xg, width, bits, spec.sym);
        if (p.scale > kFp16Max && rr.bad_scale == 0) rr.bad_scale = p.scale;
        t.scales[static_cast<size_t>(r * groups + g)] = f32_to_fp16(p.scale);
        if (zrow) zeros.put(static_cast<uint32_t>(p.zero));
        quantize_group(xg, width, p, bits, q.data());
        for (int64_t k = 0; k < width; ++k) codes.put(static_cast<uint32_t>(q[k]));
        accumulate_error(xg, q.data(), width, p, rr);
      }
      codes.finish(qrow + row_words);
      if (zrow) zeros.finish(zrow + zero_words);
    }
  }

  double signal = 0, noise = 0, max_abs_error = 0;
  int64_t flips = 0, nonzero = 0, zeroed = 0;
  for (int64_t r = 0; r < out; ++r) {
    const RowResult& rr = rows[static_cast<size_t>(r)];
    if (rr.bad_column >= 0)
      fail_input("{}: element [{}, {}] is {}; expected finite values", name, r, rr.bad_column,
                 static_cast<double>(rr.bad_value));
    if (rr.bad_scale != 0)
      fail_input("module \"{}\": a scale of {} does not fit fp16; the checkpoint stores fp16 scales", name,
                 static_cast<double>(rr.bad_scale));
    signal += rr.signal;
    noise += rr.noise;
    max_abs_error = std::max(max_abs_error, rr.max_abs_error);
    flips += rr.sign_flips;
    nonzero += rr.nonzero;
    zeroed += rr.zeroed;
  }
  res.error = distortion_from_sums(signal, noise, max_abs_error, flips, nonzero, zeroed);
  return res;
}

}  // namespace ptq
