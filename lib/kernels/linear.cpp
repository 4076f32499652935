#include "kernels/linear.h"

#include <stdexcept>
#include <string>

namespace ptq::kernels {

// Defined in cpu/linear_avx512.cpp and cpu/linear_avx2.cpp (each compiled for its instruction set only).
void linear_avx512(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias);
void linear_avx2(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias);

namespace {

using LinearFn = void (*)(const PackedWeights&, const float*, int64_t, float*, const float*);

// One row per instruction set, indexed by Isa.
constexpr LinearFn kLinear[] = {linear_ref, linear_avx2, linear_avx512};
static_assert(sizeof(kLinear) / sizeof(kLinear[0]) == int(Isa::Avx512) + 1, "one kernel per Isa");

void check_args(const PackedWeights& w, const float* x, int64_t m, const float* y) {
  if (w.n <= 0 || w.k <= 0) throw std::invalid_argument("linear: empty weights");
  if (m < 0) throw std::invalid_argument("linear: negative token count");
  if (m > 0 && (x == nullptr || y == nullptr)) throw std::invalid_argument("linear: null input or output");
  if (w.kind == WeightKind::Quant && (w.group <= 0 || w.groups * w.group != w.k))
    throw std::invalid_argument("linear: inconsistent quantized layout");
  if (w.kind != WeightKind::Quant && w.data == nullptr) throw std::invalid_argument("linear: float weights without data");
}

}  // namespace

bool vector_kernel_supports(const PackedWeights& w) {
  return w.kind != WeightKind::Quant || w.groups == 1 || w.group % 16 == 0;
}

void linear_isa(Isa isa, const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  check_args(w, x, m, y);
  if (static_cast<int>(isa) > static_cast<int>(detected_isa()))
    throw std::runtime_error(std::string("linear: this CPU has no ") + isa_name(isa));
  if (m == 0) return;
  if (!vector_kernel_supports(w)) isa = Isa::Ref;
  kLinear[static_cast<int>(isa)](w, x, m, y, bias);
}

void linear(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  linear_isa(best_isa(), w, x, m, y, bias);
}

}  // namespace ptq::kernels
