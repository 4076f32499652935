// The integer linear op (lib/kernels/int_linear.h) on every instruction set this CPU has, against its scalar twin
// int_linear_ref: int32 accumulators equal to the twin's int64 ones, fp32 outputs bit-identical (the same double
// epilogue in the same order, no FMA contraction), on odd sizes and widths that exercise the scalar/masked tails.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/int_linear.h"

using namespace ptq::kernels;

namespace ptq::kernels {
// cpu/int_linear_avx512.cpp (vpmaddwd): what AVX-512 CPUs without VNNI run. int_linear_isa(Isa::Avx512) dispatches to
// the VNNI kernel where the CPU has VNNI, so on such a CPU this test calls the plain one directly as well.
void int_linear_avx512(const IntWeights& w, const IntActivations& x, float* y, const float* bias, int32_t* acc);
}  // namespace ptq::kernels

namespace {

std::vector<int16_t> random_codes(int64_t count, int lo, int hi, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int16_t> v(count);
  for (auto& x : v) x = int16_t(d(rng));
  return v;
}

std::vector<float> random_steps(int64_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(1e-4f, 0.1f);
  std::vector<float> v(count);
  for (auto& x : v) x = d(rng);
  return v;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

TEST_CASE("int_linear: every ISA equals the scalar twin, accumulators and outputs bit for bit", "[kernels][int_linear]") {
  std::mt19937 rng(12);
  int checked = 0;
  for (int64_t width : {1, 7, 32, 33, 128})
    for (int64_t groups = 1; groups <= 4; ++groups)
      for (int64_t m : {1, 3, 17}) {
        const int64_t k = width * groups, n = 2 * groups + 3;  // odd n: a lone row tile and a partial row chunk
        // Full ranges used: asymmetric codes q - zero in [-255, 255] on both sides, or signed 8-bit ones.
        const bool full = (width + groups + m) % 2 == 0;
        const int lo = full ? -255 : -128, hi = full ? 255 : 127;
        const std::vector<int16_t> c = random_codes(m * k, lo, hi, rng), wq = random_codes(n * k, lo, hi, rng);
        const std::vector<float> s = random_steps(n * groups, rng), a_tok = random_steps(m, rng), bias = random_steps(n, rng);
        const IntWeights w{wq.data(), s.data(), n, k, groups};
        REQUIRE(int_weights_max_abs(w) <= 255);
        std::vector<int64_t> acc_ref(m * n * groups);
        for (bool per_token : {true, false}) {
          const IntActivations x{c.data(), a_tok.data(), m, per_token};
          int_linear_acc_ref(w, x, acc_ref.data());
          for (bool with_bias : {false, true}) {
            const float* b = with_bias ? bias.data() : nullptr;
            std::vector<float> y_ref(m * n, NAN);
            int_linear_ref(w, x, y_ref.data(), b);
            // The twin against the definition written out once more here (catches a wrong epilogue in both).
            for (int64_t t = 0; t < m; ++t)
              for (int64_t r = 0; r < n; ++r) {
                double sum = 0;
                for (int64_t g = 0; g < groups; ++g) sum += double(s[r * groups + g]) * double(acc_ref[(t * n + r) * groups + g]);
                float v = float(sum * double(per_token ? a_tok[t] : a_tok[0]));
                if (b != nullptr) v += b[r];
                REQUIRE(same_bits(v, y_ref[t * n + r]));
              }
            for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
              if (int(isa) > int(detected_isa())) continue;
              INFO("isa " << isa_name(isa) << " m " << m << " n " << n << " width " << width << " groups " << groups
                          << " per_token " << per_token << " bias " << with_bias);
              std::vector<int32_t> acc(m * n * groups, -1);
              int_linear_acc_isa(isa, w, x, acc.data());
              bool acc_equal = true;
              for (size_t i = 0; i < acc.size(); ++i) acc_equal = acc_equal && int64_t(acc[i]) == acc_ref[i];
              CHECK(acc_equal);
              std::vector<float> y(m * n, NAN);
              int_linear_isa(isa, w, x, y.data(), b);
              bool y_equal = true;
              for (int64_t i = 0; i < m * n; ++i) y_equal = y_equal && same_bits(y[i], y_ref[i]);
              CHECK(y_equal);
              ++checked;
            }
            if (detected_isa() >= Isa::Avx512 && has_avx512_vnni()) {
              INFO("plain AVX-512 kernel, m " << m << " width " << width << " groups " << groups);
              std::vector<int32_t> acc(m * n * groups, -1);
              int_linear_avx512(w, x, nullptr, nullptr, acc.data());
              bool acc_equal = true;
              for (size_t i = 0; i < acc.size(); ++i) acc_equal = acc_equal && int64_t(acc[i]) == acc_ref[i];
              CHECK(acc_equal);
              std::vector<float> y(m * n, NAN);
              int_linear_avx512(w, x, y.data(), b, nullptr);
              bool y_equal = true;
              for (int64_t i = 0; i < m * n; ++i) y_equal = y_equal && same_bits(y[i], y_ref[i]);
              CHECK(y_equal);
            }
          }
        }
      }
  if (detected_isa() >= Isa::Avx2) CHECK(checked > 0);
}

TEST_CASE("int_linear: extreme codes fill an int32 group sum exactly", "[kernels][int_linear]") {
  // Every product is ±255 · 255 over the widest group the bound admits (33025 columns: whole vectors plus a
  // one-column tail): |acc| = 2147450625, 33022 below 2^31 - 1.
  for (int16_t sign : {int16_t(1), int16_t(-1)}) {
    const int64_t k = kIntLinearMaxWidth, m = 2, n = 3;
    const std::vector<int16_t> c(m * k, int16_t(255 * sign)), wq(n * k, 255);
    const std::vector<float> s(n, 1.0f), a(1, 1.0f);
    const IntWeights w{wq.data(), s.data(), n, k, 1};
    const IntActivations x{c.data(), a.data(), m, false};
    std::vector<int64_t> acc_ref(m * n);
    int_linear_acc_ref(w, x, acc_ref.data());
    CHECK(acc_ref[0] == int64_t(sign) * 33025 * 65025);
    for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
      if (int(isa) > int(detected_isa())) continue;
      std::vector<int32_t> acc(m * n);
      int_linear_acc_isa(isa, w, x, acc.data());
      for (size_t i = 0; i < acc.size(); ++i) CHECK(int64_t(acc[i]) == acc_ref[i]);
    }
  }
}

