// Activation quantizers and the integer-semantics linear: hand-computed grids, the scalar twins, exact integer
// accumulators, act-order columns.
#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "quant/act_linear.h"
#include "quant/act_quant.h"
#include "quant/quantizer.h"

using namespace ptq;

namespace {

std::vector<float> floats(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// Activations with a few outlier channels, as LLM linear inputs have.
at::Tensor outlier_input(int64_t T, int64_t K, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor x = at::randn({T, K});
  x.select(1, 3).mul_(40);
  x.select(1, K - 2).add_(15);
  return x;
}

}  // namespace

TEST_CASE("activation grids: hand-computed symmetric and asymmetric cases", "[act_quant]") {
  // int8 symmetric per-tensor static from min/max [-1, 2]: scale = 2/127, codes round(x * 63.5):
  // -63.5 -> -64 (half to even), 31.75 -> 32, 127.
  const at::Tensor x = at::tensor({-1.0f, 0.5f, 2.0f}).view({1, 3});
  ActQuantSpec s8{8, ActGranularity::PerTensor, true, 1.0};
  ActQuantParams p = static_act_params(s8, x[0], x[0]);
  CHECK(p.scale.item<float>() == static_cast<float>(2.0 / 127.0));
  QuantizedActivation qa = quantize_activation(x, s8, &p);
  CHECK(floats(qa.codes) == std::vector<float>{-64, 32, 127});
  // int4 asymmetric over [-1, 2]: scale = 3/15 = 0.2, zero = round(1/0.2) = 5; q = round(5x) + 5 with
  // round(2.5) = 2 (half to even, before the zero is added): 0, 7, 15; codes q - zero = -5, 2, 10.
  ActQuantSpec a4{4, ActGranularity::PerTensor, false, 1.0};
  p = static_act_params(a4, x[0], x[0]);
  CHECK(p.scale.item<float>() == static_cast<float>(3.0 / 15.0));
  CHECK(p.zero.item<float>() == 5);
  qa = quantize_activation(x, a4, &p);
  CHECK(floats(qa.codes) == std::vector<float>{-5, 2, 10});
  // Clip 0.5 halves the range: int8 scale 1/127, 2.0 clamps to 127.
  ActQuantSpec c8 = s8;
  c8.clip = 0.5;
  p = static_act_params(c8, x[0], x[0]);
  CHECK(p.scale.item<float>() == static_cast<float>(1.0 / 127.0));
  CHECK(floats(quantize_activation(x, c8, &p).codes) == std::vector<float>{-127, 64, 127});
  // Per-token dynamic: each row its own absmax / 7 (int4); an all-zero row gets scale 1 and zero codes.
  const at::Tensor rows = at::tensor({7.0f, -3.5f, 0.0f, 0.0f}).view({2, 2});
  qa = quantize_activation(rows, ActQuantSpec{4, ActGranularity::PerToken, true, 1.0}, nullptr);
  CHECK(floats(qa.scale) == std::vector<float>{1.0f, 1.0f});
  CHECK(floats(qa.codes) == std::vector<float>{7, -4, 0, 0});  // -3.5 -> -4 (half to even)
}

TEST_CASE("activation quantizer equals its scalar twin for every granularity, grid, width and clip", "[act_quant]") {
  const at::Tensor x = outlier_input(37, 48, 3);
  const at::Tensor mn = std::get<0>(x.min(0)), mx = std::get<0>(x.max(0));
  for (auto g : {ActGranularity::PerTensor, ActGranularity::PerChannel, ActGranularity::PerToken})
    for (bool sym : {true, false})
      for (int bits : {4, 6, 8})
        for (double clip : {1.0, 0.8}) {
          INFO(act_granularity_name(g) << " sym " << sym << " bits " << bits << " clip " << clip);
          const ActQuantSpec s{bits, g, sym, clip};
          ActQuantParams p;
          if (s.is_static()) p = static_act_params(s, mn, mx);
          const QuantizedActivation fast = quantize_activation(x, s, &p), ref = quantize_activation_ref(x, s, &p);
          CHECK(fast.codes.equal(ref.codes));
          CHECK(fast.scale.equal(ref.scale));
          CHECK(fast.codes.min().item<float>() >= s.qmin() - (sym ? 0 : (1 << bits)));
          CHECK(fast.codes.max().item<float>() <= s.qmax());
          // Dequantized error within half a step wherever nothing was clipped (clip 1, static range covers x).
          if (clip == 1.0 && g != ActGranularity::PerToken) {
            const at::Tensor err = (dequantize_activation(fast) - x).abs();
            CHECK((err <= fast.scale * 0.5001 + 1e-6).all().item<bool>());
          }
        }
}

TEST_CASE("integer-semantics linear: exact accumulators, output equal to the scalar twin", "[act_quant]") {
  at::manual_seed(5);
  const int64_t N = 24, K = 64, T = 9;
  const at::Tensor w = at::randn({N, K}), bias = at::randn({N});
  const at::Tensor x = outlier_input(T, K, 8);
  for (const WeightQuantSpec& ws : {WeightQuantSpec{4, 32, true, false}, WeightQuantSpec{8, kPerChannel, true, false},
                                   WeightQuantSpec{4, 16, false, false}})
    for (auto g : {ActGranularity::PerTensor, ActGranularity::PerToken, ActGranularity::PerChannel}) {
      INFO("weights " << ws.bits << "/" << ws.group_size << " act " << act_granularity_name(g));
      QuantizedWeight qw = quantize_weight(w, ws);
      const ActQuantSpec as{8, g, true, 1.0};
      ActQuantParams p;
      if (as.is_static()) p = static_act_params(as, std::get<0>(x.min(0)), std::get<0>(x.max(0)));
      const ActQuantLinear lin(qw, bias, as, p);
      const at::Tensor fast = lin.forward(x), ref = act_quant_linear_ref(x, qw, bias, as, &p);
      // Same integer accumulators; the fast path sums G fp64 terms (or, per channel, K) in another order, then
      // rounds to fp32: at most 1 ulp of fp32 apart (2^-23 relative), bias added identically.
      CHECK(((fast - ref).abs() <= ref.abs() * 2.4e-7 + 1e-6).all().item<bool>());
      if (g == ActGranularity::PerChannel) continue;
      // Accumulators against plain int64 loops over the definition.
      const QuantizedActivation qa = quantize_activation(x, as, &p);
      const at::Tensor acc = lin.accumulators(qa);
      const int64_t G = qw.scales.size(1), width = K / G;
      bool all_equal = true;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t gi = 0; gi < G; ++gi) {
            int64_t sum = 0;
            for (int64_t k = gi * width; k < (gi + 1) * width; ++k)
              sum += static_cast<int64_t>(qa.codes[t][k].item<float>()) *
                     (qw.q[n][k].item<int64_t>() - qw.zeros[n][gi].item<int64_t>());
            all_equal = all_equal && acc[t][n][gi].item<double>() == static_cast<double>(sum);
          }
      CHECK(all_equal);
    }
}

