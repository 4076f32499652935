// The fast Walsh–Hadamard rotation (kernels/hadamard.h) against its dense scalar twin and a hand-computed case.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/hadamard.h"

using namespace ptq::kernels;

namespace {

HadamardFactors make_factors(int64_t p, int64_t m, std::mt19937& rng) {
  HadamardFactors f;
  f.p = p;
  f.m = m;
  std::uniform_int_distribution<int> coin(0, 1);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  for (int64_t i = 0; i < p; ++i) f.signs.push_back(coin(rng) != 0 ? -1.0f : 1.0f);
  // Any R: the transform is exact algebra for every matrix, orthogonal or not.
  for (int64_t i = 0; i < m * m; ++i) f.r.push_back(m == 1 ? 1.0 : u(rng));
  return f;
}

}  // namespace

TEST_CASE("hadamard_rotate by hand: p = 2, one block, signs (+, -)", "[kernels][hadamard]") {
  HadamardFactors f;
  f.p = 2;
  f.m = 1;
  f.signs = {1.0f, -1.0f};
  f.r = {1.0};
  // S = diag(1, -1) · [[1, 1], [1, -1]] / √2 = [[1, 1], [-1, 1]] / √2; [3, 5] · S = [3 - 5, 3 + 5] / √2.
  std::vector<float> x = {3.0f, 5.0f};
  hadamard_rotate(f, x.data(), 1);
  const float s = 1.0f / std::sqrt(2.0f);
  // The kernel computes (3 - 5)·s and (3 + 5)·s: each one rounding of an exact integer times s.
  CHECK(x[0] == -2.0f * s);
  CHECK(x[1] == 8.0f * s);
}

TEST_CASE("hadamard_rotate equals the dense product of its factors on odd block counts", "[kernels][hadamard]") {
  std::mt19937 rng(7);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {1, 5}, {2, 3}, {8, 1}, {16, 7}, {128, 43}, {64, 1}};
  for (const auto& [p, m] : shapes) {
    CAPTURE(p, m);
    const HadamardFactors f = make_factors(p, m, rng);
    const int64_t n = p * m, rows = 3;
    std::vector<float> x(size_t(rows * n));
    for (float& v : x) v = gauss(rng);
    x[size_t(n / 2)] = 300.0f;  // an outlier channel, the case the rotation exists for
    std::vector<float> ref(x.size()), fast = x;
    hadamard_rotate_ref(f, x.data(), ref.data(), rows);
    hadamard_rotate(f, fast.data(), rows);
    int64_t k = 0;
    while ((int64_t(1) << k) < p) ++k;
    double max_r = 0;
    for (double r : f.r) max_r = std::max(max_r, std::abs(r));
    for (int64_t t = 0; t < rows; ++t) {
      double l1 = 0;
      for (int64_t i = 0; i < n; ++i) l1 += std::abs(x[size_t(t * n + i)]);
      // Tolerance: the fast path rounds in fp32 once per butterfly stage (k), once for 1/√p and once per term of the
      // block mix (m); every intermediate is bounded by max|R| · Σ|x| (|S| entries are 1/√p <= 1), so the error is
      // at most (k + m + 2) · 2^-24 · max|R| · Σ|x|; the reference's fp32 entries add 2^-24 relative per product.
      // Twice that bound.
      const double tol = 2.0 * double(k + m + 3) * std::ldexp(1.0, -24) * std::max(1.0, max_r) * l1;
      for (int64_t i = 0; i < n; ++i) {
        CAPTURE(t, i);
        CHECK(std::abs(double(fast[size_t(t * n + i)]) - double(ref[size_t(t * n + i)])) <= tol);
      }
    }
  }
}

TEST_CASE("hadamard_rotate refuses factors that do not describe a rotation", "[kernels][hadamard]") {
  HadamardFactors f;
  f.p = 6;
  f.m = 1;
  f.signs.assign(6, 1.0f);
  f.r = {1.0};
  std::vector<float> x(6);
  CHECK_THROWS_WITH(hadamard_rotate(f, x.data(), 1), Catch::Contains("not a power of two"));
  f.p = 4;
  CHECK_THROWS_WITH(hadamard_rotate(f, x.data(), 1), Catch::Contains("expected 4 signs"));
}