TEST_CASE("int_linear: refuses groups that could overflow int32, codes out of range, bad layouts", "[kernels][int_linear]") {
  const int64_t k = kIntLinearMaxWidth + 1;
  const std::vector<int16_t> c(k, 255), wq(k, 1);
  const std::vector<float> s(2, 1.0f), a(1, 1.0f);
  float y[2];
  // Codes within ±255 and the default weight bound 255: 33026 columns could exceed 2^31 - 1.
  CHECK_THROWS_WITH(int_linear(IntWeights{wq.data(), s.data(), 1, k, 1}, IntActivations{c.data(), a.data(), 1, false}, y),
                    Catch::Contains("33026 columns") && Catch::Contains("int32"));
  // The same width with weights known to be within ±1 fits, and is exact.
  CHECK_NOTHROW(int_linear(IntWeights{wq.data(), s.data(), 1, k, 1, 1}, IntActivations{c.data(), a.data(), 1, false}, y));
  CHECK(y[0] == float(255 * k));
  CHECK_THROWS_WITH(int_linear(IntWeights{wq.data(), s.data(), 1, 6, 4}, IntActivations{c.data(), a.data(), 1, false}, y),
                    Catch::Contains("4 groups do not divide 6"));
  CHECK_THROWS_WITH(int_linear(IntWeights{wq.data(), s.data(), 1, 8, 1, 256}, IntActivations{c.data(), a.data(), 1, false}, y),
                    Catch::Contains("weight bound 256"));
  std::vector<int16_t> bad(c.begin(), c.begin() + 8);
  bad[5] = 256;
  CHECK_THROWS_WITH(int_linear(IntWeights{wq.data(), s.data(), 1, 8, 1}, IntActivations{bad.data(), a.data(), 1, false}, y),
                    Catch::Contains("code 256"));
  bad[5] = -300;
  CHECK(int_weights_max_abs(IntWeights{bad.data(), s.data(), 1, 8, 1}) == 300);
  // The accumulators alone read no activation step.
  for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
    if (int(isa) > int(detected_isa())) continue;
    int32_t acc[1] = {0};
    CHECK_NOTHROW(int_linear_acc_isa(isa, IntWeights{wq.data(), nullptr, 1, 8, 1}, IntActivations{c.data(), nullptr, 1, false}, acc));
    CHECK(acc[0] == 8 * 255);
  }
  // m = 0 is a no-op.
  CHECK_NOTHROW(int_linear(IntWeights{wq.data(), s.data(), 1, 8, 1}, IntActivations{nullptr, nullptr, 0, true}, nullptr));
}