TEST_CASE("integer-semantics linear: the integer kernel gives the former fp64 evaluation on a real module shape",
          "[act_quant]") {
  // sotu-llama-8m's down_proj ([256, 768]), 8-bit weights per channel and in groups of 128 (act-order too), a8
  // per-tensor static asymmetric (codes q - zero up to ±255) and per-token dynamic symmetric, with a bias.
  at::manual_seed(21);
  const int64_t N = 256, K = 768, T = 37;
  const at::Tensor w = at::randn({N, K}), bias = at::randn({N});
  const at::Tensor x = outlier_input(T, K, 4);
  const at::Tensor perm = at::randperm(K, at::kLong);
  for (const auto& [ws, act_order] : {std::pair{WeightQuantSpec{8, kPerChannel, true, false}, false},
                                      std::pair{WeightQuantSpec{8, 128, false, false}, false},
                                      std::pair{WeightQuantSpec{4, 128, true, false}, true}})
    // Symmetric per-tensor static and per-token dynamic: made and consumed in one pass by the byte kernel where the CPU
    // has AVX-512 VNNI.
    for (const ActQuantSpec& as : {ActQuantSpec{8, ActGranularity::PerTensor, false, 1.0},
                                   ActQuantSpec{8, ActGranularity::PerToken, true, 1.0},
                                   ActQuantSpec{8, ActGranularity::PerTensor, true, 1.0},
                                   ActQuantSpec{4, ActGranularity::PerTensor, true, 1.0},
                                   ActQuantSpec{4, ActGranularity::PerToken, true, 0.9}}) {
      INFO("weights " << ws.bits << "/" << ws.group_size << (act_order ? " act-order" : "") << " act "
                      << as.describe());
      QuantizedWeight qw = quantize_weight(w, ws);
      if (act_order) {  // columns shuffled with their groups, as GPTQ's act-order leaves them
        qw.q = at::empty_like(qw.q).index_copy_(1, perm, qw.q);
        qw.g_idx = at::empty_like(qw.g_idx).index_copy_(0, perm, qw.g_idx);
      }
      ActQuantParams p;
      if (as.is_static()) p = static_act_params(as, std::get<0>(x.min(0)), std::get<0>(x.max(0)));
      const ActQuantLinear lin(qw, bias, as, p);
      REQUIRE(lin.integer_kernel());
      const at::Tensor y = lin.forward(x);
      // The former forward(): fp64 accumulators from bmm, Σ_g by at::sum, times a, to fp32, plus the bias.
      const QuantizedActivation qa = quantize_activation(x, as, &p);
      const at::Tensor former =
          ((lin.accumulators(qa) * qw.scales.to(at::kDouble).unsqueeze(0)).sum(-1) *
           qa.scale.to(at::kDouble).reshape({-1, 1})).to(at::kFloat) + bias;
      // Same integers, same products s · acc in double; at::sum may add the G terms in another order than the
      // kernel's increasing g, a difference of a few double ulps that the fp32 rounding absorbs except at a tie
      // boundary: at most 1 fp32 ulp before the bias is added (2^-23 relative). That bound always holds; on these
      // (seeded) data the two are equal, which is asserted too.
      CHECK(((y - former).abs() <= former.abs() * 1.2e-7 + 1e-6).all().item<bool>());
      CHECK(y.equal(former));
      // And the scalar twin bit for bit (same epilogue order).
      CHECK(y.equal(act_quant_linear_ref(x, qw, bias, as, &p)));
    }
}

