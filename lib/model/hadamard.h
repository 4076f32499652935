// Seeded random orthogonal matrices of Hadamard type for QuaRot-style rotations (lib/transforms/rotate.h).
//
// Construction of random_hadamard(n, seed), in double, cast to fp32 at the end. Write n = 2^k · m, m odd.
//   * Signed Walsh–Hadamard part: S = diag(s) · H / √(2^k), H the Sylvester matrix H[i][j] = (-1)^popcount(i & j)
//     and s ∈ {±1}^(2^k) random signs (the randomized Hadamard of QuaRot's random_hadamard_matrix).
//   * m = 1 (n a power of two): Q = S, every entry is ±1/√n.
//   * m > 1: Q = R ⊗ S (Kronecker product, Q[a·2^k + i][b·2^k + j] = R[a][b] · S[i][j]) with R a random m×m
//     orthogonal matrix: the Q factor of an m×m standard Gaussian matrix G with the signs fixed so that the
//     triangular factor has a positive diagonal (then R is Haar-distributed). Computed by Gram–Schmidt on G's
//     columns, each orthogonalised twice ("twice is enough" for orthogonality to rounding), which yields
//     exactly that sign convention. QuaRot uses hand-made Hadamard matrices of sizes 12, 20, 28, 40, 172, ...
//     here; a random orthogonal factor needs no table, and it also spreads one channel over all n (densely
//     instead of with equal magnitudes). Real models have m <= 43 (11008 = 2^8·43), so the O(m³) is nothing.
//   The kron of two orthogonal matrices is orthogonal, so QᵀQ = I up to the fp32 rounding of the entries.
//   Each entry is computed in double and rounded once to fp32.
//
// Determinism: the signs and the Gaussians come from std::mt19937_64(seed) (its output is fixed by the C++
// standard) through our own Box–Muller, never from LibTorch's generator, and the Gram–Schmidt is plain C++;
// so the same (n, seed) gives a bit-identical matrix across LibTorch versions and runs. The draw order is:
// 2^k sign bits, then m·m Gaussians (row-major), consumed only when m > 1.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "kernels/hadamard.h"

namespace ptq {

// Orthogonal fp32 [n, n] matrix as described above. n >= 1; throws std::invalid_argument otherwise.
at::Tensor random_hadamard(int64_t n, uint64_t seed);
// The same Q as its factors (signs, R; kernels/hadamard.h), for the fast transform kernels::hadamard_rotate: the
// entries random_hadamard writes are float(R[a][b] · signs[i] · (-1)^popcount(i&j) / √p), computed from these.
kernels::HadamardFactors random_hadamard_factors(int64_t n, uint64_t seed);

// x · Q over the last dimension: x [..., n], Q [n, n] -> [..., n]. Throws std::invalid_argument on a width
// mismatch.
at::Tensor apply_rotation(const at::Tensor& x, const at::Tensor& Q);

}  // namespace ptq