TEST_CASE("int_linear: symmetric 8-bit codes admit groups of 131071 columns, exactly", "[kernels][int_linear]") {
  // 128 · 128 · 131071 = 2^31 - 16384: the widest group for codes and weights within ±128.
  const int64_t k = 131071, m = 1, n = 2;
  std::vector<int16_t> c(m * k, -128), wq(n * k, -128);
  wq[k + 5] = 127;  // row 1 differs by one column
  const std::vector<float> s(n, 1.0f), a(1, 1.0f);
  const IntWeights w{wq.data(), s.data(), n, k, 1, int_weights_max_abs(IntWeights{wq.data(), s.data(), n, k, 1})};
  REQUIRE(w.max_abs == 128);
  const IntActivations x{c.data(), a.data(), m, false};
  std::vector<int64_t> acc_ref(m * n);
  int_linear_acc_ref(w, x, acc_ref.data());
  CHECK(acc_ref[0] == int64_t(2147467264));
  CHECK(acc_ref[1] == int64_t(2147467264) - 128 * 255);
  for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
    if (int(isa) > int(detected_isa())) continue;
    std::vector<int32_t> acc(m * n);
    int_linear_acc_isa(isa, w, x, acc.data());
    CHECK(int64_t(acc[0]) == acc_ref[0]);
    CHECK(int64_t(acc[1]) == acc_ref[1]);
  }
  c[0] = 129;  // one code past ±128 with weights of ±128: could overflow, refused
  CHECK_THROWS_WITH(int_linear_acc_ref(w, x, acc_ref.data()), Catch::Contains("131071 columns"));
}

