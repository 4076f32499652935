#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/int_linear.h"

namespace ptq::kernels {

void check_int_linear_args(const IntWeights& w, const IntActivations& x, bool need_scales);  // int_linear.cpp

namespace {

// acc[g] for token t, row r: plain loops in int64 (no bound needed).
void group_sums(const IntWeights& w, const IntActivations& x, int64_t t, int64_t r, int64_t* acc) {
  const int64_t width = w.k / w.groups;
  for (int64_t g = 0; g < w.groups; ++g) {
    int64_t s = 0;
    for (int64_t j = g * width; j < (g + 1) * width; ++j) s += int64_t(x.c[t * w.k + j]) * int64_t(w.w[r * w.k + j]);
    acc[g] = s;
  }
}

}  // namespace

void act_codes_ref(const ActCodes& p, const float* x, int64_t m, int64_t x_cols, int64_t k, const int32_t* perm,
                   int16_t* codes, float* a) {
  if (x_cols <= 0 || k <= 0 || (perm == nullptr && k != x_cols))
    throw std::invalid_argument("act_codes_ref: " + std::to_string(k) + " codes of rows of " + std::to_string(x_cols) +
                                " columns without a column map");
  for (int64_t t = 0; t < m; ++t) {
    const float* xr = x + t * x_cols;
    grid_math::ActGrid g = p.grid;
    if (p.per_token) {
      float mn = xr[0], mx = xr[0];
      for (int64_t j = 1; j < x_cols; ++j) {
        mn = std::min(mn, xr[j]);
        mx = std::max(mx, xr[j]);
      }
      g = grid_math::act_grid(mn, mx, p.sym, p.clip, p.qmax);
    }
    a[t] = g.scale;
    bool finite = std::isfinite(g.scale);
    for (int64_t j = 0; j < k; ++j) {
      const float c = grid_math::act_code(xr[perm != nullptr ? perm[j] : j], g, p.qmin, p.qmax);
      finite = finite && std::isfinite(c);
      codes[t * k + j] = finite ? int16_t(c) : int16_t(0);
    }
    if (!finite)
      throw std::invalid_argument("activation-quantized linear: its input holds NaN or Inf (token " +
                                  std::to_string(t) + ")");
  }
}

void int_linear_acc_ref(const IntWeights& w, const IntActivations& x, int64_t* acc) {
  check_int_linear_args(w, x, false);
  for (int64_t t = 0; t < x.m; ++t)
    for (int64_t r = 0; r < w.n; ++r) group_sums(w, x, t, r, acc + (t * w.n + r) * w.groups);
}

void int_linear_ref(const IntWeights& w, const IntActivations& x, float* y, const float* bias) {
  check_int_linear_args(w, x, true);
  // Built with -ffp-contract=off (CMakeLists.txt), as the vector kernels: the same roundings in the same order.
#pragma omp parallel
  {
  std::vector<int64_t> acc(w.groups);
#pragma omp for schedule(static)
  for (int64_t r = 0; r < w.n; ++r)
    for (int64_t t = 0; t < x.m; ++t) {
      group_sums(w, x, t, r, acc.data());
      double sum = 0;
      for (int64_t g = 0; g < w.groups; ++g) sum += double(w.s[r * w.groups + g]) * double(acc[g]);
      float v = float(sum * double(x.per_token ? x.a[t] : x.a[0]));
      if (bias != nullptr) v += bias[r];
      y[t * w.n + r] = v;
    }
  }
}

}  // namespace ptq::kernels
