// What one CUDA thread of the integer linear kernels (int_linear.cu) computes, compiled by nvcc and by the host
// compiler (the host emulation in tests/kernels/test_cuda_linear.cpp). Codes and weights are signed bytes, four
// consecutive columns per 32-bit word (dword d holds columns 4d .. 4d+3, byte b = column 4d + b).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/host_device.h"
#include "kernels/cuda/mma_layout.h"
#include "kernels/int_linear.h"

namespace ptq::kernels::cuda {

// acc + Σ_b a.byte[b] · b.byte[b], bytes signed: the dp4a instruction (exact in int32).
PTQ_HD int32_t dot4(uint32_t a, uint32_t b, int32_t acc) {
#if defined(__CUDA_ARCH__)
  return __dp4a(int(a), int(b), acc);
#else
  for (int i = 0; i < 4; ++i) acc += int32_t(int8_t(uint8_t(a >> (8 * i)))) * int32_t(int8_t(uint8_t(b >> (8 * i))));
  return acc;
#endif
}

// One lane's share of a group's sum: dwords d0 + lane, d0 + lane + lanes, ... below d1 of a weight row and a token.
PTQ_HD int32_t group_partial(const uint32_t* w_row, const uint32_t* c_row, int64_t d0, int64_t d1, int lane,
                             int lanes) {
  int32_t acc = 0;
  for (int64_t d = d0 + lane; d < d1; d += lanes) acc = dot4(w_row[d], c_row[d], acc);
  return acc;
}

// int_linear_ref's epilogue, one group at a time: sum + double(s) · double(acc), rounded as two separate operations
// (no fused multiply-add on either side, as int_linear_ref.cpp, built with -ffp-contract=off).
PTQ_HD double epilogue_add(double sum, float s, int32_t acc) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(sum, __dmul_rn(double(s), double(acc)));
#else
  const volatile double p = double(s) * double(acc);  // volatile: never contracted with the add
  return sum + p;
#endif
}

// y = float(sum · a) (+ bias) as int_linear_ref.
PTQ_HD float epilogue_finish(double sum, float a, const float* bias, int64_t r) {
#if defined(__CUDA_ARCH__)
  float v = float(__dmul_rn(sum, double(a)));
#else
  float v = float(sum * double(a));
#endif
  return bias != nullptr ? v + bias[r] : v;
}

// ---- activation codes (act_codes): one block of kActCodeThreads per token --------------------------------------------

constexpr int kActCodeThreads = 256;

// The lane's minimum and maximum over columns lane, lane + lanes, ... of a row (+inf / -inf where it has none; a NaN
// is skipped, where act_codes_ref throws): their reduction over the lanes is the row's, in any order.
PTQ_HD void act_row_range(const float* xr, int64_t k, int lane, int lanes, float& mn, float& mx) {
  mn = HUGE_VALF;
  mx = -HUGE_VALF;
  for (int64_t j = lane; j < k; j += lanes) {
    mn = fminf(mn, xr[j]);
    mx = fmaxf(mx, xr[j]);
  }
}

// Whether a token's grid and codes are what act_codes_ref accepts: a finite step, no NaN code (a NaN input; an Inf
// input clamps to the grid's end on a finite step, as there). Where not, act_codes_ref throws and the device kernel
// writes 0 codes and sets its `nonfinite` flag (act_codes).
PTQ_HD bool act_code_valid(float v) { return v == v && v - v == 0.0f; }

// The byte of column j's code (columns in group order through perm); for a NaN code, 0, and *nonfinite = 1 where
// nonfinite is not null.
PTQ_HD int8_t act_code_byte(const ActCodes& p, const grid_math::ActGrid& g, const float* xr, const int32_t* perm,
                            int64_t j, int* nonfinite = nullptr) {
  const float c = grid_math::act_code(xr[perm != nullptr ? perm[j] : j], g, p.qmin, p.qmax);
  if (act_code_valid(c)) return int8_t(c);
  if (nonfinite != nullptr) *nonfinite = 1;
  return 0;
}