TEST_CASE("int_linear8 (1-byte weights, AVX-512 VNNI) equals the scalar twin bit for bit", "[kernels][int_linear]") {
  if (!(best_isa() >= Isa::Avx512 && has_avx512_vnni())) {  // best_isa: PTQ_ISA=avx2 turns the byte kernel off
    WARN("skipped: no AVX-512 VNNI on this CPU (or PTQ_ISA lowers the ISA), the only place int_linear8 runs");
    return;
  }
  std::mt19937 rng(31);
  int checked = 0;
  for (int wmax : {127, 7})  // bytes; half bytes where the groups are whole 8-column pairs (widths 32, 128, 8)
  for (int64_t width : {4, 32, 36, 128, 8})
    for (int64_t groups = 1; groups <= 3; ++groups)
      for (int64_t n : {2 * groups + 3, int64_t(37)})  // one partial tile; two whole tiles and a partial one
        for (int64_t m : {1, 3, 6, 17}) {  // token groups of 4: 1, 3, 4 + 2, 4 x 4 + 1
          const int64_t k = width * groups;
          // The kernel's whole ranges: codes in [-128, 127], weights in [-128, 127] or [-8, 7].
          const std::vector<int16_t> c = random_codes(m * k, -128, 127, rng),
                                     wq = random_codes(n * k, -wmax - 1, wmax, rng);
          const std::vector<float> s = random_steps(n * groups, rng), a_tok = random_steps(m, rng), bias = random_steps(n, rng);
          const IntWeights w{wq.data(), s.data(), n, k, groups};
          REQUIRE(int_linear8_supports(w));
          const IntWeights8 w8 = pack_int_weights8(w);
          CHECK(w8.bits == (wmax == 7 && width % 8 == 0 ? 4 : 8));
          CHECK(int64_t(w8.tiles.size()) == (n + 15) / 16 * 16 * k * w8.bits / 8);
          std::vector<int16_t> back(n * k);
          unpack_int_weights8(w8, back.data());
          REQUIRE(back == wq);
          for (bool per_token : {true, false})
            for (bool with_bias : {false, true}) {
              const IntActivations x{c.data(), a_tok.data(), m, per_token};
              const float* b = with_bias ? bias.data() : nullptr;
              std::vector<float> y_ref(m * n, NAN), y(m * n, NAN);
              int_linear_ref(w, x, y_ref.data(), b);
              REQUIRE(int_linear8(w8, x, y.data(), b));
              bool equal = true;
              for (int64_t i = 0; i < m * n; ++i) equal = equal && same_bits(y[i], y_ref[i]);
              INFO("m " << m << " n " << n << " width " << width << " groups " << groups << " per_token " << per_token
                        << " weight bits " << w8.bits);
              CHECK(equal);
              ++checked;
            }
        }
  CHECK(checked > 0);
  // Out of the byte ranges: weights refused by supports(), codes by the call (which leaves y to int_linear).
  const std::vector<int16_t> big = {128, 0, 0, 0}, ok = {1, 2, 3, 4}, wide = {1, 2, 3, 4, 5, 6};
  const std::vector<float> s1 = {1.0f, 1.0f}, a1 = {1.0f};
  CHECK_FALSE(int_linear8_supports(IntWeights{big.data(), s1.data(), 1, 4, 1}));
  CHECK_FALSE(int_linear8_supports(IntWeights{wide.data(), s1.data(), 1, 6, 1}));  // a group of 6: not whole dwords
  const IntWeights8 w8 = pack_int_weights8(IntWeights{ok.data(), s1.data(), 1, 4, 1});
  float y = 7.0f;
  CHECK_FALSE(int_linear8(w8, IntActivations{big.data(), a1.data(), 1, false}, &y));
  CHECK(y == 7.0f);
}

