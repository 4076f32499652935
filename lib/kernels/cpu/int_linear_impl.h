// The vector int_linear kernels (int_linear.h), written once over a vector type V of int16 lanes and instantiated
// by cpu/int_linear_avx2.cpp and cpu/int_linear_avx512.cpp, each after its `#pragma GCC target` (and after every
// standard header, which this file therefore includes only for the reader). Included only there.
//
// V provides: I (int32 accumulator vector), kLanes (int16 lanes of one load), zero(), madd(acc, c, w) =
// acc + vpmaddwd(c[0..kLanes), w[0..kLanes)) (int16 x int16 pairs -> int32, exact for |c|, |w| <= 255), reduce(I)
// -> int32 (exact: every partial sum is bounded by the group's Σ|c·w|, see int_linear.h); kMaskedTail and
// madd_tail(acc, c, w, count) when the ISA can load the last count < kLanes columns under a mask, otherwise the
// tail runs on scalars.
//
// Blocking: OpenMP over chunks of kRowChunk output rows; per chunk, tokens in register tiles of kMT, rows in
// tiles of kNR (kMT x kNR accumulators, kMT + kNR loads per kMT · kNR vpmaddwd). A chunk's weight rows
// (kRowChunk · k · 2 bytes) stay in L2 while every token tile (kMT · k · 2 bytes) passes over them.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/int_linear.h"

namespace ptq::kernels::cpu {

template <class V>
struct IntLinearImpl {
  using I = typename V::I;
  static constexpr int kMT = 4, kNR = 2;
  static constexpr int64_t kRowChunk = 16;

  // acc[i][j] = Σ_{q < width} c[i][q] · w[j][q] for i < MT, j < NR (pointers at the group's first column).
  template <int MT, int NR>
  static void tile(const int16_t* const* c, const int16_t* const* w, int64_t width, int32_t (*acc)[kNR]) {
    I v[MT][NR];
    for (int i = 0; i < MT; ++i)
      for (int j = 0; j < NR; ++j) v[i][j] = V::zero();
    int64_t q = 0;
    for (; q + V::kLanes <= width; q += V::kLanes)
      for (int i = 0; i < MT; ++i)
        for (int j = 0; j < NR; ++j) v[i][j] = V::madd(v[i][j], c[i] + q, w[j] + q);
    if constexpr (V::kMaskedTail) {
      if (q < width) {
        for (int i = 0; i < MT; ++i)
          for (int j = 0; j < NR; ++j) v[i][j] = V::madd_tail(v[i][j], c[i] + q, w[j] + q, width - q);
        q = width;
      }
    }
    for (int i = 0; i < MT; ++i)
      for (int j = 0; j < NR; ++j) {
        int32_t s = V::reduce(v[i][j]);
        for (int64_t p = q; p < width; ++p) s += int32_t(c[i][p]) * int32_t(w[j][p]);
        acc[i][j] = s;
      }
  }

  static void tile_dispatch(int mt, int nr, const int16_t* const* c, const int16_t* const* w, int64_t width,
                            int32_t (*acc)[kNR]) {
    static_assert(kMT == 4 && kNR == 2, "tile_dispatch lists every (mt, nr)");
    switch (mt * 4 + nr) {
      case 4 * 4 + 2: return tile<4, 2>(c, w, width, acc);
      case 4 * 4 + 1: return tile<4, 1>(c, w, width, acc);
      case 3 * 4 + 2: return tile<3, 2>(c, w, width, acc);
      case 3 * 4 + 1: return tile<3, 1>(c, w, width, acc);
      case 2 * 4 + 2: return tile<2, 2>(c, w, width, acc);
      case 2 * 4 + 1: return tile<2, 1>(c, w, width, acc);
      case 1 * 4 + 2: return tile<1, 2>(c, w, width, acc);
      default: return tile<1, 1>(c, w, width, acc);
    }
  }

  // Either acc_out [m, n, groups] (the accumulators alone) or y [m, n] (+ bias): the epilogue of int_linear.h.
  static void run(const IntWeights& w, const IntActivations& x, float* y, const float* bias, int32_t* acc_out) {
    const int64_t n = w.n, k = w.k, m = x.m, G = w.groups, width = k / G;
    const int64_t chunks = (n + kRowChunk - 1) / kRowChunk;
#pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t r_end = std::min(n, (ch + 1) * kRowChunk);
      for (int64_t t0 = 0; t0 < m; t0 += kMT) {
        const int mt = int(std::min<int64_t>(kMT, m - t0));
        for (int64_t r0 = ch * kRowChunk; r0 < r_end; r0 += kNR) {
          const int nr = int(std::min<int64_t>(kNR, r_end - r0));
          double sums[kMT][kNR] = {};
          for (int64_t g = 0; g < G; ++g) {
            const int16_t* cp[kMT];
            const int16_t* wp[kNR];
            for (int i = 0; i < mt; ++i) cp[i] = x.c + (t0 + i) * k + g * width;
            for (int j = 0; j < nr; ++j) wp[j] = w.w + (r0 + j) * k + g * width;
            int32_t acc[kMT][kNR];
            tile_dispatch(mt, nr, cp, wp, width, acc);
            for (int i = 0; i < mt; ++i)
              for (int j = 0; j < nr; ++j) {
                if (acc_out != nullptr)
                  acc_out[((t0 + i) * n + r0 + j) * G + g] = acc[i][j];
                else
                  sums[i][j] += double(w.s[(r0 + j) * G + g]) * double(acc[i][j]);
              }
          }
          if (acc_out != nullptr) continue;
          for (int i = 0; i < mt; ++i) {
            const double a = double(x.per_token ? x.a[t0 + i] : x.a[0]);
            for (int j = 0; j < nr; ++j) {
              float v = float(sums[i][j] * a);
              if (bias != nullptr) v += bias[r0 + j];
              y[(t0 + i) * n + r0 + j] = v;
            }
          }
        }
      }
    }
  }
};

}  // namespace ptq::kernels::cpu
