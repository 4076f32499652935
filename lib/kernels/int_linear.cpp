#include "kernels/int_linear.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace ptq::kernels {

// Defined in cpu/int_linear_avx2.cpp and cpu/int_linear_avx512.cpp (each compiled for its instruction set only).
// acc non-null: the accumulators alone (y, bias unused).
void int_linear_avx2(const IntWeights& w, const IntActivations& x, float* y, const float* bias, int32_t* acc);
void int_linear_avx512(const IntWeights& w, const IntActivations& x, float* y, const float* bias, int32_t* acc);
// cpu/int_linear_avx512_vnni.cpp: the AVX-512 kernel with vpdpwssd, for Isa::Avx512 where the CPU has VNNI.
void int_linear_avx512_vnni(const IntWeights& w, const IntActivations& x, float* y, const float* bias, int32_t* acc);

namespace {

using IntLinearFn = void (*)(const IntWeights&, const IntActivations&, float*, const float*, int32_t*);

// One row per instruction set, indexed by Isa; Ref has none here (int_linear_ref is separate: int64 accumulators).
constexpr IntLinearFn kIntLinear[] = {nullptr, int_linear_avx2, int_linear_avx512};
static_assert(sizeof(kIntLinear) / sizeof(kIntLinear[0]) == int(Isa::Avx512) + 1, "one kernel per Isa");

// The table's kernel, or its VNNI variant for AVX-512 where the CPU has VNNI.
IntLinearFn kernel_for(Isa isa) {
  return isa == Isa::Avx512 && has_avx512_vnni() ? int_linear_avx512_vnni : kIntLinear[static_cast<int>(isa)];
}

}  // namespace

// Shared by the kernels and the scalar twin (declared in neither header: an implementation detail).
void check_int_linear_args(const IntWeights& w, const IntActivations& x, bool need_scales) {
  if (w.n <= 0 || w.k <= 0) throw std::invalid_argument("int_linear: empty weights");
  if (w.w == nullptr || (need_scales && w.s == nullptr)) throw std::invalid_argument("int_linear: null weights or steps");
  if (w.groups <= 0 || w.k % w.groups != 0)
    throw std::invalid_argument("int_linear: " + std::to_string(w.groups) + " groups do not divide " +
                                std::to_string(w.k) + " columns");
  if (w.max_abs < 0 || w.max_abs > kIntLinearMaxCode)
    throw std::invalid_argument("int_linear: weight bound " + std::to_string(w.max_abs) + " is outside 0..255");
  if (x.m < 0) throw std::invalid_argument("int_linear: negative token count");
  if (x.m > 0 && (x.c == nullptr || (need_scales && x.a == nullptr)))
    throw std::invalid_argument("int_linear: null activations or steps");
  int32_t max_c = 0;
  for (int64_t i = 0; i < x.m * w.k; ++i) {
    const int32_t v = std::abs(int32_t(x.c[i]));
    if (v > kIntLinearMaxCode)
      throw std::invalid_argument("int_linear: activation code " + std::to_string(x.c[i]) + " at token " +
                                  std::to_string(i / w.k) + " is outside ±" + std::to_string(kIntLinearMaxCode));
    max_c = std::max(max_c, v);
  }
  const int64_t width = w.k / w.groups;
  if (!int_linear_width_fits(width, max_c, w.max_abs))
    throw std::invalid_argument("int_linear: a group of " + std::to_string(width) + " columns of codes within ±" +
                                std::to_string(max_c) + " and weights within ±" + std::to_string(w.max_abs) +
                                " could overflow its int32 accumulator");
}

int32_t int_weights_max_abs(const IntWeights& w) {
  int32_t m = 0;
  for (int64_t i = 0; i < w.n * w.k; ++i) m = std::max(m, std::abs(int32_t(w.w[i])));
  return m;
}

namespace {

void check_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(detected_isa()))
    throw std::runtime_error(std::string("int_linear: this CPU has no ") + isa_name(isa));
}

}  // namespace

void int_linear_isa(Isa isa, const IntWeights& w, const IntActivations& x, float* y, const float* bias) {
  check_int_linear_args(w, x, true);
  if (x.m > 0 && y == nullptr) throw std::invalid_argument("int_linear: null output");
  check_isa(isa);
  if (x.m == 0) return;
  if (isa == Isa::Ref) return int_linear_ref(w, x, y, bias);
  kernel_for(isa)(w, x, y, bias, nullptr);
}

void int_linear(const IntWeights& w, const IntActivations& x, float* y, const float* bias) {
  int_linear_isa(best_isa(), w, x, y, bias);
}

