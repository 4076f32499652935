#include "model/hadamard.h"

#include <bitset>
#include <cmath>
#include <random>
#include <vector>

#include <ATen/ATen.h>

#include "core/error.h"
#include "io/safetensors.h"

namespace ptq {

namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

// Standard normal pairs by Box–Muller from 53-bit uniforms: u1 in (0, 1] (log(0) excluded), u2 in [0, 1).
class Gaussian {
 public:
  explicit Gaussian(std::mt19937_64& rng) : rng_(rng) {}
  double next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = static_cast<double>((rng_() >> 11) + 1) * 0x1.0p-53;
    const double u2 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1)), t = kTwoPi * u2;
    spare_ = r * std::sin(t);
    has_spare_ = true;
    return r * std::cos(t);
  }

 private:
  std::mt19937_64& rng_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

// Q factor (row-major m×m) of a Gaussian m×m matrix with a positive diagonal in R: Gram–Schmidt over the
// columns, two modified passes per column.
std::vector<double> random_orthogonal(int64_t m, std::mt19937_64& rng) {
  std::vector<double> g(static_cast<size_t>(m * m));
  Gaussian gauss(rng);
  for (double& x : g) x = gauss.next();
  auto cell = [&](int64_t r, int64_t c) -> double& { return g[static_cast<size_t>(r * m + c)]; };
  for (int64_t j = 0; j < m; ++j) {
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t i = 0; i < j; ++i) {
        double dot = 0.0;
        for (int64_t r = 0; r < m; ++r) dot += cell(r, i) * cell(r, j);
        for (int64_t r = 0; r < m; ++r) cell(r, j) -= dot * cell(r, i);
      }
    }
    double norm = 0.0;
    for (int64_t r = 0; r < m; ++r) norm += cell(r, j) * cell(r, j);
    norm = std::sqrt(norm);
    // A Gaussian column in the span of the previous ones has probability 0; fail loudly rather than divide.
    if (!(norm > 0.0)) fail_input("random_hadamard: degenerate Gaussian draw for the {}x{} factor", m, m);
    for (int64_t r = 0; r < m; ++r) cell(r, j) /= norm;
  }
  return g;
}

}  // namespace

kernels::HadamardFactors random_hadamard_factors(int64_t n, uint64_t seed) {
  if (n < 1) fail_input("random_hadamard: size {} must be >= 1", n);
  kernels::HadamardFactors f;
  while ((n / f.p) % 2 == 0) f.p *= 2;
  f.m = n / f.p;
  std::mt19937_64 rng(seed);
  f.signs.resize(static_cast<size_t>(f.p));
  for (float& s : f.signs) s = (rng() >> 63) != 0 ? -1.0f : 1.0f;
  f.r = f.m > 1 ? random_orthogonal(f.m, rng) : std::vector<double>{1.0};
  return f;
}

at::Tensor random_hadamard(int64_t n, uint64_t seed) {
  const kernels::HadamardFactors f = random_hadamard_factors(n, seed);
  const int64_t p2 = f.p, m = f.m;
  // Signed, normalized Sylvester Hadamard S[i][j] = s_i (-1)^popcount(i&j) / √(2^k).
  const double inv_sqrt = 1.0 / std::sqrt(static_cast<double>(p2));
  at::Tensor q = at::empty({n, n}, at::kFloat);
  float* out = q.data_ptr<float>();
  for (int64_t a = 0; a < m; ++a)
    for (int64_t i = 0; i < p2; ++i) {
      float* row = out + (a * p2 + i) * n;
      const double si = double(f.signs[static_cast<size_t>(i)]) * inv_sqrt;
      for (int64_t b = 0; b < m; ++b) {
        const double rab = f.r[static_cast<size_t>(a * m + b)];
        for (int64_t j = 0; j < p2; ++j) {
          const double h = std::bitset<64>(static_cast<uint64_t>(i & j)).count() % 2 != 0 ? -si : si;
          row[b * p2 + j] = static_cast<float>(rab * h);
        }
      }
    }
  return q;
}

at::Tensor apply_rotation(const at::Tensor& x, const at::Tensor& Q) {
  if (!Q.defined() || Q.dim() != 2 || Q.size(0) != Q.size(1))
    fail_input("apply_rotation: the rotation must be a square matrix, got shape {}",
               Q.defined() ? shape_str(Q.sizes().vec()) : "undefined");
  if (!x.defined() || x.dim() < 1 || x.size(-1) != Q.size(0))
    fail_input("apply_rotation: input's last dimension must be {} (the rotation's size), got shape {}", Q.size(0),
               x.defined() ? shape_str(x.sizes().vec()) : "undefined");
  return at::matmul(x, Q.to(x.scalar_type()));
}

}  // namespace ptq
