#include "kernels/hadamard.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace ptq::kernels {

void check_hadamard_factors(const HadamardFactors& f) {
  if (f.p < 1 || (f.p & (f.p - 1)) != 0)
    throw std::invalid_argument("hadamard_rotate: p = " + std::to_string(f.p) + " is not a power of two");
  if (f.m < 1) throw std::invalid_argument("hadamard_rotate: m = " + std::to_string(f.m) + " must be >= 1");
  if (int64_t(f.signs.size()) != f.p || int64_t(f.r.size()) != f.m * f.m)
    throw std::invalid_argument("hadamard_rotate: expected " + std::to_string(f.p) + " signs and " +
                                std::to_string(f.m * f.m) + " entries of R, got " + std::to_string(f.signs.size()) +
                                " and " + std::to_string(f.r.size()));
}

namespace {

// One row: x ← x · Q through z (scratch, n floats).
void rotate_row(const HadamardFactors& f, float* x, float* z) {
  const int64_t p = f.p, m = f.m;
  const float scale = 1.0f / std::sqrt(static_cast<float>(p));
  for (int64_t a = 0; a < m; ++a) {
    float* v = z + a * p;
    const float* in = x + a * p;
    for (int64_t i = 0; i < p; ++i) v[i] = in[i] * f.signs[size_t(i)];
    // Sylvester butterflies: (u, w) -> (u + w, u - w) across distance h.
    for (int64_t h = 1; h < p; h *= 2)
      for (int64_t base = 0; base < p; base += 2 * h)
        for (int64_t i = base; i < base + h; ++i) {
          const float u = v[i], w = v[i + h];
          v[i] = u + w;
          v[i + h] = u - w;
        }
    for (int64_t i = 0; i < p; ++i) v[i] *= scale;
  }
  if (m == 1) {
    const float r0 = static_cast<float>(f.r[0]);
    for (int64_t i = 0; i < p; ++i) x[i] = r0 * z[i];
    return;
  }
  for (int64_t b = 0; b < m; ++b) {
    float* y = x + b * p;
    for (int64_t j = 0; j < p; ++j) y[j] = 0.0f;
    for (int64_t a = 0; a < m; ++a) {
      const float rab = static_cast<float>(f.r[size_t(a * m + b)]);
      const float* v = z + a * p;
      for (int64_t j = 0; j < p; ++j) y[j] += rab * v[j];
    }
  }
}

}  // namespace

void hadamard_rotate(const HadamardFactors& f, float* x, int64_t rows) {
  check_hadamard_factors(f);
  const int64_t n = f.n();
#pragma omp parallel if (rows > 1)
  {
    std::vector<float> z(size_t(n), 0.0f);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < rows; ++t) rotate_row(f, x + t * n, z.data());
  }
}

void hadamard_rotate_ref(const HadamardFactors& f, const float* x, float* y, int64_t rows) {
  check_hadamard_factors(f);
  const int64_t p = f.p, m = f.m, n = f.n();
  const double inv_sqrt = 1.0 / std::sqrt(static_cast<double>(p));
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t col = 0; col < n; ++col) {
      const int64_t b = col / p, j = col % p;
      double sum = 0.0;
      for (int64_t k = 0; k < n; ++k) {
        const int64_t a = k / p, i = k % p;
        const double h = (__builtin_popcountll(uint64_t(i & j)) & 1) != 0 ? -1.0 : 1.0;
        const float q = static_cast<float>(f.r[size_t(a * m + b)] * (double(f.signs[size_t(i)]) * inv_sqrt * h));
        sum += double(x[t * n + k]) * double(q);
      }
      y[t * n + col] = static_cast<float>(sum);
    }
}

}  // namespace ptq::kernels
