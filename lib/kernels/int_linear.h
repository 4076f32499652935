// The integer linear op of activation-quantized modules (quant/act_linear.h): integer activation codes times
// integer weights, exact int32 accumulators per weight group, one double epilogue.
//
// Layout (all row-major, contiguous):
//   c   [m, k]  int16  activation codes q - zero, columns in weight-group order (act-order columns gathered first)
//   w   [n, k]  int16  weight integers q - zero, same column order
//   s   [n, G]  fp32   weight steps; group g holds columns [g·W, (g+1)·W), W = k / G
//   a   [m] (per token) or [1] (per tensor)  fp32  activation steps
//   y   [m, n]  fp32
//   acc[t, n, g] = Σ_{j < W} c[t, g·W + j] · w[n, g·W + j]                                    (exact int32)
//   y[t, n]      = float( double(a_t) · Σ_{g = 0, 1, ..} double(s[n, g]) · double(acc[t, n, g]) )  (+ bias[n] in fp32)
// The sum over g runs in increasing g from 0.0 and a multiplies the finished sum: act_linear.cpp's order, so every
// ISA and the scalar twin give bit-identical outputs.
//
// Bounds: |c|, |w| <= kIntLinearMaxCode = 255 (8-bit grids: a symmetric code is in [-128, 127], an asymmetric
// q - zero in [-255, 255]). With C = max |c| of the call and Wmax = IntWeights::max_abs (a bound on |w| the caller
// states, 255 by default), every partial sum of a group, in any order (vector lanes, pairs of vpmaddwd), is bounded
// by W · C · Wmax; the kernels refuse (std::invalid_argument) a call where that could exceed 2^31 - 1. For the
// worst case 255 · 255 that is W <= kIntLinearMaxWidth = 33025 columns; symmetric 8-bit codes on both sides
// (128 · 128) allow 131071. The kernels scan c on every call (m·k reads); the weights, fixed per module, are
// measured once by the caller with int_weights_max_abs() (a weight beyond max_abs makes the vector kernels' int32
// sums wrong, never undefined).
#pragma once

#include <cstdint>
#include <vector>

#include "core/grid_math.h"
#include "kernels/cpu_features.h"