TEST_CASE("int_linear8_static and int_linear8_dynamic quantize as the scalar rounding, then equal the twin",
          "[kernels][int_linear]") {
  if (!(best_isa() >= Isa::Avx512 && has_avx512_vnni())) {  // best_isa: PTQ_ISA=avx2 turns the byte kernel off
    WARN("skipped: no AVX-512 VNNI on this CPU (or PTQ_ISA lowers the ISA), the only place int_linear8 runs");
    return;
  }
  std::mt19937 rng(57);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  int checked = 0;
  for (int64_t width : {4, 20, 64})  // 20: a masked tail inside every group
    for (int64_t groups : {1, 3})
      for (int64_t m : {1, 5, 40})
        for (int bits : {8, 4}) {
          const int64_t k = width * groups, n = 19;
          const std::vector<int16_t> wq = random_codes(n * k, -8, 7, rng);
          const std::vector<float> s = random_steps(n * groups, rng), bias = random_steps(n, rng);
          const IntWeights w{wq.data(), s.data(), n, k, groups};
          const IntWeights8 w8 = pack_int_weights8(w);
          std::vector<float> x(m * k);
          for (float& v : x) v = 3.0f * gauss(rng);
          if (m > 1)
            for (int64_t j = 0; j < k; ++j) x[(m - 1) * k + j] = 0.0f;  // an all-zero last token (step 1)
          x[0] = 40.0f;  // an outlier in token 0
          x[k / 2] = 0.5f;  // x · inv on a .5 boundary for the static step 1 below: round half to even
          const int qmax = (1 << (bits - 1)) - 1, qmin = -qmax - 1;
          // Static: step 1/2 (inv 2), codes clamp(nearbyint(2x)).
          std::vector<int16_t> c(m * k);
          for (int64_t i = 0; i < m * k; ++i)
            c[i] = int16_t(std::min(std::max(std::nearbyint(x[i] * 2.0f), float(qmin)), float(qmax)));
          const float half = 0.5f;
          std::vector<float> y_ref(m * n), y(m * n, NAN);
          int_linear_ref(w, IntActivations{c.data(), &half, m, false}, y_ref.data(), bias.data());
          REQUIRE(int_linear8_static(w8, x.data(), m, 2.0f, half, qmin, qmax, y.data(), bias.data()));
          bool equal = true;
          for (int64_t i = 0; i < m * n; ++i) equal = equal && same_bits(y[i], y_ref[i]);
          INFO("static: m " << m << " width " << width << " groups " << groups << " bits " << bits);
          CHECK(equal);
          // Dynamic, clip 0.9: per token the step from its range, written out here as quantize_activation does.
          const double clip = 0.9;
          std::vector<float> a(m);
          for (int64_t t = 0; t < m; ++t) {
            float mn = 0.0f, mx = 0.0f;
            for (int64_t j = 0; j < k; ++j) {
              mn = std::min(mn, x[t * k + j]);
              mx = std::max(mx, x[t * k + j]);
            }
            a[t] = static_cast<float>(double(std::max(-mn, mx)) * clip / double(qmax));
            if (!(a[t] >= 1.17549435e-38f)) a[t] = 1.0f;  // FLT_MIN: an all-zero token
            const float inv = 1.0f / a[t];
            for (int64_t j = 0; j < k; ++j)
              c[t * k + j] =
                  int16_t(std::min(std::max(std::nearbyint(x[t * k + j] * inv), float(qmin)), float(qmax)));
          }
          if (m > 1) CHECK(a[m - 1] == 1.0f);
          int_linear_ref(w, IntActivations{c.data(), a.data(), m, true}, y_ref.data(), bias.data());
          std::fill(y.begin(), y.end(), NAN);
          REQUIRE(int_linear8_dynamic(w8, x.data(), m, clip, qmax, y.data(), bias.data()));
          equal = true;
          for (int64_t i = 0; i < m * n; ++i) equal = equal && same_bits(y[i], y_ref[i]);
          INFO("dynamic");
          CHECK(equal);
          ++checked;
          // A non-finite input: no result, y untouched (the caller's own path reports it).
          std::vector<float> bad = x;
          bad[(m - 1) * k + k - 1] = NAN;
          std::fill(y.begin(), y.end(), 7.0f);
          CHECK_FALSE(int_linear8_dynamic(w8, bad.data(), m, clip, qmax, y.data()));
          bad[(m - 1) * k + k - 1] = INFINITY;
          CHECK_FALSE(int_linear8_static(w8, bad.data(), m, 2.0f, half, qmin, qmax, y.data()));
          CHECK(y[0] == 7.0f);
        }
  CHECK(checked == 36);
  // Codes made for other columns or groups than the weights' are refused.
  const std::vector<int16_t> wq = random_codes(16 * 64, -8, 7, rng);
  const std::vector<float> s = random_steps(16 * 2, rng);
  const IntWeights8 w8 = pack_int_weights8(IntWeights{wq.data(), s.data(), 16, 64, 2});
  std::vector<float> x(3 * 64, 1.0f), y(3 * 16);
  Codes8 codes;
  REQUIRE(codes8_static(x.data(), 3, 64, 1, 2.0f, 0.5f, -8, 7, codes));
  CHECK_THROWS_WITH(int_linear8_codes(w8, codes, y.data()), Catch::Contains("1 groups for weights of 64 in 2"));
  REQUIRE(codes8_dynamic(x.data(), 3, 64, 2, 1.0, 7, codes));
  int_linear8_codes(w8, codes, y.data());
  CHECK(codes.a.size() == 3);
}