TEST_CASE("integer-semantics linear: siblings on one grid share their codes, bit for bit their own forwards",
          "[act_quant]") {
  at::manual_seed(6);
  const int64_t K = 128, T = 7;
  const at::Tensor x = outlier_input(T, K, 8);
  for (auto g : {ActGranularity::PerTensor, ActGranularity::PerToken})
    for (const WeightQuantSpec& ws : {WeightQuantSpec{4, 32, true, false}, WeightQuantSpec{8, kPerChannel, true, false}})
      for (int bits : {8, 4}) {
        INFO("act " << act_granularity_name(g) << " a" << bits << " weights " << ws.bits << "/" << ws.group_size);
        const ActQuantSpec as{bits, g, true, 1.0};
        ActQuantParams p;
        if (as.is_static()) p = static_act_params(as, std::get<0>(x.min(0)), std::get<0>(x.max(0)));
        // q, k, v: one input point's grid, different widths (GQA's narrower k and v), biases or none.
        const ActQuantLinear q(quantize_weight(at::randn({24, K}), ws), at::randn({24}), as, p);
        const ActQuantLinear k(quantize_weight(at::randn({8, K}), ws), {}, as, p);
        const ActQuantLinear v(quantize_weight(at::randn({8, K}), ws), at::randn({8}), as, p);
        if (q.codes_from_floats()) {  // the byte kernels (AVX-512 VNNI): the codes are made once
          CHECK(q.same_codes(k));
          CHECK(q.same_codes(v));
        } else {
          WARN("no byte kernels on this CPU: forward_siblings runs each forward");
        }
        const std::vector<at::Tensor> out = q.forward_siblings(x, {&q, &k, &v});
        REQUIRE(out.size() == 3);
        CHECK(out[0].equal(q.forward(x)));
        CHECK(out[1].equal(k.forward(x)));
        CHECK(out[2].equal(v.forward(x)));
        // Another grid (a static step twice as large, or a different clip) is not a sibling's: each forward.
        ActQuantParams p2 = p;
        if (as.is_static()) p2.scale = p.scale * 2;
        const ActQuantLinear other(quantize_weight(at::randn({8, K}), ws), {},
                                   ActQuantSpec{bits, g, true, as.is_static() ? 1.0 : 0.9}, p2);
        CHECK_FALSE(q.same_codes(other));
        const std::vector<at::Tensor> mixed = q.forward_siblings(x, {&q, &other});
        CHECK(mixed[0].equal(q.forward(x)));
        CHECK(mixed[1].equal(other.forward(x)));
      }
}

