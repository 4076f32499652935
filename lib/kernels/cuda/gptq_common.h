// What one CUDA thread of the GPTQ kernels (gptq.cu) computes, as functions compiled by nvcc and by the host compiler:
// gptq_ops.cpp's host emulation runs them over every thread of each launch, in launch order, on the CPU. Every
// multiply-add is an explicit fma (and every other multiply mul_rn), so the device and the emulation round alike.
//
// Launch sequence of GptqOps::inverse_cholesky_upper (a, x: the two n x n double halves of `work`):
//   load_reversed     (i, m) all          a = J (H + damp I) J
//   cholesky_step j   (i, m), j < m <= i  for j = 0 .. n-2: the right-looking update by the unscaled column j
//   cholesky_scale    (i, j), i > j       a[i][j] /= √a[j][j]
//   cholesky_diagonal j                   a[j][j] = √a[j][j], or the failure flag where a[j][j] is not > 0
//   identity          (i, c) all          x = I
//   inverse_step k    (i, c), c <= k < i  for k = 0 .. n-2: forward substitution, x's rows not yet divided by L_kk
//   write_u           (r, s) all          U = J L⁻¹ J as fp32 (the division by L_pp done here)
#pragma once

#include <cmath>
#include <cstdint>

#include "core/grid_math.h"
#include "core/host_device.h"
#include "kernels/gptq_ops.h"

namespace ptq::kernels::cuda {

constexpr int kGptqRows = 64;                      // sweep: rows (threads) per block
constexpr int kGemmTile = 64, kGemmDepth = 16;     // gemm_at_b: a 64 x 64 tile of C per block, k in steps of 16
constexpr int kGemmThreads = 256;                  // 16 x 16 threads, 4 x 4 elements of C each

// ---- gemm_at_b ----------------------------------------------------------------------------------------------------

// The dot product of C[i][j] over t = t0 .. t1 - 1 (in order) added to acc.
PTQ_HD float gemm_at_b_dot(int64_t i, int64_t j, int64_t t0, int64_t t1, const float* a, int64_t lda, const float* b,
                           int64_t ldb, float acc) {
  for (int64_t t = t0; t < t1; ++t) acc = fmaf(a[t * lda + i], b[t * ldb + j], acc);
  return acc;
}

// C[i][j] = beta · C[i][j] + alpha · acc (C is not read when beta is 0).
PTQ_HD void gemm_at_b_store(float alpha, float acc, float beta, float* c) {
  *c = beta == 0 ? mul_rn(alpha, acc) : fmaf(alpha, acc, mul_rn(beta, *c));
}

// ---- inverse_cholesky_upper ---------------------------------------------------------------------------------------

PTQ_HD void load_reversed(const float* h, int64_t n, double damp, int64_t i, int64_t m, double* a) {
  const double v = h[(n - 1 - i) * n + (n - 1 - m)];
  a[i * n + m] = i == m ? v + damp : v;
}

// a[i][m] -= a[i][j] · a[m][j] / a[j][j]: after step j - 1 the pivot a[j][j] and column j are final (unscaled).
PTQ_HD void cholesky_step(double* a, int64_t n, int64_t j, int64_t i, int64_t m) {
  a[i * n + m] = fma(-a[i * n + j], a[m * n + j] / a[j * n + j], a[i * n + m]);
}

PTQ_HD void cholesky_scale(double* a, int64_t n, int64_t i, int64_t j) { a[i * n + j] /= sqrt(a[j * n + j]); }

PTQ_HD void cholesky_diagonal(double* a, int64_t n, int64_t j, int* failed) {
  const double p = a[j * n + j];
  if (!(p > 0) || !(p < HUGE_VAL)) *failed = 1;
  a[j * n + j] = sqrt(p);
}

// x = L⁻¹ by forward substitution, row k of x still undivided by L_kk until write_u: x[i][c] -= L_ik · x[k][c] / L_kk.
PTQ_HD void inverse_step(const double* l, double* x, int64_t n, int64_t k, int64_t i, int64_t c) {
  x[i * n + c] = fma(-l[i * n + k], x[k * n + c] / l[k * n + k], x[i * n + c]);
}

// U[r][s] = (L⁻¹)[p][q], p = n-1-r, q = n-1-s: upper, (L⁻¹)[p][q] = x[p][q] / L_pp.
PTQ_HD void write_u(const double* l, const double* x, int64_t n, int64_t r, int64_t s, float* u) {
  const int64_t p = n - 1 - r, q = n - 1 - s;
  u[r * n + s] = r <= s ? float(x[p * n + q] / l[p * n + p]) : 0.0f;
}

// ---- the sweep ----------------------------------------------------------------------------------------------------

// Row r of columns [i1, i2) of the sweep. col(i) is a reference to the row's value of column i of the block (the
// kernel's shared memory), loaded from s.wt before the call and left stale after it (wt's block columns are not read
// again). A group starting at i reads columns past i2 from s.wt: gptq_device_block makes that happen only at i == i1,
// when they hold no update of this block.
template <class Column>
PTQ_HD void sweep_row(const GptqSweep& s, int64_t r, int64_t i1, int64_t i2, const Column& col) {
  const int64_t out = s.out;
  double loss = 0;
  for (int64_t i = i1; i < i2; ++i) {
    const int64_t g = s.column_group[i] * out + r;
    if (s.grids_at_starts && i % s.width == 0) {
      const int64_t end = i + s.width < s.in ? i + s.width : s.in;
      const GridParams p = grid_math::find_grid(
          [&](int64_t k) -> float { return i + k < i2 ? col(i + k) : s.wt[(i + k) * out + r]; }, end - i, s.bits,
          s.sym, s.mse);
      s.scale[g] = p.scale;
      s.inv_scale[g] = p.inv_scale;
      s.zero[g] = p.zero;
    }
    GridParams p;
    p.scale = s.scale[g];
    p.inv_scale = s.inv_scale[g];
    p.zero = s.zero[g];
    const float x = col(i);
    const int q = grid_math::quantize_code(x, p, s.bits);
    const float diff = x - grid_math::dequantize_code(q, p), d = s.u[i * s.in + i];
    loss += mul_rn(double(diff), double(diff)) / mul_rn(double(d), double(d)) / 2;
    const float e = diff / d;
    s.codes[i * out + r] = uint8_t(q);
    s.err[(i - i1) * out + r] = e;
    const float* ui = s.u + i * s.in;
    for (int64_t j = i + 1; j < i2; ++j) col(j) = fmaf(-e, ui[j], col(j));
  }
  s.loss[r] += loss;
}

}  // namespace ptq::kernels::cuda
