#include "quant/rtn_packed.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <immintrin.h>

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

// find_grid_ref's range (it always contains 0) and grid_from_range_ref. The values are finite (checked first), so the
// vector min/max (a < b ? a : b per lane, any lane order) give std::min/std::max's result: starting from +0, a -0 never
// replaces it in either.
[[gnu::target("avx2")]] void range_avx2(const float* x, int64_t n8, float& mn, float& mx) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  for (int64_t k = 0; k < n8; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    lo = _mm256_min_ps(v, lo);
    hi = _mm256_max_ps(v, hi);
  }
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, lo);
  _mm256_store_ps(h, hi);
  for (int i = 0; i < 8; ++i) {
    mn = std::min(mn, l[i]);
    mx = std::max(mx, h[i]);
  }
}

GridParams group_grid(const float* x, int64_t n, int bits, bool sym) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  float mn = 0, mx = 0;
  const int64_t n8 = avx2 ? n / 8 * 8 : 0;
  if (n8 > 0) range_avx2(x, n8, mn, mx);
  for (int64_t k = n8; k < n; ++k) {
    mn = std::min(mn, x[k]);
    mx = std::max(mx, x[k]);
  }
  return grid_from_range_ref(mn, mx, bits, sym);
}

// Whether n floats are all finite: an exponent of all ones is Inf or NaN (integer ops, which vectorize).
[[gnu::target_clones("avx2", "default")]] bool all_finite(const float* x, int64_t n) {
  uint32_t bad = 0;
  for (int64_t k = 0; k < n; ++k) {
    uint32_t b;
    std::memcpy(&b, x + k, sizeof b);
    bad |= static_cast<uint32_t>((b & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

// n codes (integer-valued floats) of `bits` dividing 32 into whole words, LSB first: the StreamPacker layout when the
// stream is at a word boundary and n * bits is a multiple of 32.
void pack_whole_words(const float* q, int64_t n, int bits, int32_t* out) {
  const int per_word = 32 / bits;
  for (int64_t w = 0; w < n / per_word; ++w) {
    uint32_t word = 0;
    for (int j = 0; j < per_word; ++j) word |= static_cast<uint32_t>(q[w * per_word + j]) << (j * bits);
    out[w] = static_cast<int32_t>(word);
  }
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

// The row's distortion sums are kept in 8 interleaved lanes (element k of a group adds to lane k % 8), reduced in lane
// order at the end of each group: fixed, so the figures depend on neither the compiler, the thread count nor the
// instruction set.
constexpr int kLanes = 8;
struct ErrorLanes {
  double signal[kLanes] = {}, noise[kLanes] = {}, max_err[kLanes] = {};
  int64_t flips = 0, nonzero = 0, zeroed = 0;
};

// Elements [k0, n) of a group, one at a time into their lanes (the scalar reference and the vector tail).
void accumulate_error_scalar(const float* x, const float* q, int64_t k0, int64_t n, const GridParams& p,
                             ErrorLanes& e) {
  for (int64_t k = k0; k < n; ++k) {
    const int l = static_cast<int>(k % kLanes);
    const float v = x[k];
    const float y = p.scale * (q[k] - p.zero);  // dequantize_code_ref
    const double d = static_cast<double>(y) - static_cast<double>(v);
    e.signal[l] += static_cast<double>(v) * static_cast<double>(v);
    e.noise[l] += d * d;
    e.max_err[l] = std::max(e.max_err[l], std::fabs(d));
    e.flips += (v > 0 && y < 0) || (v < 0 && y > 0);
    e.nonzero += v != 0;
    e.zeroed += v != 0 && y == 0;
  }
}

// The same operations on 8 elements at a time (lanes 0-3 and 4-7 in two double vectors; no fused multiply-add, the
// file has -ffp-contract=off): the sums are bit-identical to accumulate_error_scalar's (the distortion tests compare
// rtn_pack with the tensor path on AVX2 machines, the scalar one runs where AVX2 is missing).
[[gnu::target("avx2")]] int64_t accumulate_error_avx2(const float* x, const float* q, int64_t n, const GridParams& p,
                                                      ErrorLanes& e) {
  const int64_t n8 = n / kLanes * kLanes;
  if (n8 == 0) return 0;
  __m256d sig[2] = {_mm256_loadu_pd(e.signal), _mm256_loadu_pd(e.signal + 4)};
  __m256d noi[2] = {_mm256_loadu_pd(e.noise), _mm256_loadu_pd(e.noise + 4)};
  __m256d mx[2] = {_mm256_loadu_pd(e.max_err), _mm256_loadu_pd(e.max_err + 4)};
  const __m256 scale = _mm256_set1_ps(p.scale), zero = _mm256_set1_ps(p.zero), fzero = _mm256_setzero_ps();
  const __m256d sign = _mm256_set1_pd(-0.0);
  int64_t flips = 0, nonzero = 0, zeroed = 0;
  for (int64_t k = 0; k < n8; k += kLanes) {
    const __m256 v = _mm256_loadu_ps(x + k);
    const __m256 y = _mm256_mul_ps(scale, _mm256_sub_ps(_mm256_loadu_ps(q + k), zero));
    for (int h = 0; h < 2; ++h) {
      const __m256d vd = _mm256_cvtps_pd(h == 0 ? _mm256_castps256_ps128(v) : _mm256_extractf128_ps(v, 1));
      const __m256d yd = _mm256_cvtps_pd(h == 0 ? _mm256_castps256_ps128(y) : _mm256_extractf128_ps(y, 1));
      const __m256d d = _mm256_sub_pd(yd, vd);
      sig[h] = _mm256_add_pd(sig[h], _mm256_mul_pd(vd, vd));
      noi[h] = _mm256_add_pd(noi[h], _mm256_mul_pd(d, d));
      mx[h] = _mm256_max_pd(_mm256_andnot_pd(sign, d), mx[h]);  // std::max(m, |d|): m unless m < |d|
    }
    const __m256 vpos = _mm256_cmp_ps(v, fzero, _CMP_GT_OQ), vneg = _mm256_cmp_ps(v, fzero, _CMP_LT_OQ);
    const __m256 ypos = _mm256_cmp_ps(y, fzero, _CMP_GT_OQ), yneg = _mm256_cmp_ps(y, fzero, _CMP_LT_OQ);
    const __m256 vnz = _mm256_cmp_ps(v, fzero, _CMP_NEQ_OQ), yz = _mm256_cmp_ps(y, fzero, _CMP_EQ_OQ);
    flips += __builtin_popcount(static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_or_ps(_mm256_and_ps(vpos, yneg), _mm256_and_ps(vneg, ypos)))));
    nonzero += __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(vnz)));
    zeroed += __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(_mm256_and_ps(vnz, yz))));
  }
  for (int h = 0; h < 2; ++h) {
    _mm256_storeu_pd(e.signal + 4 * h, sig[h]);
    _mm256_storeu_pd(e.noise + 4 * h, noi[h]);
    _mm256_storeu_pd(e.max_err + 4 * h, mx[h]);
  }
  e.flips += flips;
  e.nonzero += nonzero;
  e.zeroed += zeroed;
  return n8;
}

