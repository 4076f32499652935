#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/linear.h"

namespace ptq::kernels {

// cpu/linear_q8_avx2.cpp: 256-bit integer code, also what AVX-512 machines run (AVX-512 VNNI's vpdpbusd would
// fuse maddubs + madd; not written yet).
void linear_q8_avx2(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias);

bool q8_supports(const PackedWeights& w) {
  return w.kind == WeightKind::Quant && (w.groups == 1 || w.group % kQ8Block == 0);
}

void quantize_q8_blocks(const PackedWeights& w, const float* x, int8_t* q, float* d) {
  for (int64_t b = 0; b < w.kpad / kQ8Block; ++b) {
    float v[kQ8Block];
    float amax = 0;
    for (int64_t i = 0; i < kQ8Block; ++i) {
      const int64_t j = b * kQ8Block + i;
      v[i] = j < w.k ? x[w.perm.empty() ? j : w.perm[j]] : 0.0f;
      amax = std::max(amax, std::abs(v[i]));
    }
    const float step = amax > 0 ? amax / 127.0f : 1.0f;
    const float inv = 1.0f / step;
    for (int64_t i = 0; i < kQ8Block; ++i) q[b * kQ8Block + i] = int8_t(std::nearbyint(v[i] * inv));
    d[b] = step;
  }
}

void linear_q8_ref(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  // x̂ of every token in input-column order; then exactly linear_ref on x̂.
  std::vector<int8_t> q(w.kpad);
  std::vector<float> d(w.kpad / kQ8Block), xh(m * w.k);
  for (int64_t i = 0; i < m; ++i) {
    quantize_q8_blocks(w, x + i * w.k, q.data(), d.data());
    for (int64_t j = 0; j < w.k; ++j) xh[i * w.k + (w.perm.empty() ? j : w.perm[j])] = d[j / kQ8Block] * float(q[j]);
  }
  linear_ref(w, xh.data(), m, y, bias);
}

void linear_q8_isa(Isa isa, const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  if (!q8_supports(w)) throw std::invalid_argument("linear_q8: weights must be quantized with groups of 32k columns");
  if (m < 0 || (m > 0 && (x == nullptr || y == nullptr))) throw std::invalid_argument("linear_q8: bad arguments");
  if (static_cast<int>(isa) > static_cast<int>(detected_isa()))
    throw std::runtime_error(std::string("linear_q8: this CPU has no ") + isa_name(isa));
  if (m == 0) return;
  if (isa == Isa::Ref) return linear_q8_ref(w, x, m, y, bias);
  linear_q8_avx2(w, x, m, y, bias);
}

void linear_q8(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  linear_q8_isa(best_isa(), w, x, m, y, bias);
}

}  // namespace ptq::kernels
