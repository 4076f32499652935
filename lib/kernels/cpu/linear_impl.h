// The vector linear kernels, written once over a vector type V of 16 floats and instantiated per instruction
// set by cpu/linear_avx512.cpp and cpu/linear_avx2.cpp, each after its `#pragma GCC target` (and after every
// standard header, which this file therefore includes only for the reader). Included only there.
//
// V provides: F (16 floats), zero(), load(const float*), set1(float), fmadd(a, b, c) = a*b + c, reduce(F),
// codes(const uint8_t* block, int shift, int mask) -> the 16 codes (byte i >> shift) & mask as floats,
// load_f16 / load_bf16(const uint16_t*) -> 16 floats; for the GEMM microkernel a Row of kNR floats (row_zero,
// row_load, row_store, row_fmadd, bcast) and kMR, the tokens of one register tile.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/half.h"
#include "kernels/linear.h"

namespace ptq::kernels::cpu {

// How far ahead of the weight loads the GEMV prefetches (see cpu/linear_q8_avx2.cpp for the measurement).
constexpr int64_t kPrefetchBytes = 2048;


template <class V>
struct LinearImpl {
  using F = typename V::F;

  // 16 weights of row `r` at kernel column 16 * v, as floats (float kinds only).
  static F load_float_row(const PackedWeights& w, int64_t r, int64_t col) {
    switch (w.kind) {
      case WeightKind::F16: return V::load_f16(static_cast<const uint16_t*>(w.data) + r * w.k + col);
      case WeightKind::BF16: return V::load_bf16(static_cast<const uint16_t*>(w.data) + r * w.k + col);
      default: return V::load(static_cast<const float*>(w.data) + r * w.k + col);
    }
  }

  static float scalar_weight(const PackedWeights& w, int64_t r, int64_t c) { return w.at(r, c); }

  // Activations in kernel order, zero padded to kp columns: xs[i * kp + j] = x[i, perm[j]]; and for quantized
  // weights the per-group sums xsum[i * groups + g] (the zero-point term is offset * Σ x over the group).
  static int64_t prepare(const PackedWeights& w, const float* x, int64_t m, std::vector<float>& xs,
                         std::vector<float>& xsum) {
    const int64_t kp = w.kind == WeightKind::Quant ? w.kpad : (w.k + 15) / 16 * 16;
    xs.assign(m * kp, 0.0f);
    for (int64_t i = 0; i < m; ++i) {
      float* dst = xs.data() + i * kp;
      const float* src = x + i * w.k;
      if (w.perm.empty()) {
        std::memcpy(dst, src, sizeof(float) * w.k);
      } else {
        for (int64_t j = 0; j < w.k; ++j) dst[j] = src[w.perm[j]];
      }
    }
    if (w.kind == WeightKind::Quant) {
      xsum.assign(m * w.groups, 0.0f);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t g = 0; g < w.groups; ++g) {
          F acc = V::zero();
          const float* p = xs.data() + i * kp + g * w.group;
          const int64_t full = w.group / 16 * 16;
          for (int64_t j = 0; j < full; j += 16) acc = V::add(acc, V::load(p + j));
          float s = V::reduce(acc);
          for (int64_t j = full; j < w.group; ++j) s += p[j];
          xsum[i * w.groups + g] = s;
        }
    }
    return kp;
  }