void int_linear_acc_isa(Isa isa, const IntWeights& w, const IntActivations& x, int32_t* acc) {
  check_int_linear_args(w, x, false);
  if (x.m > 0 && acc == nullptr) throw std::invalid_argument("int_linear: null output");
  check_isa(isa);
  if (x.m == 0) return;
  if (isa == Isa::Ref) throw std::invalid_argument("int_linear_acc_isa: the scalar twin is int_linear_acc_ref (int64)");
  kernel_for(isa)(w, x, nullptr, nullptr, acc);
}

// cpu/int_linear8_avx512.cpp (AVX-512 VNNI). c8: the codes as bytes [m, k]; csum [m, groups] their group sums.
void int_linear8_avx512_vnni(const IntWeights8& w, const int8_t* c8, const int32_t* csum, const IntActivations& x,
                             float* y, const float* bias);
// min and max of x[0..k) (k >= 1); false when an input is NaN or infinite.
bool row_min_max_avx512_vnni(const float* x, int64_t k, float* mn, float* mx);
// c8[j] = clamp(nearbyint(x[j] · inv), qmin, qmax), csum[g] = Σ of group g's codes; false when an input is not finite.
bool quantize_row8_avx512_vnni(const float* x, int64_t k, int64_t groups, float inv, int qmin, int qmax, int8_t* c8,
                               int32_t* csum);

bool int_linear8_supports(const IntWeights& w) {
  if (best_isa() != Isa::Avx512 || !has_avx512_vnni() || w.n <= 0 || w.k <= 0 || w.groups <= 0 || w.k % w.groups != 0)
    return false;
  const int64_t width = w.k / w.groups;
  if (width % 4 != 0 || width > kIntLinear8MaxWidth) return false;
  for (int64_t i = 0; i < w.n * w.k; ++i)
    if (w.w[i] < -128 || w.w[i] > 127) return false;
  return true;
}

namespace {

// Where w[r, c] lives in IntWeights8::tiles (layouts in int_linear.h): the byte, and for 4-bit weights the nibble's
// shift (0: low, 4: high).
struct TileSlot {
  int64_t byte;
  int shift;
};
inline TileSlot tile_slot(int64_t r, int64_t c, int64_t k, int bits) {
  if (bits == 8) return {((r / 16) * (k / 4) + c / 4) * 64 + 4 * (r % 16) + c % 4, 0};
  return {((r / 16) * (k / 8) + c / 8) * 64 + 4 * (r % 16) + c % 4, (c % 8) < 4 ? 0 : 4};
}

// The byte kernel on m tokens whose codes are made row by row: code_row(t, c8, csum) writes token t's k codes and its
// group sums and returns false when a code is missing (outside a signed byte, or an input that is not finite). Rows
// run on the OpenMP threads when there are many. False (y untouched) when a row failed.
template <class CodeRow>
bool run_int_linear8(const IntWeights8& w, int64_t m, const CodeRow& code_row, const IntActivations& x, float* y,
                     const float* bias) {
  if (!has_avx512_vnni()) throw std::runtime_error("int_linear8: this CPU has no AVX-512 VNNI");
  thread_local std::vector<int8_t> c8;
  thread_local std::vector<int32_t> csum;
  c8.resize(m * w.k);
  csum.resize(m * w.groups);
  int8_t* pc = c8.data();
  int32_t* ps = csum.data();
  int failed = 0;
#pragma omp parallel for schedule(static) reduction(| : failed) if (m * w.k >= (int64_t(1) << 16))
  for (int64_t t = 0; t < m; ++t) failed |= code_row(t, pc + t * w.k, ps + t * w.groups) ? 0 : 1;
  if (failed != 0) return false;
  int_linear8_avx512_vnni(w, pc, ps, x, y, bias);
  return true;
}

// quantize_activation's per-token symmetric step of a row with range [mn, mx] (act_quant.cpp's grid_ref): the
// quotient in double, then fp32; a step below FLT_MIN (an all-zero row) becomes 1.
float dynamic_step(float mn, float mx, double clip, int qmax) {
  const double num = double(std::max(-std::min(mn, 0.0f), std::max(mx, 0.0f))) * clip;
  const float step = static_cast<float>(num / double(qmax));
  return step >= FLT_MIN ? step : 1.0f;
}

}  // namespace