namespace ptq::kernels {

constexpr int32_t kIntLinearMaxCode = 255;
constexpr int64_t kIntLinearMaxWidth = 33025;  // floor((2^31 - 1) / 255²): any codes within ±255
// Whether groups of `width` columns hold exactly in int32 for |c| <= max_c, |w| <= max_w.
constexpr bool int_linear_width_fits(int64_t width, int64_t max_c, int64_t max_w) {
  return width * max_c * max_w <= int64_t(2147483647);
}

// Weights of one module (views; the caller owns the memory).
struct IntWeights {
  const int16_t* w = nullptr;  // [n, k]
  const float* s = nullptr;    // [n, groups]
  int64_t n = 0, k = 0, groups = 1;
  int32_t max_abs = kIntLinearMaxCode;  // |w| <= max_abs <= 255 (the int32 bound above)
};

// Quantized activations of m tokens (views).
struct IntActivations {
  const int16_t* c = nullptr;  // [m, k]
  const float* a = nullptr;    // [m] when per_token, else [1]
  int64_t m = 0;
  bool per_token = true;
};

// How an activation-quantized module makes its input codes (quant/act_quant.h's integer semantics, in
// core/grid_math.h's act_grid / act_code): on `grid` (static per tensor), or per token on the grid of the row's range.
struct ActCodes {
  bool per_token = true;
  bool sym = true;
  double clip = 1;
  int qmin = -128, qmax = 127;
  grid_math::ActGrid grid;  // static per tensor; unused per token
};

// codes [m, k] of x [m, x_cols] (fp32) with columns in group order (column j reads x[t, perm[j]], each perm[j] in
// [0, x_cols); perm null: natural order, k == x_cols) and the steps a [m] (a[t] = the scale of token t's grid, whose
// range is that of x's row): the codes int_linear's IntActivations carry, per token. k may exceed x_cols where the
// weights were padded (cuda::pad_groups_to_dwords: the padding columns read some column and meet zero weights).
void act_codes_ref(const ActCodes& p, const float* x, int64_t m, int64_t x_cols, int64_t k, const int32_t* perm,
                   int16_t* codes, float* a);

// max |w| over the n · k weight integers (call once per module; IntWeights::max_abs).
int32_t int_weights_max_abs(const IntWeights& w);

// y [m, n] as above, on the best instruction set (best_isa()) with OpenMP threads over output rows; bias [n] or null.
void int_linear(const IntWeights& w, const IntActivations& x, float* y, const float* bias = nullptr);
// The same on a given instruction set; Isa::Ref is int_linear_ref. Throws when the CPU lacks it.
void int_linear_isa(Isa isa, const IntWeights& w, const IntActivations& x, float* y, const float* bias = nullptr);
// Scalar twin: plain loops, int64 accumulators.
void int_linear_ref(const IntWeights& w, const IntActivations& x, float* y, const float* bias = nullptr);

// The accumulators acc [m, n, groups] alone (x.a is not read), for checking the kernels bit for bit.
void int_linear_acc_isa(Isa isa, const IntWeights& w, const IntActivations& x, int32_t* acc);
void int_linear_acc_ref(const IntWeights& w, const IntActivations& x, int64_t* acc);

// ---- 1-byte weights (AVX-512 VNNI) --------------------------------------------------------------------------
// The same y, bit for bit, from weights held as bytes: for modules whose integers fit a signed byte and whose groups
// are whole dwords, on CPUs with AVX-512 VNNI. Layout (16-row tiles, rows past n zero):
//   tiles[((t · k/4) + j) · 64 + 4 i + b] = w[16 t + i, 4 j + b] + 128   (u8)
//   s8[(t · groups + g) · 16 + i]          = double(s[16 t + i, g])
// One vpdpbusd of a 64-byte vector against a token's codes 4j .. 4j+3 (one dword, broadcast) adds four products to
// each of the tile's 16 rows: acc' = Σ (w + 128) · c = acc + 128 · Σ_group c, so the kernel subtracts 128 · Σ c per
// token and group and keeps the exact int32 group sums (|acc'| <= width · 255 · 128: width <= 65793); the double
// epilogue then runs per row exactly as int_linear's. Decode reads 1 byte per weight (int_linear: 2), or half.
//
// Weights that fit 4 bits (every w in [-8, 7], groups a multiple of 8 columns: W4A8, W4A4) are kept as half bytes,
// bits = 4, two columns-dwords per 64-byte vector:
//   tiles[((t · k/8) + j) · 64 + 4 i + b] = (w[16 t + i, 8 j + b] + 8) | (w[16 t + i, 8 j + 4 + b] + 8) << 4
// The kernel splits a vector into its low and high nibbles (values 0..15, one vpand and a shift) for two vpdpbusd
// against codes 8j .. 8j+3 and 8j+4 .. 8j+7, and subtracts 8 · Σ c: the same exact sums from half the bytes read.
constexpr int64_t kIntLinear8MaxWidth = 65793;  // floor((2^31 - 1) / (255 · 128))
struct IntWeights8 {
  std::vector<uint8_t> tiles;
  std::vector<double> s8;
  int64_t n = 0, k = 0, groups = 1;
  int bits = 8;  // 8: a byte per weight; 4: half a byte (chosen by pack_int_weights8)
};
// Whether pack_int_weights8 takes `w` on this CPU: AVX-512 VNNI (best_isa() AVX-512), every w in [-128, 127],
// groups of a multiple of 4 columns and at most kIntLinear8MaxWidth.
bool int_linear8_supports(const IntWeights& w);
// Half bytes where the weights fit 4 bits as above, else bytes.
IntWeights8 pack_int_weights8(const IntWeights& w);
// The weight integers back: out [n, k] (tests, and the int16 kernel's rare fallback).
void unpack_int_weights8(const IntWeights8& w, int16_t* out);
// y [m, n] as int_linear(w, x, y, bias) for the weights packed from w, bit for bit. Returns false (y untouched)
// when an activation code is outside [-128, 127]: the caller then runs int_linear on the int16 weights.
bool int_linear8(const IntWeights8& w, const IntActivations& x, float* y, const float* bias = nullptr);
// Static symmetric per-tensor activations straight from fp32: c = clamp(nearbyint(x · inv), qmin, qmax) (quant/
// act_quant.h's rounding, inv = 1 / step in fp32; qmin >= -128, qmax <= 127), then y as int_linear8 with the step a.
// x [m, w.k] fp32. Returns false (y untouched) when an input is not finite: the caller's own path reports it.
bool int_linear8_static(const IntWeights8& w, const float* x, int64_t m, float inv, float a, int qmin, int qmax,
                        float* y, const float* bias = nullptr);
// Per-token dynamic symmetric activations straight from fp32, quantize_activation's per-token grid: per row t,
// a_t = float(double(max(-min(x_t, 0), max(x_t, 0))) · clip / qmax) (1 when below FLT_MIN), then c = clamp(nearbyint(
// x · (1 / a_t)), -qmax - 1, qmax) and y as int_linear8 with the steps a_t (qmax <= 127: 8-bit grids and below).
// Returns false (y untouched) when an input is not finite.
bool int_linear8_dynamic(const IntWeights8& w, const float* x, int64_t m, double clip, int qmax, float* y,
                         const float* bias = nullptr);

// The same two steps apart, so that modules reading one input on one grid (q, k and v of a norm's output; gate and
// up) make its codes once: the byte codes c [m, k], each group's code sum csum [m, groups] (the offset the byte
// weights need; groups: those of the modules that consume them) and the steps a ([m] per token, else [1]).
struct Codes8 {
  std::vector<int8_t> c;
  std::vector<int32_t> csum;
  std::vector<float> a;
  int64_t m = 0, k = 0, groups = 1;
  bool per_token = false;
};
// int_linear8_static's and int_linear8_dynamic's codes (arguments as theirs); false (out unusable) where an input is
// not finite.
bool codes8_static(const float* x, int64_t m, int64_t k, int64_t groups, float inv, float a, int qmin, int qmax,
                   Codes8& out);
bool codes8_dynamic(const float* x, int64_t m, int64_t k, int64_t groups, double clip, int qmax, Codes8& out);
// y [m, n] from codes made for w's columns and groups (std::invalid_argument otherwise): int_linear8_static's or
// int_linear8_dynamic's y on the same input, bit for bit.
void int_linear8_codes(const IntWeights8& w, const Codes8& codes, float* y, const float* bias = nullptr);

}  // namespace ptq::kernels