TEST_CASE("integer-semantics linear: groups too wide for int32 in the worst case keep the fp64 accumulators",
          "[act_quant]") {
  // 70000 columns, one group: asymmetric 8-bit activation codes (|c| <= 255) times weights up to ±128 could pass
  // 2^31 - 1; symmetric codes (|c| <= 128) cannot (kernels/int_linear.h).
  at::manual_seed(3);
  const int64_t N = 3, K = 70000, T = 2;
  const at::Tensor w = at::randn({N, K}), x = at::randn({T, K});
  const QuantizedWeight qw = quantize_weight(w, WeightQuantSpec{8, kPerChannel, true, false});
  const ActQuantSpec asym{8, ActGranularity::PerTensor, false, 1.0}, sym{8, ActGranularity::PerToken, true, 1.0};
  const ActQuantParams p = static_act_params(asym, std::get<0>(x.min(0)), std::get<0>(x.max(0)));
  const ActQuantLinear wide(qw, {}, asym, p), narrow(qw, {}, sym, {});
  CHECK_FALSE(wide.integer_kernel());
  CHECK(narrow.integer_kernel());
  // The fp64 path sums the G terms through at::sum: within 1 fp32 ulp of the twin (see above); the kernel: equal.
  const at::Tensor ref_wide = act_quant_linear_ref(x, qw, {}, asym, &p);
  CHECK(((wide.forward(x) - ref_wide).abs() <= ref_wide.abs() * 1.2e-7 + 1e-6).all().item<bool>());
  CHECK(narrow.forward(x).equal(act_quant_linear_ref(x, qw, {}, sym, nullptr)));
  // A NaN input has no integer code: an error, never garbage integers.
  at::Tensor bad = x.clone();
  bad[1][5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(narrow.forward(bad), Catch::Contains("NaN or Inf"));
}

TEST_CASE("integer-semantics linear: act-order columns give the result of the same grids in natural order",
          "[act_quant]") {
  at::manual_seed(9);
  const int64_t N = 8, K = 32;
  QuantizedWeight qw = quantize_weight(at::randn({N, K}), WeightQuantSpec{4, 8, true, false});
  // Permute columns: column perm[j] of the permuted weight is column j of the original, g_idx moves with it.
  const at::Tensor perm = at::randperm(K, at::kLong);
  QuantizedWeight pw = qw;
  pw.q = at::empty_like(qw.q).index_copy_(1, perm, qw.q);
  pw.g_idx = at::empty_like(qw.g_idx).index_copy_(0, perm, qw.g_idx);
  const at::Tensor x = outlier_input(6, K, 2);
  const at::Tensor xp = at::empty_like(x).index_copy_(1, perm, x);
  const ActQuantSpec as{8, ActGranularity::PerToken, true, 1.0};
  const at::Tensor a = ActQuantLinear(qw, {}, as, {}).forward(x), b = ActQuantLinear(pw, {}, as, {}).forward(xp);
  CHECK(a.equal(b));  // same codes, same integer groups, same epilogue
  CHECK(b.allclose(act_quant_linear_ref(xp, pw, {}, as, nullptr), 2.4e-7, 1e-6));
}

TEST_CASE("W8A8 per-token and W4A4 per-token stay close to the FP product, and the clip ratio is validated", "[act_quant]") {
  at::manual_seed(1);
  const at::Tensor w = at::randn({32, 128}), x = at::randn({16, 128});
  const at::Tensor ref = at::matmul(x, w.t());
  auto rel = [&](int bits) {
    const QuantizedWeight qw = quantize_weight(w, WeightQuantSpec{bits, kPerChannel, true, false});
    const at::Tensor y = ActQuantLinear(qw, {}, ActQuantSpec{bits, ActGranularity::PerToken, true, 1.0}, {}).forward(x);
    return ((y - ref).norm() / ref.norm()).item<double>();
  };
  // Gaussian data: an 8-bit grid's rounding noise is ~absmax/127/sqrt(12) per element, about 1% of the signal
  // for both operands; 4-bit about 16x that.
  const double r8 = rel(8), r4 = rel(4);
  CHECK(r8 < 0.03);
  CHECK(r4 > r8 * 4);
  CHECK(r4 < 0.4);
  CHECK_THROWS_WITH(quantize_activation(x, ActQuantSpec{8, ActGranularity::PerToken, true, 1.5}, nullptr),
                    Catch::Contains("clip"));
  CHECK_THROWS_WITH(quantize_activation(x, ActQuantSpec{8, ActGranularity::PerTensor, true, 1.0}, nullptr),
                    Catch::Contains("static scales missing"));
}
