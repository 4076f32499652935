// lib/quant/quantizer: hand-computed grids and codes, fast vs scalar twin on odd shapes, corner cases.
#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <stdexcept>
#include <vector>

#include <ATen/ATen.h>

#include "core/half.h"
#include "quant/quantizer.h"

using namespace ptq;

namespace {

// Scales in fp16's normal range are rounded to fp16 (checkpoints store them so); core/half.h's conversion
// is tested independently against published encodings.
float fp16(double x) { return fp16_to_f32(f32_to_fp16(static_cast<float>(x))); }

at::Tensor row(std::vector<float> v) { return at::tensor(v, at::kFloat).reshape({1, -1}); }

std::vector<int> codes_of(const QuantizedWeight& qw) {
  const at::Tensor q = qw.q.to(at::kInt).contiguous();
  return std::vector<int>(q.data_ptr<int32_t>(), q.data_ptr<int32_t>() + q.numel());
}

std::vector<float> values_of(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// Fast and scalar paths must agree bit for bit: both take the same IEEE operations in the same order
// (x * inv_scale, round half even, + zero, clamp; scale quotient in double), so the tolerance is zero.
void check_same(const QuantizedWeight& a, const QuantizedWeight& b) {
  CHECK(a.q.dtype() == at::kByte);
  CHECK(a.q.equal(b.q));
  CHECK(a.scales.equal(b.scales));
  CHECK(a.zeros.equal(b.zeros));
  CHECK(a.g_idx.equal(b.g_idx));
  CHECK(dequantize(a).equal(dequantize_ref(b)));
  CHECK(at::isfinite(a.scales).all().item<bool>());
  CHECK((a.scales > 0).all().item<bool>());
}

}  // namespace

TEST_CASE("asymmetric 4-bit group, computed by hand", "[quant]") {
  // mn = -1.25, mx = 6.25: scale = 7.5 / 15 = 0.5, zero = round(1.25 / 0.5) = round(2.5) = 2 (half to even).
  // q = round(2x) + 2: round(-2.5) = -2 -> 0, round(0.6) = 1 -> 3, round(1.5) = 2 -> 4, round(12.5) = 12 -> 14.
  const WeightQuantSpec spec{4, kPerChannel, false, false};
  for (auto* f : {&quantize_weight, &quantize_weight_ref}) {
    const QuantizedWeight qw = f(row({-1.25f, 0.3f, 0.75f, 6.25f}), spec, "w");
    CHECK(qw.scales.item<float>() == 0.5f);
    CHECK(qw.zeros.item<int32_t>() == 2);
    CHECK(codes_of(qw) == std::vector<int>{0, 3, 4, 14});
    CHECK(values_of(dequantize(qw)) == std::vector<float>{-1.0f, 0.5f, 1.0f, 6.0f});
  }
}

TEST_CASE("asymmetric range is extended to contain 0", "[quant]") {
  // All positive: mn becomes 0, so scale = 7.5 / 15 = 0.5 and zero = 0.
  const QuantizedWeight qw = quantize_weight(row({1.0f, 2.0f, 3.0f, 7.5f}), {4, kPerChannel, false, false});
  CHECK(qw.scales.item<float>() == 0.5f);
  CHECK(qw.zeros.item<int32_t>() == 0);
  CHECK(codes_of(qw) == std::vector<int>{2, 4, 6, 15});
}

TEST_CASE("symmetric 4-bit group rounds half to even, computed by hand", "[quant]") {
  // absmax = 7: scale = 7 / (2^3 - 1) = 1; signed codes round(x) = -7, 0, 2, 2, -0, 6 (ties to even),
  // stored + 8.
  const WeightQuantSpec spec{4, kPerChannel, true, false};
  for (auto* f : {&quantize_weight, &quantize_weight_ref}) {
    const QuantizedWeight qw = f(row({-7.0f, 0.5f, 1.5f, 2.5f, -0.5f, 6.5f}), spec, "w");
    CHECK(qw.scales.item<float>() == 1.0f);
    CHECK(qw.zeros.item<int32_t>() == 8);
    CHECK(codes_of(qw) == std::vector<int>{1, 8, 10, 10, 8, 14});
    CHECK(values_of(dequantize(qw)) == std::vector<float>{-7, 0, 2, 2, 0, 6});
  }
}

TEST_CASE("symmetric grid: 8-bit and 2-bit scales", "[quant]") {
  // 8 bit: scale = fp16(2.54 / 127) = fp16(0.02); 2 bit: 2^(2-1) - 1 = 1 level, scale = absmax, codes -2..1.
  CHECK(quantize_weight(row({-2.54f, 1.0f}), {8, kPerChannel, true, false}).scales.item<float>() ==
        fp16(2.54f / 127.0));
  CHECK(fp16(2.54f / 127.0) != static_cast<float>(2.54f / 127.0));  // the rounding is visible here
  const QuantizedWeight q2 = quantize_weight(row({-3.0f, -1.0f, 1.0f, 3.0f}), {2, kPerChannel, true, false});
  CHECK(q2.scales.item<float>() == 3.0f);
  CHECK(q2.zeros.item<int32_t>() == 2);
  CHECK(codes_of(q2) == std::vector<int>{1, 2, 2, 3});  // round(-1), round(-1/3), round(1/3), round(1), + 2
}

TEST_CASE("scales are fp16 values up to fp16's maximum and fp32 above it", "[quant]") {
  const QuantizedWeight normal = quantize_weight(row({-0.123456f, 0.1f, 0.05f, 0.0f}), {4, kPerChannel, true, false});
  CHECK(normal.scales.item<float>() == fp16(0.123456f / 7.0));
  // absmax 1e6: scale 1e6 / 7 exceeds fp16's 65504 and stays the fp32 quotient.
  const QuantizedWeight huge = quantize_weight(row({1e6f, 1.0f, 0.0f, -2.0f}), {4, kPerChannel, true, false});
  CHECK(huge.scales.item<float>() == static_cast<float>(1e6 / 7.0));
  // absmax 1e-6: 1e-6 / 7 = 2.397 * 2^-24 is below fp16's smallest normal 2^-14; it is rounded up to the fp16
  // subnormal 3 * 2^-24 (what a checkpoint stores), and the code of 1e-6 is round(5.59) = 6 <= 7: nothing clips.
  const QuantizedWeight tiny = quantize_weight(row({1e-6f, 0.0f, 0.0f, 0.0f}), {4, kPerChannel, true, false});
  CHECK(tiny.scales.item<float>() == std::ldexp(3.0f, -24));
  CHECK(fp16(tiny.scales.item<float>()) == tiny.scales.item<float>());
  CHECK(codes_of(tiny) == std::vector<int>{8 + 6, 8, 8, 8});
  check_same(tiny, quantize_weight_ref(row({1e-6f, 0.0f, 0.0f, 0.0f}), {4, kPerChannel, true, false}));
  // 8 bits over a group of small weights (absmax 3e-3: scale 2.36e-5, subnormal in fp16): the rounded-up scale
  // keeps every code inside the grid, so the error is at most half a step.
  const at::Tensor small = row({3e-3f, -2.9e-3f, 1e-3f, -1e-4f});
  const QuantizedWeight q8 = quantize_weight(small, {8, kPerChannel, true, false});
  check_same(q8, quantize_weight_ref(small, {8, kPerChannel, true, false}));
  const float step = q8.scales.item<float>();
  CHECK(fp16(step) == step);
  CHECK(step >= 3e-3f / 127);
  CHECK((dequantize(q8) - small).abs().max().item<float>() <= 0.5f * step);
}

TEST_CASE("codes clamp to the grid", "[quant]") {
  const GridParams g{1, 1, 8};
  CHECK(quantize_code_ref(100.0f, g, 4) == 15);
  CHECK(quantize_code_ref(-100.0f, g, 4) == 0);
  CHECK(quantize_code_ref(INFINITY, g, 4) == 15);
  CHECK(quantize_code_ref(-7.5f, g, 4) == 0);  // round(-7.5) = -8 (even) + 8
}

TEST_CASE("granularity: per tensor, per channel, per group", "[quant]") {
  const at::Tensor w = at::tensor({1.0f, -2.0f, 0.5f, 4.0f, 3.0f, 0.25f, -1.0f, 2.0f}).reshape({2, 4});
  const QuantizedWeight t = quantize_weight(w, {4, kPerTensor, true, false});
  CHECK(t.scales.sizes() == at::IntArrayRef{2, 1});
  // Symmetric 4-bit: scale = absmax / 7, the quotient rounded once from double, then to fp16.
  auto s7 = [](double absmax) { return fp16(absmax / 7); };
  CHECK(values_of(t.scales) == std::vector<float>{s7(4), s7(4)});  // absmax 4 over the whole tensor
  const QuantizedWeight c = quantize_weight(w, {4, kPerChannel, true, false});
  CHECK(values_of(c.scales) == std::vector<float>{s7(4), s7(3)});
  const QuantizedWeight g = quantize_weight(w, {4, 2, true, false});
  CHECK(g.scales.sizes() == at::IntArrayRef{2, 2});
  CHECK(values_of(g.scales) == std::vector<float>{s7(2), s7(4), s7(3), s7(2)});
  CHECK(values_of(g.g_idx) == std::vector<float>{0, 0, 1, 1});
}

TEST_CASE("all-zero groups get scale 1 and dequantize to exact zeros", "[quant]") {
  at::Tensor w = at::randn({3, 64});
  w[1].zero_();                   // a whole row
  w[2].slice(0, 32, 64).zero_();  // one group
  for (bool sym : {true, false})
    for (bool mse : {false, true}) {
      const WeightQuantSpec spec{4, 32, sym, mse};
      const QuantizedWeight qw = quantize_weight(w, spec);
      check_same(qw, quantize_weight_ref(w, spec));
      CHECK(qw.scales[1].eq(1).all().item<bool>());
      CHECK(qw.scales[2][1].item<float>() == 1.0f);
      CHECK(qw.zeros[1][0].item<int32_t>() == (sym ? 8 : 0));
      const at::Tensor wh = dequantize(qw);
      CHECK(wh[1].eq(0).all().item<bool>());
      CHECK(wh[2].slice(0, 32, 64).eq(0).all().item<bool>());
    }
}

TEST_CASE("subnormal-only groups quantize to zero instead of overflowing 1/scale", "[quant]") {
  const at::Tensor w = row({1e-40f, -3e-41f, 0.0f, 2e-39f});
  for (bool sym : {true, false}) {
    const QuantizedWeight qw = quantize_weight(w, {8, kPerChannel, sym, false});
    check_same(qw, quantize_weight_ref(w, {8, kPerChannel, sym, false}));
    CHECK(qw.scales.item<float>() == 1.0f);
    CHECK(dequantize(qw).eq(0).all().item<bool>());
  }
}

TEST_CASE("huge values keep finite scales and small relative error", "[quant]") {
  // (mx - mn) = 4e38 overflows float; the quotient taken in double does not.
  const at::Tensor w = row({-2e38f, 1e38f, 2e38f, 5e37f, 3.0f, -1e30f, 0.0f, 7e37f});
  for (bool sym : {true, false})
    for (int bits : {2, 4, 8}) {
      const WeightQuantSpec spec{bits, kPerChannel, sym, false};
      const QuantizedWeight qw = quantize_weight(w, spec);
      check_same(qw, quantize_weight_ref(w, spec));
      const at::Tensor wh = dequantize(qw);
      REQUIRE(at::isfinite(wh).all().item<bool>());
      // Rounding errs by half a grid step (asymmetric: also at the clamped end, since the rounded zero shifts the
      // grid by at most half a step), plus the float rounding of scale, x * inv_scale and scale * (q - zero):
      // a few ulps of max|x| = 2e38 (4 * FLT_EPSILON * 2e38 ~ 1e32, five orders below a step).
      const double step = sym ? 2e38 / ((1 << (bits - 1)) - 1) : 4e38 / ((1 << bits) - 1);
      CHECK((wh - w).abs().max().item<double>() <= 0.5 * step + 4 * FLT_EPSILON * 2e38);
    }
}

TEST_CASE("fast and scalar quantizers agree bit for bit on odd shapes", "[quant]") {
  at::manual_seed(1234);
  struct Shape {
    int64_t out, in, group;
  };
  // Widths that are not multiples of 8/32, a single column, a single row, groups of odd size.
  const std::vector<Shape> shapes = {{5, 7, kPerChannel}, {3, 45, 15},       {1, 1, kPerChannel}, {1, 1, 1},
                                     {4, 96, 32},         {7, 33, 11},       {2, 13, kPerTensor}, {6, 24, 3},
                                     {9, 130, 65},        {1, 200, kPerTensor}};
  for (const auto& s : shapes)
    for (int bits = 2; bits <= 8; ++bits)
      for (bool sym : {true, false})
        for (bool mse : {false, true}) {
          at::Tensor w = at::randn({s.out, s.in}) * at::exp(at::randn({s.out, 1}) * 3);
          if (s.out > 2) w[s.out - 1].zero_();
          if (s.in > 2) w.select(1, 0).mul_(50);  // an outlier column
          const WeightQuantSpec spec{bits, s.group, sym, mse};
          INFO("shape " << s.out << "x" << s.in << " group " << s.group << " bits " << bits << " sym " << sym
                        << " mse " << mse);
          check_same(quantize_weight(w, spec), quantize_weight_ref(w, spec));
        }
}

TEST_CASE("RTN error is at most half a step per weight", "[quant]") {
  at::manual_seed(7);
  const at::Tensor w = at::randn({16, 96});
  for (bool sym : {true, false}) {
    const QuantizedWeight qw = quantize_weight(w, {4, 32, sym, false});
    const at::Tensor step = qw.scales.index_select(1, qw.g_idx.to(at::kLong));
    // Half a step, plus a few ulps of |x| for the float rounding of x * inv_scale and scale * (q - zero).
    CHECK(((dequantize(qw) - w).abs() <= 0.5 * step + 4 * FLT_EPSILON * w.abs()).all().item<bool>());
  }
}

TEST_CASE("MSE clip search never increases the |err|^2.4 objective", "[quant]") {
  at::manual_seed(99);
  const at::Tensor w = at::randn({8, 128});
  for (bool sym : {true, false}) {
    const QuantizedWeight plain = quantize_weight(w, {3, 128, sym, false});
    const QuantizedWeight mse = quantize_weight(w, {3, 128, sym, true});
    const at::Tensor e_plain = (dequantize(plain) - w).abs().to(at::kDouble).pow(2.4).sum(1);
    const at::Tensor e_mse = (dequantize(mse) - w).abs().to(at::kDouble).pow(2.4).sum(1);
    // p = 1 is the search's first candidate, so no row gets worse. The 1e-12 relative slack covers this
    // test summing in a different order than the search did.
    CHECK((e_mse <= e_plain * (1 + 1e-12)).all().item<bool>());
    // For Gaussian rows the |err|^2.4-optimal 3-bit range is well inside [min, max]: every row shrinks.
    CHECK((mse.scales < plain.scales).all().item<bool>());
    CHECK(e_mse.sum().item<double>() < 0.95 * e_plain.sum().item<double>());
  }
}

TEST_CASE("NaN and Inf weights are rejected naming the tensor and element", "[quant]") {
  at::Tensor w = at::randn({4, 8});
  w[2][5] = NAN;
  CHECK_THROWS_WITH(quantize_weight(w, {4, kPerChannel, true, false}, "layers.0.q_proj"),
                    Catch::Contains("layers.0.q_proj") && Catch::Contains("[2, 5]") && Catch::Contains("nan"));
  CHECK_THROWS_AS(quantize_weight_ref(w, {4, kPerChannel, true, false}), std::invalid_argument);
  w[2][5] = -INFINITY;
  CHECK_THROWS_WITH(quantize_weight(w, {4, kPerChannel, true, false}, "up"), Catch::Contains("-inf"));
}

TEST_CASE("bad specs are rejected with the expectation spelled out", "[quant]") {
  const at::Tensor w = at::randn({4, 96});
  CHECK_THROWS_WITH(quantize_weight(w, {4, 64, true, false}, "down"),
                    Catch::Contains("down") && Catch::Contains("group size 64") && Catch::Contains("divisor of 96"));
  CHECK_THROWS_WITH(quantize_weight(w, {9, 32, true, false}), Catch::Contains("9 bits"));
  CHECK_THROWS_WITH(quantize_weight(w, {1, 32, true, false}), Catch::Contains("2 to 8"));
  CHECK_THROWS_AS(quantize_weight(w, {4, -2, true, false}), std::invalid_argument);
  CHECK_THROWS_AS(quantize_weight(at::randn({96}), {4, 32, true, false}), std::invalid_argument);
  CHECK_THROWS_AS(quantize_weight(at::ones({2, 4}, at::kInt), {4, 4, true, false}), std::invalid_argument);
}

TEST_CASE("fp16 and bf16 weights quantize like their fp32 values", "[quant]") {
  const at::Tensor w = at::randn({4, 64}).to(at::kHalf);
  const WeightQuantSpec spec{4, 32, false, false};
  check_same(quantize_weight(w, spec), quantize_weight(w.to(at::kFloat), spec));
}
