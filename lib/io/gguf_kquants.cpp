// ggml's K-quants and Q5_0/Q5_1, transcribed from llama.cpp's ggml/src/ggml-quants.c (MIT) operation by operation:
// the same float expressions in the same order, the same integer truncations (uint8_t/int8_t stores of int results)
// and the same ties, so that the bytes equal llama-quantize's. Compiled with -ffp-contract=off (see the header).
#include "io/gguf_kquants.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/error.h"
#include "core/half.h"
#include "io/gguf.h"

namespace ptq {

namespace {

constexpr float kGroupMaxEps = 1e-15f;  // GROUP_MAX_EPS

// ggml's MIN/MAX macros (not std::min/max: they differ on which of two equal values, e.g. ±0, they return).
template <typename T>
inline T gmin(T a, T b) { return a < b ? a : b; }
template <typename T>
inline T gmax(T a, T b) { return a > b ? a : b; }

// Round to nearest, ties to even, for |fval| <= 4194303 (ggml's nearest_int: the float addition rounds).
inline int nearest_int(float fval) {
  const float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}

inline float h2f(uint16_t h) { return fp16_to_f32(h); }
inline uint16_t f2h(float f) { return f32_to_fp16(f); }

// The value of largest magnitude, sign kept (the first of equal magnitudes), 0 for an all-zero group.
float signed_absmax(const float* x, int n) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  return max;
}

// Symmetric codes L in [0, 2 nmax) with x ≈ scale * (L - nmax); rmse_type 1 weights by qw or x², searches 18 scales
// around nmax/max for the least weighted error.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, int rmse_type, const float* qw) {
  const float max = signed_absmax(x, n);
  if (std::fabs(max) < kGroupMaxEps) {  // all zero
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  if (rmse_type == 0) {
    for (int i = 0; i < n; ++i) {
      const int l = nearest_int(iscale * x[i]);
      L[i] = static_cast<int8_t>(nmax + gmax(-nmax, gmin(nmax - 1, l)));
    }
    return 1 / iscale;
  }
  bool return_early = false;
  if (rmse_type < 0) {
    rmse_type = -rmse_type;
    return_early = true;
  }
  auto weight = [&](int i) {
    return qw ? qw[i]
              : rmse_type == 1 ? x[i] * x[i]
              : rmse_type == 2 ? 1
              : rmse_type == 3 ? std::fabs(x[i])
                               : std::sqrt(std::fabs(x[i]));
  };
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = gmax(-nmax, gmin(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = weight(i);
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  if (return_early) return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = gmax(-nmax, gmin(nmax - 1, l));
      const float w = weight(i);
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + gmax(-nmax, gmin(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q3_K's sub-block scales: symmetric codes, then up to 5 passes moving single codes while the x²-weighted fit improves.
float make_q3_quants(int n, int nmax, const float* x, int8_t* L, bool do_rmse) {
  const float max = signed_absmax(x, n);
  if (std::fabs(max) < kGroupMaxEps) {  // all zero
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = -nmax / max;
  if (do_rmse) {
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = gmax(-nmax, gmin(nmax - 1, l));
      L[i] = static_cast<int8_t>(l);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
      int n_changed = 0;
      for (int i = 0; i < n; ++i) {
        const float w = x[i] * x[i];
        float slx = sumlx - w * x[i] * L[i];
        if (slx > 0) {
          float sl2 = suml2 - w * L[i] * L[i];
          int new_l = nearest_int(x[i] * sl2 / slx);
          new_l = gmax(-nmax, gmin(nmax - 1, new_l));
          if (new_l != L[i]) {
            slx += w * x[i] * new_l;
            sl2 += w * new_l * new_l;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
              L[i] = static_cast<int8_t>(new_l);
              sumlx = slx;
              suml2 = sl2;
              ++n_changed;
            }
          }
        }
      }
      if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
  }
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = gmax(-nmax, gmin(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
  }
  return 1 / iscale;
}

// Asymmetric codes L in [0, nmax] with x ≈ scale * L - the_min: the min-max grid, then nstep + 1 grids
// (rmin + rdelta * is + nmax) / (max - min), each refitted by weighted least squares; keeps the least weighted error
// (|diff| with use_mad). qkx2 (the reference rounding) always has weights; qkx3 (the weighted path) falls back to x².
// One body for both: they differ only in that fallback and in the max <= min test (qkx2: max == min).
float make_qkx_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, uint8_t* Laux,
                      float rmin, float rdelta, int nstep, bool use_mad, bool qkx3) {
  auto weight = [&](int i) { return weights ? weights[i] : x[i] * x[i]; };
  float min = x[0];
  float max = x[0];
  float sum_w = weight(0);
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weight(i);
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (qkx3 ? max <= min : max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(gmax(0, gmin(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    const float w = weight(i);
    best_error += w * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = gmax(0, gmin(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weight(i);
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        const float w = weight(i);
        cur_error += w * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Non-negative codes L in [0, nmax] of the sub-block scales/mins (x >= 0) with weights: 9 candidate scales, then up to
// 5 passes moving single codes while the weighted fit improves.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = gmax(max, x[i]);
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    const float w = quant_weights[i];
    best_mse += w * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale_is * x[i]);
      l = gmin(nmax, l);
      const float diff = x[i] - scale_is * l;
      const float w = quant_weights[i];
      mse += w * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = gmin(nmax, l);
    L[i] = static_cast<uint8_t>(l);
    const float w = quant_weights[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = quant_weights[i];
      float slx = sumlx - w * x[i] * L[i];
      float sl2 = suml2 - w * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = gmin(nmax, new_l);
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

// ---- packing shared by the reference and weighted paths -------------------------------------------------------------

// 2-bit codes of a 256-block into qs (Q2_K and the low bits of Q3_K).
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK_K; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

// Q2_K: requantize with the stored scales (d * sc, dm * m) and pack.
void finish_q2_K(const float* x, BlockQ2_K& y, uint8_t* L, float dm_all, float mm_all) {
  for (int j = 0; j < kQK_K / 16; ++j) {
    const float d = dm_all * (y.scales[j] & 0xF);
    if (!d) continue;
    const float dm = mm_all * (y.scales[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      int l = nearest_int((x[16 * j + ii] + dm) / d);
      l = gmax(0, gmin(3, l));
      L[16 * j + ii] = static_cast<uint8_t>(l);
    }
  }
  pack_2bit(L, y.qs);
}

// Q3_K: 6-bit scale codes Ls (0..63) into scales[12].
void pack_q3_scales(const int8_t* Ls, uint8_t* scales) {
  std::memset(scales, 0, 12);
  for (int j = 0; j < kQK_K / 16; ++j) {
    int l = Ls[j];
    if (j < 8) {
      scales[j] = static_cast<uint8_t>(l & 0xF);
    } else {
      scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
    }
    l >>= 4;
    scales[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
  }
}

// Q3_K: requantize with the stored scales, split off the high bit, pack.
void finish_q3_K(const float* x, BlockQ3_K& y, int8_t* L) {
  for (int j = 0; j < kQK_K / 16; ++j) {
    int8_t sc = static_cast<int8_t>(j < 8 ? y.scales[j] & 0xF : y.scales[j - 8] >> 4);
    sc = static_cast<int8_t>((sc | (((y.scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
    const float d = h2f(y.d) * sc;
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      int l = nearest_int(x[16 * j + ii] / d);
      l = gmax(-4, gmin(3, l));
      L[16 * j + ii] = static_cast<int8_t>(l + 4);
    }
  }
  std::memset(y.hmask, 0, kQK_K / 8);
  int m = 0;
  uint8_t hm = 1;
  for (int j = 0; j < kQK_K; ++j) {
    if (L[j] > 3) {
      y.hmask[m] |= hm;
      L[j] = static_cast<int8_t>(L[j] - 4);
    }
    if (++m == kQK_K / 8) {
      m = 0;
      hm = static_cast<uint8_t>(hm << 1);
    }
  }
  pack_2bit(reinterpret_cast<const uint8_t*>(L), y.qs);
}

// Q4_K / Q5_K: 6-bit scale and min codes into scales[12].
void pack_k4_scales(int j, uint8_t ls, uint8_t lm, uint8_t* scales) {
  if (j < 4) {
    scales[j] = ls;
    scales[j + 4] = lm;
  } else {
    scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
    scales[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
    scales[j - 0] |= static_cast<uint8_t>((lm >> 4) << 6);
  }
}

// Q4_K / Q5_K: requantize every 32-sub-block with its stored scale/min (codes 0..nmax).
template <typename Block>
void requantize_k4(const float* x, const Block& y, uint8_t* L, int nmax) {
  uint8_t sc, m;
  for (int j = 0; j < kQK_K / 32; ++j) {
    get_scale_min_k4(j, y.scales, &sc, &m);
    const float d = h2f(y.d) * sc;
    if (!d) continue;
    const float dm = h2f(y.dmin) * m;
    for (int ii = 0; ii < 32; ++ii) {
      int l = nearest_int((x[32 * j + ii] + dm) / d);
      l = gmax(0, gmin(nmax, l));
      L[32 * j + ii] = static_cast<uint8_t>(l);
    }
  }
}

void pack_k4(const uint8_t* L, BlockQ4_K& y) {
  uint8_t* q = y.qs;
  for (int j = 0; j < kQK_K; j += 64) {
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    q += 32;
  }
}

void pack_k4(const uint8_t* L, BlockQ5_K& y) {
  uint8_t* qh = y.qh;
  uint8_t* ql = y.qs;
  std::memset(qh, 0, kQK_K / 8);
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < kQK_K; n += 64) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] |= m1;
      }
      int l2 = L[n + j + 32];
      if (l2 > 15) {
        l2 -= 16;
        qh[j] |= m2;
      }
      ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
    m1 = static_cast<uint8_t>(m1 << 2);
    m2 = static_cast<uint8_t>(m2 << 2);
    ql += 32;
  }
}

// Q4_K / Q5_K reference rounding; nmax 15 or 31, make_qkx2_quants' search (rmin, nstep) per type.
template <typename Block>
void quantize_row_k4_ref(const float* x, Block* y, int64_t k, int nmax, float rmin, int nstep) {
  const int64_t nb = k / kQK_K;
  uint8_t L[kQK_K];
  uint8_t Laux[32];
  float weights[32];
  float mins[kQK_K / 32];
  float scales[kQK_K / 32];
  for (int64_t i = 0; i < nb; i++) {
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < kQK_K / 32; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = make_qkx_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false,
                                  false);
      const float scale = scales[j];
      if (scale > max_scale) max_scale = scale;
      const float min = mins[j];
      if (min > max_min) max_min = min;
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < kQK_K / 32; ++j) {
      uint8_t ls = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));
      uint8_t lm = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
      ls = gmin<uint8_t>(63, ls);
      lm = gmin<uint8_t>(63, lm);
      pack_k4_scales(j, ls, lm, y[i].scales);
    }
    y[i].d = f2h(max_scale / 63.f);
    y[i].dmin = f2h(max_min / 63.f);
    requantize_k4(x, y[i], L, nmax);
    pack_k4(L, y[i]);
    x += kQK_K;
  }
}

// Q4_K / Q5_K weighted rounding (quantize_row_q4_K_impl / _q5_K_impl); quant_weights may be null.
template <typename Block, int nmax>
void quantize_row_k4_impl(const float* x, Block* y, int64_t n_per_row, const float* quant_weights) {
  const int64_t nb = n_per_row / kQK_K;
  uint8_t L[kQK_K];
  uint8_t Laux[32];
  uint8_t Ls[kQK_K / 32];
  uint8_t Lm[kQK_K / 32];
  float weights[32];
  float sw[kQK_K / 32];
  float mins[kQK_K / 32];
  float scales[kQK_K / 32];
  for (int64_t i = 0; i < nb; i++) {
    float sum_x2 = 0;
    for (int l = 0; l < kQK_K; ++l) sum_x2 += x[l] * x[l];
    const float sigma2 = 2 * sum_x2 / kQK_K;
    const float av_x = std::sqrt(sigma2);
    for (int j = 0; j < kQK_K / 32; ++j) {
      if (quant_weights) {
        const float* qw = quant_weights + kQK_K * i + 32 * j;
        for (int l = 0; l < 32; ++l) weights[l] = qw[l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
      } else {
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      }
      float sumw = 0;
      for (int l = 0; l < 32; ++l) sumw += weights[l];
      sw[j] = sumw;
      scales[j] = make_qkx_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false,
                                  true);
    }
    const float d_block = make_qp_quants(kQK_K / 32, 63, scales, Ls, sw);
    const float m_block = make_qp_quants(kQK_K / 32, 63, mins, Lm, sw);
    for (int j = 0; j < kQK_K / 32; ++j) {
      // ggml's Q5_K clamps the codes to 63 here and Q4_K does not; they differ only where make_qp_quants saw a
      // negative input (its code then wraps in uint8_t), kept as ggml has it.
      const bool clamp = std::is_same_v<Block, BlockQ5_K>;
      pack_k4_scales(j, clamp ? gmin<uint8_t>(63, Ls[j]) : Ls[j], clamp ? gmin<uint8_t>(63, Lm[j]) : Lm[j], y[i].scales);
    }
    y[i].d = f2h(d_block);
    y[i].dmin = f2h(m_block);
    requantize_k4(x, y[i], L, nmax);
    pack_k4(L, y[i]);
    x += kQK_K;
  }
}

// Q6_K: one body for the reference (quant_weights null) and weighted rounding, as ggml's two are identical but for the
// weights handed to make_qx_quants.
void quantize_row_q6_K_impl(const float* x, BlockQ6_K* y, int64_t n_per_row, const float* quant_weights) {
  const int64_t nb = n_per_row / kQK_K;
  int8_t L[kQK_K];
  float scales[kQK_K / 16];
  for (int64_t i = 0; i < nb; i++) {
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      const float* qw = quant_weights ? quant_weights + kQK_K * i + 16 * ib : nullptr;
      scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1, qw);
    }
    const float max_scale = signed_absmax(scales, kQK_K / 16);
    if (std::fabs(max_scale) < kGroupMaxEps) {
      std::memset(&y[i], 0, sizeof(BlockQ6_K));
      y[i].d = f2h(0.f);
      x += kQK_K;
      continue;
    }
    const float iscale = -128.f / max_scale;
    y[i].d = f2h(1 / iscale);
    for (int ib = 0; ib < kQK_K / 16; ++ib) y[i].scales[ib] = static_cast<int8_t>(gmin(127, nearest_int(iscale * scales[ib])));
    for (int j = 0; j < kQK_K / 16; ++j) {
      const float d = h2f(y[i].d) * y[i].scales[j];
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int(x[16 * j + ii] / d);
        l = gmax(-32, gmin(31, l));
        L[16 * j + ii] = static_cast<int8_t>(l + 32);
      }
    }
    uint8_t* ql = y[i].ql;
    uint8_t* qh = y[i].qh;
    for (int j = 0; j < kQK_K; j += 128) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l + 0] & 0xF;
        const uint8_t q2 = L[j + l + 32] & 0xF;
        const uint8_t q3 = L[j + l + 64] & 0xF;
        const uint8_t q4 = L[j + l + 96] & 0xF;
        ql[l + 0] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                     ((L[j + l + 96] >> 4) << 6));
      }
      ql += 64;
      qh += 32;
    }
    x += kQK_K;
  }
}

void quantize_row_q2_K_impl(const float* x, BlockQ2_K* y, int64_t k, const float* quant_weights) {
  const int64_t nb = k / kQK_K;
  uint8_t L[kQK_K];
  uint8_t Laux[16];
  float mins[kQK_K / 16];
  float scales[kQK_K / 16];
  float sw[kQK_K / 16];
  float weight[16];
  uint8_t Ls[kQK_K / 16], Lm[kQK_K / 16];
  for (int64_t i = 0; i < nb; i++) {
    std::memset(sw, 0, sizeof(sw));
    float sumx2 = 0;
    for (int j = 0; j < kQK_K; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = sumx2 / kQK_K;
    for (int j = 0; j < kQK_K / 16; ++j) {
      const float* qw = quant_weights + kQK_K * i + 16 * j;
      for (int l = 0; l < 16; ++l) weight[l] = qw[l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      for (int l = 0; l < kQK_K / 16; ++l) sw[j] += weight[l];
      scales[j] = make_qkx_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false, true);
    }
    float dm = make_qp_quants(kQK_K / 16, 15, scales, Ls, sw);
    float mm = make_qp_quants(kQK_K / 16, 15, mins, Lm, sw);
    y[i].d = f2h(dm);
    y[i].dmin = f2h(mm);
    dm = h2f(y[i].d);
    mm = h2f(y[i].dmin);
    for (int j = 0; j < kQK_K / 16; ++j) y[i].scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    finish_q2_K(x, y[i], L, dm, mm);
    x += kQK_K;
  }
}

void quantize_row_q3_K_impl(const float* x, BlockQ3_K* y, int64_t n_per_row, const float* quant_weights) {
  const int64_t nb = n_per_row / kQK_K;
  int8_t L[kQK_K];
  float scales[kQK_K / 16];
  float weight[16];
  float sw[kQK_K / 16];
  int8_t Ls[kQK_K / 16];
  for (int64_t i = 0; i < nb; i++) {
    float sumx2 = 0;
    for (int j = 0; j < kQK_K; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = 2 * sumx2 / kQK_K;
    for (int j = 0; j < kQK_K / 16; ++j) {
      if (quant_weights) {
        const float* qw = quant_weights + kQK_K * i + 16 * j;
        for (int l = 0; l < 16; ++l) weight[l] = qw[l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      } else {
        for (int l = 0; l < 16; ++l) weight[l] = x[16 * j + l] * x[16 * j + l];
      }
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += weight[l];
      sw[j] = sumw;
      scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, weight);
    }
    const float d_block = make_qx_quants(kQK_K / 16, 32, scales, Ls, 1, sw);
    pack_q3_scales(Ls, y[i].scales);
    y[i].d = f2h(d_block);
    finish_q3_K(x, y[i], L);
    x += kQK_K;
  }
}

// Q4_0 / Q4_1 / Q5_0 / Q5_1 weighted rounding: weights qw * sqrt(sigma2 + x²) with sigma2 the row's mean square.
float row_sigma2(const float* x, int64_t n) {
  float sum_x2 = 0;
  for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / n;
}

void block_weights(const float* xb, const float* qw, float sigma2, float* weight) {
  for (int j = 0; j < 32; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
}

// The fifth bits of 32 codes as Q5_0/Q5_1 store them, and the low nibbles.
void pack_q5(const uint8_t* L, uint8_t* qs, uint8_t* qh_bytes) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const uint8_t xi0 = L[j];
    const uint8_t xi1 = L[j + 16];
    qs[j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
    qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
  }
  std::memcpy(qh_bytes, &qh, sizeof(qh));
}

// Q4_0 (nmax 8) and Q5_0 (nmax 16): symmetric blocks of 32 from make_qx_quants.
template <typename Block, int nmax>
void quantize_row_x0_impl(const float* x, Block* y, int64_t n_per_row, const float* quant_weights) {
  float weight[32];
  int8_t L[32];
  const float sigma2 = row_sigma2(x, n_per_row);
  for (int64_t ib = 0; ib < n_per_row / 32; ++ib) {
    const float* xb = x + 32 * ib;
    block_weights(xb, quant_weights + 32 * ib, sigma2, weight);
    const float d = make_qx_quants(32, nmax, xb, L, 1, weight);
    y[ib].d = f2h(d);
    if constexpr (std::is_same_v<Block, BlockQ5_0>) {
      pack_q5(reinterpret_cast<const uint8_t*>(L), y[ib].qs, y[ib].qh);
    } else {
      for (int j = 0; j < 16; ++j) y[ib].qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
    }
  }
}

// Q4_1 (nmax 15) and Q5_1 (nmax 31): asymmetric blocks of 32 from make_qkx3_quants.
template <typename Block, int nmax>
void quantize_row_x1_impl(const float* x, Block* y, int64_t n_per_row, const float* quant_weights) {
  float weight[32];
  uint8_t L[32], Laux[32];
  const float sigma2 = row_sigma2(x, n_per_row);
  for (int64_t ib = 0; ib < n_per_row / 32; ++ib) {
    const float* xb = x + 32 * ib;
    block_weights(xb, quant_weights + 32 * ib, sigma2, weight);
    float min;
    const float d = make_qkx_quants(32, nmax, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false, true);
    y[ib].d = f2h(d);
    y[ib].m = f2h(-min);
    if constexpr (std::is_same_v<Block, BlockQ5_1>) {
      pack_q5(L, y[ib].qs, y[ib].qh);
    } else {
      for (int j = 0; j < 16; ++j) y[ib].qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
    }
  }
}

// ggml's quantize_<type> driver: without weights the reference rounding over all rows at once, with them one row at
// a time (the weights index columns).
template <typename Block, int64_t QK, void (*Ref)(const float*, Block*, int64_t),
          void (*Impl)(const float*, Block*, int64_t, const float*)>
void quantize_rows(const float* src, void* dst, int64_t nrow, int64_t n_per_row, const float* quant_weights) {
  auto* y = static_cast<Block*>(dst);
  if (!quant_weights) {
    Ref(src, y, nrow * n_per_row);
    return;
  }
  for (int64_t row = 0; row < nrow; ++row) Impl(src + row * n_per_row, y + row * (n_per_row / QK), n_per_row, quant_weights);
}

}  // namespace

// ---- reference rounding ------------------------------------------------------------------------------------------

void quantize_row_q2_K_ref(const float* x, BlockQ2_K* y, int64_t k) {
  const int64_t nb = k / kQK_K;
  uint8_t L[kQK_K];
  uint8_t Laux[16];
  float weights[16];
  float mins[kQK_K / 16];
  float scales[kQK_K / 16];
  const float q4scale = 15.f;
  for (int64_t i = 0; i < nb; i++) {
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < kQK_K / 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = make_qkx_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true, false);
      const float scale = scales[j];
      if (scale > max_scale) max_scale = scale;
      const float min = mins[j];
      if (min > max_min) max_min = min;
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < kQK_K / 16; ++j) y[i].scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
      y[i].d = f2h(max_scale / q4scale);
    } else {
      for (int j = 0; j < kQK_K / 16; ++j) y[i].scales[j] = 0;
      y[i].d = f2h(0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < kQK_K / 16; ++j) y[i].scales[j] |= static_cast<uint8_t>(nearest_int(iscale * mins[j]) << 4);
      y[i].dmin = f2h(max_min / q4scale);
    } else {
      y[i].dmin = f2h(0.f);
    }
    finish_q2_K(x, y[i], L, h2f(y[i].d), h2f(y[i].dmin));
    x += kQK_K;
  }
}

void quantize_row_q3_K_ref(const float* x, BlockQ3_K* y, int64_t k) {
  const int64_t nb = k / kQK_K;
  int8_t L[kQK_K];
  float scales[kQK_K / 16];
  for (int64_t i = 0; i < nb; i++) {
    for (int j = 0; j < kQK_K / 16; ++j) scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j, true);
    const float max_scale = signed_absmax(scales, kQK_K / 16);
    std::memset(y[i].scales, 0, 12);
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      int8_t Ls[kQK_K / 16];
      for (int j = 0; j < kQK_K / 16; ++j) {
        int8_t l = static_cast<int8_t>(nearest_int(iscale * scales[j]));
        Ls[j] = static_cast<int8_t>(gmax<int>(-32, gmin<int>(31, l)) + 32);
      }
      pack_q3_scales(Ls, y[i].scales);
      y[i].d = f2h(1 / iscale);
    } else {
      y[i].d = f2h(0.f);
    }
    finish_q3_K(x, y[i], L);
    x += kQK_K;
  }
}

void quantize_row_q4_K_ref(const float* x, BlockQ4_K* y, int64_t k) { quantize_row_k4_ref(x, y, k, 15, -1.f, 20); }
void quantize_row_q5_K_ref(const float* x, BlockQ5_K* y, int64_t k) { quantize_row_k4_ref(x, y, k, 31, -0.5f, 15); }
void quantize_row_q6_K_ref(const float* x, BlockQ6_K* y, int64_t k) { quantize_row_q6_K_impl(x, y, k, nullptr); }

void quantize_row_q5_0_ref(const float* x, BlockQ5_0* y, int64_t k) {
  const int nb = static_cast<int>(k / 32);
  for (int i = 0; i < nb; i++) {
    const float max = signed_absmax(x + i * 32, 32);
    const float d = max / -16;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f2h(d);
    uint8_t L[32];
    for (int j = 0; j < 16; ++j) {
      const float x0 = x[i * 32 + 0 + j] * id;
      const float x1 = x[i * 32 + 16 + j] * id;
      L[j] = static_cast<uint8_t>(gmin(31, static_cast<int>(static_cast<int8_t>(x0 + 16.5f))));
      L[j + 16] = static_cast<uint8_t>(gmin(31, static_cast<int>(static_cast<int8_t>(x1 + 16.5f))));
    }
    pack_q5(L, y[i].qs, y[i].qh);
  }
}

void quantize_row_q5_1_ref(const float* x, BlockQ5_1* y, int64_t k) {
  const int nb = static_cast<int>(k / 32);
  for (int i = 0; i < nb; i++) {
    float min = FLT_MAX;
    float max = -FLT_MAX;
    for (int j = 0; j < 32; j++) {
      const float v = x[i * 32 + j];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const float d = (max - min) / ((1 << 5) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f2h(d);
    y[i].m = f2h(min);
    uint8_t L[32];
    for (int j = 0; j < 16; ++j) {
      const float x0 = (x[i * 32 + 0 + j] - min) * id;
      const float x1 = (x[i * 32 + 16 + j] - min) * id;
      L[j] = static_cast<uint8_t>(x0 + 0.5f);
      L[j + 16] = static_cast<uint8_t>(x1 + 0.5f);
    }
    pack_q5(L, y[i].qs, y[i].qh);
  }
}

// ---- quantize_<type> ---------------------------------------------------------------------------------------------

#define PTQ_QUANTIZE_TYPE(fn, Block, QK, ref, impl)                                               \
  void fn(const float* src, void* dst, int64_t nrow, int64_t n_per_row, const float* qw) {       \
    quantize_rows<Block, QK, ref, impl>(src, dst, nrow, n_per_row, qw);                          \
  }
PTQ_QUANTIZE_TYPE(quantize_q2_K, BlockQ2_K, kQK_K, quantize_row_q2_K_ref, quantize_row_q2_K_impl)
PTQ_QUANTIZE_TYPE(quantize_q3_K, BlockQ3_K, kQK_K, quantize_row_q3_K_ref, quantize_row_q3_K_impl)
PTQ_QUANTIZE_TYPE(quantize_q4_K, BlockQ4_K, kQK_K, quantize_row_q4_K_ref, (quantize_row_k4_impl<BlockQ4_K, 15>))
PTQ_QUANTIZE_TYPE(quantize_q5_K, BlockQ5_K, kQK_K, quantize_row_q5_K_ref, (quantize_row_k4_impl<BlockQ5_K, 31>))
PTQ_QUANTIZE_TYPE(quantize_q6_K, BlockQ6_K, kQK_K, quantize_row_q6_K_ref, quantize_row_q6_K_impl)
PTQ_QUANTIZE_TYPE(quantize_q4_0, BlockQ4_0, 32, quantize_row_q4_0_ref, (quantize_row_x0_impl<BlockQ4_0, 8>))
PTQ_QUANTIZE_TYPE(quantize_q5_0, BlockQ5_0, 32, quantize_row_q5_0_ref, (quantize_row_x0_impl<BlockQ5_0, 16>))
PTQ_QUANTIZE_TYPE(quantize_q4_1, BlockQ4_1, 32, quantize_row_q4_1_ref, (quantize_row_x1_impl<BlockQ4_1, 15>))
PTQ_QUANTIZE_TYPE(quantize_q5_1, BlockQ5_1, 32, quantize_row_q5_1_ref, (quantize_row_x1_impl<BlockQ5_1, 31>))
#undef PTQ_QUANTIZE_TYPE

// ---- dequantizers ------------------------------------------------------------------------------------------------

namespace {

// Q3_K's sixteen 6-bit scales, unpacked (ggml's kmask shuffle of dequantize_row_q3_K).
void q3_k_scales(const BlockQ3_K& x, int8_t scales[16]) {
  constexpr uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
  uint32_t aux[4];
  std::memcpy(aux, x.scales, 12);
  const uint32_t tmp = aux[2];
  aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
  aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
  aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
  aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
  std::memcpy(scales, aux, 16);
}

}  // namespace

void dequantize_row_q2_K(const BlockQ2_K* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; i++) {
    const float d = h2f(x[i].d);
    const float min = h2f(x[i].dmin);
    const uint8_t* q = x[i].qs;
    int is = 0;
    for (int n = 0; n < kQK_K; n += 128) {
      int shift = 0;
      for (int j = 0; j < 4; ++j) {
        for (int half = 0; half < 2; ++half) {
          const uint8_t sc = x[i].scales[is++];
          const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
          for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<int8_t>((q[l + 16 * half] >> shift) & 3) - ml;
        }
        shift += 2;
      }
      q += 32;
    }
  }
}

void dequantize_row_q3_K(const BlockQ3_K* x, float* y, int64_t k) {
  int8_t scales[16];
  for (int64_t i = 0; i < k / kQK_K; i++) {
    const float d_all = h2f(x[i].d);
    const uint8_t* q = x[i].qs;
    const uint8_t* hm = x[i].hmask;
    uint8_t m = 1;
    q3_k_scales(x[i], scales);
    int is = 0;
    for (int n = 0; n < kQK_K; n += 128) {
      int shift = 0;
      for (int j = 0; j < 4; ++j) {
        for (int half = 0; half < 2; ++half) {
          const float dl = d_all * (scales[is++] - 32);
          for (int l = 0; l < 16; ++l) {
            const int o = l + 16 * half;
            *y++ = dl * (static_cast<int8_t>((q[o] >> shift) & 3) - ((hm[o] & m) ? 0 : 4));
          }
        }
        shift += 2;
        m = static_cast<uint8_t>(m << 1);
      }
      q += 32;
    }
  }
}

namespace {
template <typename Block>
void dequantize_row_k4(const Block* x, float* y, int64_t k) {
  constexpr bool five = std::is_same_v<Block, BlockQ5_K>;
  for (int64_t i = 0; i < k / kQK_K; i++) {
    const uint8_t* ql = x[i].qs;
    const float d = h2f(x[i].d);
    const float min = h2f(x[i].dmin);
    int is = 0;
    uint8_t sc, m;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < kQK_K; j += 64) {
      get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l) {
        int hi = 0;
        if constexpr (five) hi = (x[i].qh[l] & u1) ? 16 : 0;
        *y++ = d1 * ((ql[l] & 0xF) + hi) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        int hi = 0;
        if constexpr (five) hi = (x[i].qh[l] & u2) ? 16 : 0;
        *y++ = d2 * ((ql[l] >> 4) + hi) - m2;
      }
      ql += 32;
      is += 2;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}
}  // namespace

void dequantize_row_q4_K(const BlockQ4_K* x, float* y, int64_t k) { dequantize_row_k4(x, y, k); }
void dequantize_row_q5_K(const BlockQ5_K* x, float* y, int64_t k) { dequantize_row_k4(x, y, k); }

void dequantize_row_q6_K(const BlockQ6_K* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK_K; i++) {
    const float d = h2f(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int n = 0; n < kQK_K; n += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int8_t q1 = static_cast<int8_t>(((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
        const int8_t q2 = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
        const int8_t q3 = static_cast<int8_t>(((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        const int8_t q4 = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        y[l + 0] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

void dequantize_row_q5_0(const BlockQ5_0* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / 32; i++) {
    const float d = h2f(x[i].d);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, sizeof(qh));
    for (int j = 0; j < 16; ++j) {
      const uint8_t xh_0 = static_cast<uint8_t>(((qh >> (j + 0)) << 4) & 0x10);
      const uint8_t xh_1 = static_cast<uint8_t>(((qh >> (j + 12))) & 0x10);
      const int32_t x0 = ((x[i].qs[j] & 0x0F) | xh_0) - 16;
      const int32_t x1 = ((x[i].qs[j] >> 4) | xh_1) - 16;
      y[i * 32 + j + 0] = x0 * d;
      y[i * 32 + j + 16] = x1 * d;
    }
  }
}

void dequantize_row_q5_1(const BlockQ5_1* x, float* y, int64_t k) {
  for (int64_t i = 0; i < k / 32; i++) {
    const float d = h2f(x[i].d);
    const float m = h2f(x[i].m);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, sizeof(qh));
    for (int j = 0; j < 16; ++j) {
      const uint8_t xh_0 = static_cast<uint8_t>(((qh >> (j + 0)) << 4) & 0x10);
      const uint8_t xh_1 = static_cast<uint8_t>(((qh >> (j + 12))) & 0x10);
      const int x0 = (x[i].qs[j] & 0x0F) | xh_0;
      const int x1 = (x[i].qs[j] >> 4) | xh_1;
      y[i * 32 + j + 0] = x0 * d + m;
      y[i * 32 + j + 16] = x1 * d + m;
    }
  }
}

}  // namespace ptq

// ---- a row of blocks as a grid -----------------------------------------------------------------------------------

namespace ptq {

namespace {

constexpr GgmlGridTraits kGrids[] = {
    {GgmlType::Q4_0, 32, -8, 7, false},     {GgmlType::Q4_1, 32, 0, 15, true},  {GgmlType::Q5_0, 32, -16, 15, false},
    {GgmlType::Q5_1, 32, 0, 31, true},      {GgmlType::Q8_0, 32, -127, 127, false}, {GgmlType::Q2_K, 16, 0, 3, true},
    {GgmlType::Q3_K, 16, -4, 3, false},     {GgmlType::Q4_K, 32, 0, 15, true},  {GgmlType::Q5_K, 32, 0, 31, true},
    {GgmlType::Q6_K, 16, -32, 31, false},
};

// Where the stored code q (0..2^bits - 1, before re-centring) of element e of a block lives: bits at `shift` of
// byte `low` (nbits wide) and, for 5/3/6-bit types, the high part at bit `hbit` of byte `high` (hbits wide).
struct CodeSlot {
  int low, shift, nbits;
  int high = -1, hshift = 0, hbits = 0;
};

CodeSlot code_slot(GgmlType t, int e) {
  switch (t) {
    case GgmlType::Q4_0: return {2 + e % 16, e < 16 ? 0 : 4, 4};
    case GgmlType::Q4_1: return {4 + e % 16, e < 16 ? 0 : 4, 4};
    case GgmlType::Q5_0: return {6 + e % 16, e < 16 ? 0 : 4, 4, 2 + e / 8, e % 8, 1};
    case GgmlType::Q5_1: return {8 + e % 16, e < 16 ? 0 : 4, 4, 4 + e / 8, e % 8, 1};
    case GgmlType::Q8_0: return {2 + e, 0, 8};
    case GgmlType::Q2_K: return {16 + 32 * (e / 128) + e % 32, 2 * ((e % 128) / 32), 2};
    case GgmlType::Q3_K: return {32 + 32 * (e / 128) + e % 32, 2 * ((e % 128) / 32), 2, e % 32, e / 32, 1};
    case GgmlType::Q4_K: return {16 + 32 * (e / 64) + e % 32, (e % 64) < 32 ? 0 : 4, 4};
    case GgmlType::Q5_K: return {48 + 32 * (e / 64) + e % 32, (e % 64) < 32 ? 0 : 4, 4, 16 + e % 32, e / 32, 1};
    case GgmlType::Q6_K: {
      const int h = e / 128, l = e % 32, q = (e % 128) / 32;
      return {64 * h + l + 32 * (q & 1), q < 2 ? 0 : 4, 4, 128 + 32 * h + l, 2 * q, 2};
    }
    default: fail_input("ggml type {} has no code grid", ggml_type_name(t));
  }
}

int code_offset(const GgmlGridTraits& g) { return g.lo < 0 ? -g.lo : 0; }  // c = q - offset (Q8_0: int8 as is)

}  // namespace

const GgmlGridTraits* ggml_grid_traits(GgmlType t) {
  for (const auto& g : kGrids)
    if (g.type == t) return &g;
  return nullptr;
}

void ggml_row_grid(GgmlType t, const uint8_t* row, int64_t n, float* a, float* b) {
  const GgmlTypeTraits& tt = ggml_type_traits(t);
  const int64_t nb = n / tt.block_size;
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* blk = row + i * tt.type_size;
    switch (t) {
      case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: {
        uint16_t d;
        std::memcpy(&d, blk, 2);
        a[i] = h2f(d);
        b[i] = 0;
        break;
      }
      case GgmlType::Q4_1: case GgmlType::Q5_1: {
        uint16_t dm[2];
        std::memcpy(dm, blk, 4);
        a[i] = h2f(dm[0]);
        b[i] = h2f(dm[1]);
        break;
      }
      case GgmlType::Q2_K: {
        BlockQ2_K x;
        std::memcpy(&x, blk, sizeof x);
        const float d = h2f(x.d), min = h2f(x.dmin);
        for (int s = 0; s < 16; ++s) {
          a[16 * i + s] = d * (x.scales[s] & 0xF);
          b[16 * i + s] = -(min * (x.scales[s] >> 4));
        }
        break;
      }
      case GgmlType::Q3_K: {
        BlockQ3_K x;
        std::memcpy(&x, blk, sizeof x);
        int8_t sc[16];
        q3_k_scales(x, sc);
        const float d_all = h2f(x.d);
        for (int s = 0; s < 16; ++s) {
          a[16 * i + s] = d_all * (sc[s] - 32);
          b[16 * i + s] = 0;
        }
        break;
      }
      case GgmlType::Q4_K: case GgmlType::Q5_K: {
        uint16_t dm[2];
        std::memcpy(dm, blk, 4);
        const float d = h2f(dm[0]), min = h2f(dm[1]);
        for (int s = 0; s < 8; ++s) {
          uint8_t sc, m;
          get_scale_min_k4(s, blk + 4, &sc, &m);
          a[8 * i + s] = d * sc;
          b[8 * i + s] = -(min * m);
        }
        break;
      }
      case GgmlType::Q6_K: {
        BlockQ6_K x;
        std::memcpy(&x, blk, sizeof x);
        const float d = h2f(x.d);
        for (int s = 0; s < 16; ++s) {
          a[16 * i + s] = d * x.scales[s];
          b[16 * i + s] = 0;
        }
        break;
      }
      default: fail_input("ggml type {} has no code grid", ggml_type_name(t));
    }
  }
}

void ggml_row_codes(GgmlType t, const uint8_t* row, int64_t n, int8_t* codes) {
  const GgmlGridTraits& g = *ggml_grid_traits(t);
  const GgmlTypeTraits& tt = ggml_type_traits(t);
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* blk = row + (i / tt.block_size) * tt.type_size;
    const CodeSlot c = code_slot(t, static_cast<int>(i % tt.block_size));
    int q = (blk[c.low] >> c.shift) & ((1 << c.nbits) - 1);
    if (c.high >= 0) q |= ((blk[c.high] >> c.hshift) & ((1 << c.hbits) - 1)) << c.nbits;
    codes[i] = t == GgmlType::Q8_0 ? static_cast<int8_t>(blk[c.low]) : static_cast<int8_t>(q - code_offset(g));
  }
}

void ggml_row_set_codes(GgmlType t, uint8_t* row, int64_t n, const int8_t* codes) {
  const GgmlGridTraits& g = *ggml_grid_traits(t);
  const GgmlTypeTraits& tt = ggml_type_traits(t);
  for (int64_t i = 0; i < n; ++i) {
    if (codes[i] < g.lo || codes[i] > g.hi)
      fail_input("ggml {} code {} of element {} is outside [{}, {}]", ggml_type_name(t), codes[i], i, g.lo, g.hi);
    uint8_t* blk = row + (i / tt.block_size) * tt.type_size;
    const CodeSlot c = code_slot(t, static_cast<int>(i % tt.block_size));
    const int q = t == GgmlType::Q8_0 ? static_cast<uint8_t>(codes[i]) : codes[i] + code_offset(g);
    const int low_mask = (1 << c.nbits) - 1;
    blk[c.low] = static_cast<uint8_t>((blk[c.low] & ~(low_mask << c.shift)) | ((q & low_mask) << c.shift));
    if (c.high >= 0) {
      const int high_mask = (1 << c.hbits) - 1;
      blk[c.high] = static_cast<uint8_t>((blk[c.high] & ~(high_mask << c.hshift)) |
                                         (((q >> c.nbits) & high_mask) << c.hshift));
    }
  }
}

void ggml_round_to_grid(const GgmlGridTraits& g, const float* x, const float* a, const float* b, int64_t n,
                        int8_t* codes, float* xhat) {
  for (int64_t i = 0; i < n; ++i) {
    int code = 0;
    if (a[i] != 0) code = static_cast<int>(std::clamp(std::nearbyint((x[i] - b[i]) / a[i]), float(g.lo), float(g.hi)));
    codes[i] = static_cast<int8_t>(code);
    const float c = static_cast<float>(code);  // through int: nearbyint(-0.3) is -0, and a * -0 flips the zero's sign
    xhat[i] = g.min ? a[i] * c + b[i] : a[i] * c;
  }
}

}  // namespace ptq