// Adds the group's terms to the row's distortion sums.
void accumulate_error(const float* x, const float* q, int64_t n, const GridParams& p, RowResult& rr) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  ErrorLanes e;
  const int64_t done = avx2 ? accumulate_error_avx2(x, q, n, p, e) : 0;
  accumulate_error_scalar(x, q, done, n, p, e);
  for (int l = 0; l < kLanes; ++l) {
    rr.signal += e.signal[l];
    rr.noise += e.noise[l];
    rr.max_abs_error = std::max(rr.max_abs_error, e.max_err[l]);
  }
  rr.sign_flips += e.flips;
  rr.nonzero += e.nonzero;
  rr.zeroed += e.zeroed;
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
  // 2/4/8-bit codes in groups that fill whole words are packed word by word (every group starts on a word).
  const bool whole_words = 32 % bits == 0 && (width * bits) % 32 == 0;

#pragma omp parallel
  {
    std::vector<float> x(static_cast<size_t>(in));
    std::vector<float> q(static_cast<size_t>(width));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < out; ++r) {
      RowResult& rr = rows[static_cast<size_t>(r)];
      view_row_f32(w, r, x.data());
      if (!all_finite(x.data(), in)) {
        for (int64_t k = 0; k < in && rr.bad_column < 0; ++k)
          if (!std::isfinite(x[k])) {
            rr.bad_column = k;
            rr.bad_value = x[k];
          }
        continue;
      }
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
        if (whole_words)
          pack_whole_words(q.data(), width, bits, qrow + g * width * bits / 32);
        else
          for (int64_t k = 0; k < width; ++k) codes.put(static_cast<uint32_t>(q[k]));
        accumulate_error(xg, q.data(), width, p, rr);
      }
      if (!whole_words) codes.finish(qrow + row_words);
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
