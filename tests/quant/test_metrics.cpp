// lib/quant/metrics and lib/quant/hessian: distortion figures and the GPTQ Hessian, computed by hand.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>

#include <ATen/ATen.h>

#include "quant/hessian.h"
#include "quant/metrics.h"

using namespace ptq;

TEST_CASE("distortion metrics, computed by hand", "[quant]") {
  // diff = [0, 4, -3, 0.5]: noise 25.25, signal 1 + 4 + 9 = 14.
  const Distortion m = distortion(at::tensor({1.0f, -2.0f, 3.0f, 0.0f}), at::tensor({1.0f, 2.0f, 0.0f, 0.5f}));
  CHECK(m.nmse == Approx(25.25 / 14).epsilon(1e-15));
  CHECK(m.snr_db == Approx(-10 * std::log10(25.25 / 14)).epsilon(1e-15));
  CHECK(m.max_abs_error == 4);
  CHECK(m.sign_flips == 1);             // -2 -> 2; 3 -> 0 is not a flip
  CHECK(m.zero_fraction == 1.0 / 3);    // of the nonzero 1, -2, 3, only 3 became 0
}

TEST_CASE("distortion of an exact copy and of an all-zero original", "[quant]") {
  const at::Tensor x = at::randn({3, 5});
  const Distortion same = distortion(x, x.clone());
  CHECK(same.nmse == 0);
  CHECK(same.snr_db == std::numeric_limits<double>::infinity());
  CHECK(same.max_abs_error == 0);
  const Distortion z = distortion(at::zeros({4}), at::ones({4}));
  CHECK(z.nmse == std::numeric_limits<double>::infinity());
  CHECK(z.zero_fraction == 0);
  CHECK_THROWS_AS(distortion(at::zeros({4}), at::zeros({5})), std::invalid_argument);
}

TEST_CASE("distortion equals the all-double formula bit for bit", "[quant]") {
  // distortion() converts one operand at a time to bound its memory; conversion to double is exact, so
  // every figure must equal the straightforward version that converts both inputs up front. Large enough
  // for the multi-threaded reduction path.
  at::manual_seed(5);
  const at::Tensor w = at::randn({512, 384});
  const at::Tensor wq = ((w * 8).round() + 1) / 8;  // a biased grid: some signs flip, some values become 0
  const at::Tensor x = w.to(at::kDouble), y = wq.to(at::kDouble), d = y - x;
  const double nmse = d.square().sum().item<double>() / x.square().sum().item<double>();
  const Distortion m = distortion(w, wq);
  CHECK(m.nmse == nmse);
  CHECK(m.snr_db == -10 * std::log10(nmse));
  CHECK(m.max_abs_error == d.abs().max().item<double>());
  CHECK(m.sign_flips == (((x > 0) & (y < 0)) | ((x < 0) & (y > 0))).sum().item<int64_t>());
  CHECK(m.zero_fraction == ((x != 0) & (y == 0)).sum().item<double>() / (x != 0).sum().item<double>());
  CHECK(m.sign_flips > 0);
  CHECK(m.zero_fraction > 0);
  const at::Tensor yd = y.clone();
  CHECK(distortion(w, yd).nmse == nmse);
  CHECK(yd.equal(y));  // a double `dequantized` is not modified in place
}

TEST_CASE("hessian_loss is 1/2 dW H dW^T, computed by hand", "[quant]") {
  // dW = [0.5, -1], H = [[2, 1], [1, 4]]: dW H dW^T = 0.5 - 1 + 4 = 3.5.
  const at::Tensor w = at::tensor({1.0f, 2.0f}).reshape({1, 2}), wh = at::tensor({1.5f, 1.0f}).reshape({1, 2});
  const at::Tensor h = at::tensor({2.0f, 1.0f, 1.0f, 4.0f}).reshape({2, 2});
  CHECK(hessian_loss(w, wh, h) == 1.75);
}

TEST_CASE("Hessian accumulator: (2/n) sum x x^T with n counting sequences", "[quant]") {
  // x1 = [1, 2] (one sequence): H = 2 x1^T x1 = [[2, 4], [4, 8]].
  HessianAccumulator acc(2, "q_proj");
  acc.add(at::tensor({1.0f, 2.0f}).reshape({1, 2}));
  // sqrt(2/n) is rounded to fp32 before squaring: 1e-6 relative covers it.
  CHECK(acc.hessian().allclose(at::tensor({2.0f, 4.0f, 4.0f, 8.0f}).reshape({2, 2}), 1e-6, 0));
  // x2 = [3, 0]: H = (2/2)(x1^T x1 + x2^T x2) = [[10, 2], [2, 4]].
  acc.add(at::tensor({3.0f, 0.0f}).reshape({1, 2}));
  CHECK(acc.samples() == 2);
  CHECK(acc.hessian().allclose(at::tensor({10.0f, 2.0f, 2.0f, 4.0f}).reshape({2, 2}), 1e-6, 0));
}

TEST_CASE("Hessian accumulator: streamed batches equal the one-shot sum", "[quant]") {
  at::manual_seed(21);
  const at::Tensor x = at::randn({6, 10, 16});  // 6 sequences of 10 tokens
  HessianAccumulator acc(16, "down_proj");
  acc.add(x[0]);               // one [tokens, in] sequence
  acc.add(x.slice(0, 1, 4));   // a batch of 3
  acc.add(x.slice(0, 4, 6).to(at::kHalf));  // any float dtype (this batch becomes its fp16 values)
  CHECK(acc.samples() == 6);
  const at::Tensor x32 = at::cat({x.slice(0, 0, 4), x.slice(0, 4, 6).to(at::kHalf).to(at::kFloat)}).reshape({-1, 16});
  const at::Tensor exact = x32.to(at::kDouble).t().mm(x32.to(at::kDouble)) * (2.0 / 6);
  // fp32 sums of 60 products per entry plus 3 rescalings: relative error ~1e-6; 1e-5 leaves margin.
  CHECK(acc.hessian().to(at::kDouble).allclose(exact, 1e-5, 1e-5));
}

TEST_CASE("Hessian accumulator rejects wrong widths and non-finite inputs", "[quant]") {
  HessianAccumulator acc(8, "layers.2.self_attn.o_proj");
  CHECK_THROWS_WITH(acc.add(at::randn({4, 7})), Catch::Contains("o_proj") && Catch::Contains("[tokens, 8]"));
  at::Tensor x = at::randn({4, 8});
  x[1][3] = INFINITY;
  CHECK_THROWS_WITH(acc.add(x), Catch::Contains("o_proj") && Catch::Contains("inf"));
  CHECK(acc.samples() == 0);
}