// ---- tensor cores: mma.sync m16n8k32, s8 x s8 -> s32 (sm_80 and later) --------------------------------------------
//
// The int_linear GEMM on tensor cores multiplies weight rows (A, 16 x 32, row-major) by token codes (B, 32 x 8,
// "col": column t is token t's 32 codes), both read as dwords straight from their row-major byte layouts (fragment
// layouts: mma_layout.h).

// Dword k / 4 of row `row` of a [rows, kd dwords] matrix (columns k .. k + 3), 0 past the last row.
PTQ_HD uint32_t fragment_dword(const uint32_t* m, int64_t kd, int64_t rows, int64_t row, int64_t k) {
  return row < rows ? m[row * kd + k / 4] : 0u;
}

// A warp's fragments for one 32-column step at column k0: rows r0 .. r0 + 31 (two A tiles), tokens t0 .. t0 + 31
// (four B tiles).
struct MmaFragments {
  uint32_t a[2][4], b[4][2];
};
PTQ_HD void load_mma_fragments(const uint32_t* w, int64_t n, const uint32_t* c, int64_t m, int64_t kd, int64_t r0,
                               int64_t t0, int64_t k0, int lane, MmaFragments& f) {
  PTQ_UNROLL for (int i = 0; i < 2; ++i)
    PTQ_UNROLL for (int reg = 0; reg < 4; ++reg)
      f.a[i][reg] = fragment_dword(w, kd, n, r0 + 16 * i + mma_a_row(lane, reg), k0 + mma_a_col(lane, reg));
  PTQ_UNROLL for (int j = 0; j < 4; ++j)
    PTQ_UNROLL for (int reg = 0; reg < 2; ++reg)
      f.b[j][reg] = fragment_dword(c, kd, m, t0 + 8 * j + mma_b_col(lane), k0 + mma_b_row(lane, reg));
}

// At a group's end: each accumulator's exact int32 sum folded into its double sum with the row's step, then zeroed.
PTQ_HD void fold_mma_group(int32_t (&acc)[2][4][4], double (&sum)[2][4][4], const float* s, int64_t n, int64_t groups,
                           int64_t g, int64_t r0, int lane) {
  PTQ_UNROLL for (int i = 0; i < 2; ++i)
    PTQ_UNROLL for (int j = 0; j < 4; ++j)
      PTQ_UNROLL for (int reg = 0; reg < 4; ++reg) {
        const int64_t r = r0 + 16 * i + mma_c_row(lane, reg);
        sum[i][j][reg] = epilogue_add(sum[i][j][reg], r < n ? s[r * groups + g] : 0.0f, acc[i][j][reg]);
        acc[i][j][reg] = 0;
      }
}

PTQ_HD void store_mma_tile(const double (&sum)[2][4][4], int64_t n, int64_t m, int64_t r0, int64_t t0, const float* a,
                           bool per_token, const float* bias, int lane, float* y) {
  PTQ_UNROLL for (int i = 0; i < 2; ++i)
    PTQ_UNROLL for (int j = 0; j < 4; ++j)
      PTQ_UNROLL for (int reg = 0; reg < 4; ++reg) {
        const int64_t r = r0 + 16 * i + mma_c_row(lane, reg), t = t0 + 8 * j + mma_c_col(lane, reg);
        if (r < n && t < m) y[t * n + r] = epilogue_finish(sum[i][j][reg], per_token ? a[t] : a[0], bias, r);
      }
}

// Whether the tensor-core GEMM takes a weight of kd dwords in `groups` groups: whole 32-column steps per group.
PTQ_HD bool int_mma_supports(int64_t kd, int64_t groups) { return (kd / groups) % 8 == 0; }

}  // namespace ptq::kernels::cuda