IntWeights8 pack_int_weights8(const IntWeights& w) {
  if (!int_linear8_supports(w)) throw std::invalid_argument("pack_int_weights8: weights the 1-byte kernel cannot take");
  IntWeights8 p;
  p.n = w.n;
  p.k = w.k;
  p.groups = w.groups;
  // Half bytes where every weight is in [-8, 7] and the groups are whole 8-column pairs of dwords.
  bool nibbles = (w.k / w.groups) % 8 == 0;
  for (int64_t i = 0; i < w.n * w.k && nibbles; ++i) nibbles = w.w[i] >= -8 && w.w[i] <= 7;
  p.bits = nibbles ? 4 : 8;
  const int64_t tiles = (w.n + 15) / 16, offset = p.bits == 8 ? 128 : 8;
  p.tiles.assign(tiles * w.k * 16 * p.bits / 8, p.bits == 8 ? 128 : 0x88);  // rows past n: w = 0
  p.s8.assign(tiles * w.groups * 16, 0.0);
  for (int64_t r = 0; r < w.n; ++r) {
    for (int64_t c = 0; c < w.k; ++c) {
      const TileSlot t = tile_slot(r, c, w.k, p.bits);
      const int u = int(w.w[r * w.k + c] + offset);
      p.tiles[t.byte] = p.bits == 8 ? uint8_t(u) : uint8_t((p.tiles[t.byte] & ~(0x0F << t.shift)) | (u << t.shift));
    }
    for (int64_t g = 0; g < w.groups; ++g) p.s8[((r / 16) * w.groups + g) * 16 + r % 16] = double(w.s[r * w.groups + g]);
  }
  return p;
}

void unpack_int_weights8(const IntWeights8& w, int16_t* out) {
  const int offset = w.bits == 8 ? 128 : 8;
  for (int64_t r = 0; r < w.n; ++r)
    for (int64_t c = 0; c < w.k; ++c) {
      const TileSlot t = tile_slot(r, c, w.k, w.bits);
      const int u = w.bits == 8 ? w.tiles[t.byte] : (w.tiles[t.byte] >> t.shift) & 0x0F;
      out[r * w.k + c] = int16_t(u - offset);
    }
}

bool int_linear8(const IntWeights8& w, const IntActivations& x, float* y, const float* bias) {
  if (x.m < 0 || (x.m > 0 && (x.c == nullptr || x.a == nullptr || y == nullptr)))
    throw std::invalid_argument("int_linear8: null activations, steps or output");
  if (x.m == 0) return true;
  const int64_t width = w.k / w.groups;
  return run_int_linear8(w, x.m, [&](int64_t t, int8_t* c8, int32_t* csum) {
    const int16_t* c = x.c + t * w.k;
    for (int64_t g = 0; g < w.groups; ++g) {
      int32_t sum = 0;
      for (int64_t j = g * width; j < (g + 1) * width; ++j) {
        if (c[j] < -128 || c[j] > 127) return false;
        c8[j] = int8_t(c[j]);
        sum += c[j];
      }
      csum[g] = sum;
    }
    return true;
  }, x, y, bias);
}

bool int_linear8_static(const IntWeights8& w, const float* x, int64_t m, float inv, float a, int qmin, int qmax,
                        float* y, const float* bias) {
  if (m < 0 || (m > 0 && (x == nullptr || y == nullptr)) || qmin < -128 || qmax > 127 || qmin > qmax)
    throw std::invalid_argument("int_linear8_static: bad arguments");
  if (m == 0) return true;
  if (!std::isfinite(a) || !std::isfinite(inv)) return false;
  const IntActivations xa{nullptr, &a, m, false};
  return run_int_linear8(w, m, [&](int64_t t, int8_t* c8, int32_t* csum) {
    return quantize_row8_avx512_vnni(x + t * w.k, w.k, w.groups, inv, qmin, qmax, c8, csum);
  }, xa, y, bias);
}

bool int_linear8_dynamic(const IntWeights8& w, const float* x, int64_t m, double clip, int qmax, float* y,
                         const float* bias) {
  if (m < 0 || (m > 0 && (x == nullptr || y == nullptr)) || qmax < 1 || qmax > 127 || !(clip > 0.0 && clip <= 1.0))
    throw std::invalid_argument("int_linear8_dynamic: bad arguments");
  if (m == 0) return true;
  thread_local std::vector<float> steps;
  steps.resize(m);
  float* ps = steps.data();
  const IntActivations xa{nullptr, ps, m, true};
  return run_int_linear8(w, m, [&](int64_t t, int8_t* c8, int32_t* csum) {
    const float* row = x + t * w.k;
    float mn = 0, mx = 0;
    if (!row_min_max_avx512_vnni(row, w.k, &mn, &mx)) return false;
    ps[t] = dynamic_step(mn, mx, clip, qmax);
    return quantize_row8_avx512_vnni(row, w.k, w.groups, 1.0f / ps[t], -qmax - 1, qmax, c8, csum);
  }, xa, y, bias);
}

}  // namespace ptq::kernels