  // Σ a[i] b[i] over n floats.
  static float dot(const float* a, const float* b, int64_t n) {
    F acc = V::zero();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) acc = V::fmadd(V::load(a + i), V::load(b + i), acc);
    float s = V::reduce(acc);
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
  }

  // log2 of the 16-code vectors per 16-byte block (8 / container: 1, 2 or 4), so that the hot loops shift
  // instead of dividing by a run-time value.
  static int vectors_log2(const PackedWeights& w) { return w.container == 8 ? 0 : w.container == 4 ? 1 : 2; }

  // Vector v (kernel columns 16v..16v+15) of a quantized row: its block, and the shift inside each byte.
  static F quant_vector(const PackedWeights& w, const uint8_t* row, int64_t v, int vlog2) {
    return V::codes(row + (v >> vlog2) * kBlockBytes, int(v & ((1 << vlog2) - 1)) * w.container,
                    (1 << w.container) - 1);
  }

  // ---- GEMV: MB tokens (1..kGemvMaxTokens), rows [r0, r1) --------------------------------------------------
  template <int MB>
  static void gemv_quant(const PackedWeights& w, const float* xs, int64_t kp, const float* xsum, float* y,
                         const float* bias, int64_t ldy, int64_t r0, int64_t r1) {
    const int64_t vecs_per_group = w.groups == 1 ? kp / 16 : w.group / 16;
    const float zero_sym = float(1 << (w.bits - 1));
    const int vlog2 = vectors_log2(w);
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = w.codes.data() + r * w.row_bytes();
      const float* sc = w.scales.data() + r * w.groups;
      const float* off = w.offsets.empty() ? nullptr : w.offsets.data() + r * w.groups;
      F tot[MB];
      // Offset term Σ_g offset_g · Σx_g, a dot product over the groups (symmetric: offset = 2^(b-1) · scale).
      const float* offs = off != nullptr ? off : sc;
      const float off_mul = off != nullptr ? 1.0f : zero_sym;
      float zt[MB];
#pragma GCC unroll 4
      for (int i = 0; i < MB; ++i) tot[i] = V::zero(), zt[i] = off_mul * dot(offs, xsum + i * w.groups, w.groups);
      for (int64_t g = 0; g < w.groups; ++g) {
        F acc[MB];
#pragma GCC unroll 4
        for (int i = 0; i < MB; ++i) acc[i] = V::zero();
        const int64_t v0 = g * vecs_per_group;
        for (int64_t v = v0; v < v0 + vecs_per_group; ++v) {
          if ((v & 3) == 0) _mm_prefetch(reinterpret_cast<const char*>(row + ((v >> vlog2) * kBlockBytes)) + kPrefetchBytes,
                                         _MM_HINT_T0);
          const F q = quant_vector(w, row, v, vlog2);
#pragma GCC unroll 4
          for (int i = 0; i < MB; ++i) acc[i] = V::fmadd(q, V::load(xs + i * kp + 16 * v), acc[i]);
        }
        const F sv = V::set1(sc[g]);
#pragma GCC unroll 4
        for (int i = 0; i < MB; ++i) tot[i] = V::fmadd(acc[i], sv, tot[i]);
      }
      for (int i = 0; i < MB; ++i) y[i * ldy + r] = V::reduce(tot[i]) - zt[i] + (bias != nullptr ? bias[r] : 0.0f);
    }
  }

  // U independent accumulators per token (U vectors of a row per step): with one, a decode step waits on the fma
  // latency, not on memory (measured on the 1.1B shape's F16, 1 thread: 5.97 tok/s with one chain).
  template <int MB>
  static void gemv_float(const PackedWeights& w, const float* xs, int64_t kp, float* y, const float* bias,
                         int64_t ldy, int64_t r0, int64_t r1) {
    constexpr int U = MB >= 4 ? 1 : MB >= 2 ? 2 : 4;
    const int64_t full = w.k / 16 * 16;
    const int64_t esize = w.kind == WeightKind::F32 ? 4 : 2;
    for (int64_t r = r0; r < r1; ++r) {
      F tot[MB][U];
#pragma GCC unroll 16
      for (int a = 0; a < MB * U; ++a) tot[a / U][a % U] = V::zero();
      const char* wrow = static_cast<const char*>(w.data) + r * w.k * esize;
      int64_t c = 0;
      for (; c + 16 * U <= full; c += 16 * U) {
        for (int64_t p = 0; p < 16 * U * esize; p += 64) _mm_prefetch(wrow + c * esize + p + kPrefetchBytes, _MM_HINT_T0);
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) {
          const F wv = load_float_row(w, r, c + 16 * u);
#pragma GCC unroll 4
          for (int i = 0; i < MB; ++i) tot[i][u] = V::fmadd(wv, V::load(xs + i * kp + c + 16 * u), tot[i][u]);
        }
      }
      for (; c < full; c += 16) {
        const F wv = load_float_row(w, r, c);
#pragma GCC unroll 4
        for (int i = 0; i < MB; ++i) tot[i][0] = V::fmadd(wv, V::load(xs + i * kp + c), tot[i][0]);
      }
      for (int i = 0; i < MB; ++i) {
        F t = tot[i][0];
#pragma GCC unroll 4
        for (int u = 1; u < U; ++u) t = V::add(t, tot[i][u]);
        float s = V::reduce(t);
        for (int64_t c = full; c < w.k; ++c) s += scalar_weight(w, r, c) * xs[i * kp + c];
        y[i * ldy + r] = s + (bias != nullptr ? bias[r] : 0.0f);
      }
    }
  }

  template <int MB>
  static void gemv(const PackedWeights& w, const float* xs, int64_t kp, const float* xsum, float* y,
                   const float* bias, int64_t ldy) {
    // Rows in chunks of 16 so threads split evenly and each output cache line has one writer.
#pragma omp parallel for schedule(static) if (w.n * w.k * MB >= kParallelMinMacs)
    for (int64_t r0 = 0; r0 < w.n; r0 += 16) {
      const int64_t r1 = std::min(w.n, r0 + 16);
      if (w.kind == WeightKind::Quant) {
        gemv_quant<MB>(w, xs, kp, xsum, y, bias, ldy, r0, r1);
      } else {
        gemv_float<MB>(w, xs, kp, y, bias, ldy, r0, r1);
      }
    }
  }

  // ---- GEMM: kNR rows dequantized into an fp32 panel once, reused by every token --------------------------
  // Panel layout: panel[c * kNR + j] = W[r0 + j, kernel column c] (rows interleaved, zero past k), so one step
  // of the microkernel loads kNR weights of one column and broadcasts one activation per token: a kMR x kNR
  // outer-product tile held in registers (the classic BLAS microkernel; no horizontal sums).
  // 8x8 block transpose (both instruction sets this header is compiled for have AVX2).
  static void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
      r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
      r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
      r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
      r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
      _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
      _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
  }

  // Rows r0..r0+nr dequantized into `rows` ([kNR][kp], zero past k and past nr), then transposed into the panel.
  static void fill_panel(const PackedWeights& w, int64_t r0, int64_t nr, int64_t kp, float* rows, float* panel) {
    constexpr int NR = V::kNR;
    static_assert(NR % 8 == 0, "the panel is transposed in 8x8 blocks");
    for (int64_t j = 0; j < NR; ++j) {
      float* row = rows + j * kp;
      if (j >= nr) {
        std::fill(row, row + kp, 0.0f);
        continue;
      }
      const int64_t r = r0 + j;
      if (w.kind == WeightKind::Quant) {
        const uint8_t* codes = w.codes.data() + r * w.row_bytes();
        const float zero_sym = float(1 << (w.bits - 1));
        const int vlog2 = vectors_log2(w);
        // One group per row covers the padding vectors too (their codes are 0 and their columns zeroed below).
        const int64_t vecs_per_group = w.groups == 1 ? kp / 16 : w.group / 16;
        for (int64_t g = 0; g < w.groups; ++g) {
          const float s = w.scales[r * w.groups + g];
          const float o = w.offsets.empty() ? s * zero_sym : w.offsets[r * w.groups + g];
          const F sv = V::set1(s), ov = V::set1(-o);
          for (int64_t v = g * vecs_per_group; v < (g + 1) * vecs_per_group; ++v)
            V::store(row + 16 * v, V::fmadd(quant_vector(w, codes, v, vlog2), sv, ov));
        }
      } else {
        const int64_t full = w.k / 16 * 16;
        for (int64_t c = 0; c < full; c += 16) V::store(row + c, load_float_row(w, r, c));
        for (int64_t c = full; c < w.k; ++c) row[c] = scalar_weight(w, r, c);
      }
      for (int64_t c = w.k; c < kp; ++c) row[c] = 0.0f;
    }
    for (int64_t j = 0; j < NR; j += 8)
      for (int64_t c = 0; c < kp; c += 8) transpose8x8(rows + j * kp + c, kp, panel + c * NR + j, NR);
  }

  // out[i * ldo + j] = Σ_c xs[i * kp + c] · panel[c * kNR + j] for i < MR.
  template <int MR>
  static void tile(const float* xs, int64_t kp, const float* panel, float* out, int64_t ldo) {
    // Fully unrolled so that the accumulators live in registers (GCC keeps a rolled array of them in memory).
    typename V::Row acc[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) acc[i] = V::row_zero();
    for (int64_t c = 0; c < kp; ++c) {
      const typename V::Row wv = V::row_load(panel + c * V::kNR);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) acc[i] = V::row_fmadd(V::bcast(xs[i * kp + c]), wv, acc[i]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) V::row_store(out + i * ldo, acc[i]);
  }

  // tile<mr> for a run-time mr <= MR (the last tokens of a prompt).
  template <int MR>
  static void tile_upto(int mr, const float* xs, int64_t kp, const float* panel, float* out, int64_t ldo) {
    if constexpr (MR > 1) {
      if (mr < MR) return tile_upto<MR - 1>(mr, xs, kp, panel, out, ldo);
    }
    tile<MR>(xs, kp, panel, out, ldo);
  }

  static void gemm(const PackedWeights& w, const float* xs, int64_t kp, int64_t m, float* y, const float* bias) {
    constexpr int MR = V::kMR, NR = V::kNR;
#pragma omp parallel if (w.n * w.k * m >= kParallelMinMacs)
    {
      std::vector<float> panel(NR * kp), rows(NR * kp), out(MR * NR);
#pragma omp for schedule(static)
      for (int64_t r0 = 0; r0 < w.n; r0 += NR) {
        const int64_t nr = std::min<int64_t>(NR, w.n - r0);
        fill_panel(w, r0, nr, kp, rows.data(), panel.data());
        for (int64_t i0 = 0; i0 < m; i0 += MR) {
          const int64_t mr = std::min<int64_t>(MR, m - i0);
          tile_upto<MR>(int(mr), xs + i0 * kp, kp, panel.data(), out.data(), NR);
          for (int64_t i = 0; i < mr; ++i)
            for (int64_t j = 0; j < nr; ++j)
              y[(i0 + i) * w.n + r0 + j] = out[i * NR + j] + (bias != nullptr ? bias[r0 + j] : 0.0f);
        }
      }
    }
  }

  static void run(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
    thread_local std::vector<float> xs, xsum;
    const int64_t kp = prepare(w, x, m, xs, xsum);
    if (m > kGemvMaxTokens) return gemm(w, xs.data(), kp, m, y, bias);
    switch (m) {
      case 1: return gemv<1>(w, xs.data(), kp, xsum.data(), y, bias, w.n);
      case 2: return gemv<2>(w, xs.data(), kp, xsum.data(), y, bias, w.n);
      case 3: return gemv<3>(w, xs.data(), kp, xsum.data(), y, bias, w.n);
      default: return gemv<4>(w, xs.data(), kp, xsum.data(), y, bias, w.n);
    }
  }
};

}  // namespace ptq::kernels::cpu
