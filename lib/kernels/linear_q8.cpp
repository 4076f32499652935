#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/linear.h"
#include "kernels/cpu/linear_q8_common.h"

namespace ptq::kernels {

// cpu/linear_q8_avx2.cpp: 256-bit integer code, also what AVX-512 machines without VNNI run.
void linear_q8_avx2(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias);
// cpu/linear_q8_avx512.cpp: AVX-512 VNNI (vpdpbusd), for Isa::Avx512 where the CPU has VNNI.
void linear_q8_avx512_vnni(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias);

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

void q8_block_groups(const PackedWeights& w, std::vector<int32_t>& out) {
  const int64_t blocks = w.kpad / kQ8Block, per_group = w.groups == 1 ? blocks : w.group / kQ8Block;
  out.resize(blocks);
  for (int64_t b = 0; b < blocks; ++b) out[b] = int32_t(std::min(b / per_group, w.groups - 1));
}

void q8_group_sums(const PackedWeights& w, const int8_t* q, const float* d, std::vector<float>& xsum) {
  const int64_t blocks = w.kpad / kQ8Block, per_group = w.groups == 1 ? blocks : w.group / kQ8Block;
  xsum.assign(w.groups, 0.0f);
  for (int64_t b = 0; b < blocks; ++b) {
    int s = 0;
    for (int64_t i = 0; i < kQ8Block; ++i) s += q[b * kQ8Block + i];
    xsum[std::min(b / per_group, w.groups - 1)] += d[b] * float(s);
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
  if (isa == Isa::Avx512 && has_avx512_vnni()) return linear_q8_avx512_vnni(w, x, m, y, bias);
  linear_q8_avx2(w, x, m, y, bias);
}

int64_t q8_max_tokens() {
  return best_isa() == Isa::Avx512 && has_avx512_vnni() ? std::numeric_limits<int64_t>::max() : kGemvMaxTokens;
}

void linear_q8(const PackedWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  linear_q8_isa(best_isa(), w, x, m, y, bias);
}

}  // namespace ptq::kernels
