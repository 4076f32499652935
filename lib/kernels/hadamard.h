// The online rotation before down_proj (QuaRot-style, lib/model/hadamard.h builds the factors) applied as a fast
// Walsh–Hadamard transform instead of a dense [n, n] matrix product.
//
//   Q = R ⊗ S,  Q[a·p + i][b·p + j] = R[a][b] · S[i][j],  n = m·p, p = 2^k
//   S = diag(signs) · H_p / √p,  H_p[i][j] = (-1)^popcount(i & j)   (Sylvester)
//   y = x · Q, per row of x:  z_a = ((x_a ⊙ signs) · H_p) / √p  for each block a of p columns (an in-place p-point
//   FWHT: k stages of p/2 butterflies), then y_b = Σ_a R[a][b] · z_a  (m² · p multiply-adds).
// Work per row: n·log2(p) adds + n·m multiply-adds, against n² for the dense product; memory: p + m² floats, against
// n² (5504-wide: 0.03 MB instead of 121 MB per layer). The sums run in fp32 in a fixed order (the same on every
// machine and thread count); the dense product of the reference differs by rounding only (tests/kernels).
#pragma once

#include <cstdint>
#include <vector>

namespace ptq::kernels {

struct HadamardFactors {
  int64_t p = 1;             // power of two
  int64_t m = 1;             // odd
  std::vector<float> signs;  // [p], each ±1
  std::vector<double> r;     // [m, m] row-major, orthogonal ([1.0] when m == 1); the mix runs on float(r)
  int64_t n() const { return p * m; }
};

// Throws std::invalid_argument unless p is a power of two, m >= 1 and the vectors have p and m·m entries.
void check_hadamard_factors(const HadamardFactors& f);

// x [rows, n] ← x · Q, in place, OpenMP threads over rows.
void hadamard_rotate(const HadamardFactors& f, float* x, int64_t rows);
// Scalar twin: the dense product with Q's entries formed as float(R[a][b] · signs[i] · (-1)^popcount(i&j) / √p),
// accumulated in double. y [rows, n] (not in place).
void hadamard_rotate_ref(const HadamardFactors& f, const float* x, float* y, int64_t rows);

}  // namespace ptq::kernels
