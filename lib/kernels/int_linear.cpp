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

// Codes of m tokens made row by row into `out` (k columns in `groups` groups): code_row(t, c8, csum, a) writes token
// t's k codes, its group sums and (per token) its step, and returns false when a code is missing (outside a signed
// byte, or an input that is not finite). Rows run on the OpenMP threads when there are many. False when a row failed.
template <class CodeRow>
bool make_codes8(int64_t m, int64_t k, int64_t groups, bool per_token, const CodeRow& code_row, Codes8& out) {
  if (!has_avx512_vnni()) throw std::runtime_error("int_linear8: this CPU has no AVX-512 VNNI");
  out.m = m;
  out.k = k;
  out.groups = groups;
  out.per_token = per_token;
  out.c.resize(size_t(m * k));
  out.csum.resize(size_t(m * groups));
  out.a.resize(per_token ? size_t(m) : size_t(1));
  int8_t* pc = out.c.data();
  int32_t* ps = out.csum.data();
  float* pa = out.a.data();
  int failed = 0;
#pragma omp parallel for schedule(static) reduction(| : failed) if (m * k >= (int64_t(1) << 16))
  for (int64_t t = 0; t < m; ++t) failed |= code_row(t, pc + t * k, ps + t * groups, pa) ? 0 : 1;
  return failed == 0;
}

// The codes' buffers of the one-call forms (int_linear8, _static, _dynamic), reused per thread.
Codes8& scratch_codes() {
  thread_local Codes8 c;
  return c;
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

void int_linear8_codes(const IntWeights8& w, const Codes8& codes, float* y, const float* bias) {
  if (codes.k != w.k || codes.groups != w.groups || codes.m < 0 || int64_t(codes.c.size()) != codes.m * codes.k ||
      int64_t(codes.csum.size()) != codes.m * codes.groups ||
      int64_t(codes.a.size()) != (codes.per_token ? codes.m : int64_t(1)))
    throw std::invalid_argument("int_linear8_codes: codes of " + std::to_string(codes.k) + " columns in " +
                                std::to_string(codes.groups) + " groups for weights of " + std::to_string(w.k) +
                                " in " + std::to_string(w.groups));
  if (codes.m == 0) return;
  if (y == nullptr) throw std::invalid_argument("int_linear8_codes: null output");
  const IntActivations x{nullptr, codes.a.data(), codes.m, codes.per_token};
  int_linear8_avx512_vnni(w, codes.c.data(), codes.csum.data(), x, y, bias);
}

bool int_linear8(const IntWeights8& w, const IntActivations& x, float* y, const float* bias) {
  if (x.m < 0 || (x.m > 0 && (x.c == nullptr || x.a == nullptr || y == nullptr)))
    throw std::invalid_argument("int_linear8: null activations, steps or output");
  if (x.m == 0) return true;
  const int64_t width = w.k / w.groups;
  Codes8& codes = scratch_codes();
  const bool ok = make_codes8(x.m, w.k, w.groups, x.per_token, [&](int64_t t, int8_t* c8, int32_t* csum, float* a) {
    if (x.per_token || t == 0) a[x.per_token ? t : 0] = x.a[x.per_token ? t : 0];
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
  }, codes);
  if (ok) int_linear8_codes(w, codes, y, bias);
  return ok;
}

bool codes8_static(const float* x, int64_t m, int64_t k, int64_t groups, float inv, float a, int qmin, int qmax,
                   Codes8& out) {
  if (m < 0 || k <= 0 || groups <= 0 || k % groups != 0 || (m > 0 && x == nullptr) || qmin < -128 || qmax > 127 ||
      qmin > qmax)
    throw std::invalid_argument("codes8_static: bad arguments");
  if (!std::isfinite(a) || !std::isfinite(inv)) return false;
  return make_codes8(m, k, groups, false, [&](int64_t t, int8_t* c8, int32_t* csum, float* steps) {
    if (t == 0) steps[0] = a;
    return quantize_row8_avx512_vnni(x + t * k, k, groups, inv, qmin, qmax, c8, csum);
  }, out);
}

bool codes8_dynamic(const float* x, int64_t m, int64_t k, int64_t groups, double clip, int qmax, Codes8& out) {
  if (m < 0 || k <= 0 || groups <= 0 || k % groups != 0 || (m > 0 && x == nullptr) || qmax < 1 || qmax > 127 ||
      !(clip > 0.0 && clip <= 1.0))
    throw std::invalid_argument("codes8_dynamic: bad arguments");
  return make_codes8(m, k, groups, true, [&](int64_t t, int8_t* c8, int32_t* csum, float* steps) {
    const float* row = x + t * k;
    float mn = 0, mx = 0;
    if (!row_min_max_avx512_vnni(row, k, &mn, &mx)) return false;
    steps[t] = dynamic_step(mn, mx, clip, qmax);
    return quantize_row8_avx512_vnni(row, k, groups, 1.0f / steps[t], -qmax - 1, qmax, c8, csum);
  }, out);
}

bool int_linear8_static(const IntWeights8& w, const float* x, int64_t m, float inv, float a, int qmin, int qmax,
                        float* y, const float* bias) {
  if (m < 0 || (m > 0 && (x == nullptr || y == nullptr)) || qmin < -128 || qmax > 127 || qmin > qmax)
    throw std::invalid_argument("int_linear8_static: bad arguments");
  if (m == 0) return true;
  Codes8& codes = scratch_codes();
  if (!codes8_static(x, m, w.k, w.groups, inv, a, qmin, qmax, codes)) return false;
  int_linear8_codes(w, codes, y, bias);
  return true;
}

bool int_linear8_dynamic(const IntWeights8& w, const float* x, int64_t m, double clip, int qmax, float* y,
                         const float* bias) {
  if (m < 0 || (m > 0 && (x == nullptr || y == nullptr)) || qmax < 1 || qmax > 127 || !(clip > 0.0 && clip <= 1.0))
    throw std::invalid_argument("int_linear8_dynamic: bad arguments");
  if (m == 0) return true;
  Codes8& codes = scratch_codes();
  if (!codes8_dynamic(x, m, w.k, w.groups, clip, qmax, codes)) return false;
  int_linear8_codes(w, codes, y, bias);
  return true;
}

}  // namespace ptq::kernels
