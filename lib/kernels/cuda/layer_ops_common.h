// What one CUDA thread of the layer-op kernels (layer_ops.cu) computes, as functions compiled by nvcc and by the host
// compiler: tests/kernels/test_layer_ops.cpp runs them over every thread of a launch on the CPU (host emulation), so
// the indexing and the arithmetic of the kernels are tested where no GPU is present. Layouts: layer_ops.h.
//
// A "lane" is a thread's index among the `lanes` threads that share one row (norms: a block) or one key (attention:
// a warp); lane l takes columns l, l + lanes, ...
#pragma once

#include <cmath>
#include <cstdint>

#include "core/half.h"
#include "core/host_device.h"
#include "kernels/cuda/layer_ops_cuda.h"

namespace ptq::kernels::cuda {

constexpr int kNormThreads = 256;
constexpr int kAttnWarps = 4, kAttnThreads = 32 * kAttnWarps;
constexpr int kAttnChunk = 128;                                  // keys scored per step of the online softmax
constexpr int kAttnDimsPerThread = int(kAttnMaxHeadDim) / kAttnThreads;  // output dims a thread accumulates
static_assert(kAttnDimsPerThread * kAttnThreads == kAttnMaxHeadDim, "whole output dims per thread");

// ---- RMSNorm, LayerNorm: one block of kNormThreads per row --------------------------------------------------------

// Σ (x_j - shift) over the lane's columns (shift 0: Σ x_j), or Σ (x_j - shift)² when `square`, in double.
PTQ_HD double norm_partial(const float* x, int64_t d, double shift, bool square, int lane, int lanes) {
  double s = 0;
  for (int64_t j = lane; j < d; j += lanes) {
    const double v = double(x[j]) - shift;
    s += square ? v * v : v;
  }
  return s;
}

// 1 / √(sum_sq / d + eps): the row's scale from its (centred) sum of squares.
PTQ_HD double norm_scale(double sum_sq, int64_t d, float eps) { return 1.0 / sqrt(sum_sq / double(d) + double(eps)); }

// The lane's columns of y: float((x - shift) · r) · gamma (+ beta); with a split (layer_ops.h's NormSplit) y has
// split.width columns, column j reading x[index[j]].
PTQ_HD void norm_write(const float* x, int64_t d, double shift, double r, const float* gamma, const float* beta,
                       const NormSplit& split, int lane, int lanes, float* y) {
  const int64_t width = split.index != nullptr ? split.width : d;
  for (int64_t j = lane; j < width; j += lanes) {
    const float v = float((double(x[split.index != nullptr ? split.index[j] : j]) - shift) * r) * gamma[j];
    y[j] = beta != nullptr ? v + beta[j] : v;
  }
}

// ---- RoPE, SwiGLU, KV append: one thread per element -----------------------------------------------------------

// Rotates pair (i, i + head_dim / 2) of one head's row at position pos (i < head_dim / 2).
PTQ_HD void rope_pair(float* row, int64_t i, int64_t head_dim, int64_t pos, double theta) {
  const int64_t half = head_dim / 2;
  const double angle = double(pos) * (1.0 / pow(theta, double(2 * i) / double(head_dim)));  // as model.cpp
  const float c = float(cos(angle)), s = float(sin(angle));
  const float a = row[i], b = row[i + half];
  row[i] = a * c - b * s;
  row[i + half] = b * c + a * s;
}

PTQ_HD float swiglu_one(float gate, float up) { return gate / (1.0f + expf(-gate)) * up; }

// New element e of [m, kv_heads, head_dim] into both caches.
PTQ_HD void kv_append_one(const AttentionDims& a, const float* k_new, const float* v_new, int64_t past, int64_t e,
                          uint16_t* k_cache, uint16_t* v_cache) {
  const int64_t width = a.kv_heads * a.head_dim, t = e / width, g = e % width / a.head_dim, i = e % a.head_dim;
  const int64_t dst = (g * a.capacity + past + t) * a.head_dim + i;
  k_cache[dst] = f32_to_fp16(k_new[e]);
  v_cache[dst] = f32_to_fp16(v_new[e]);
}

// ---- attention: one block per (token, head) ------------------------------------------------------------------

PTQ_HD int64_t kv_head_of(const AttentionDims& a, int64_t h) { return h / (a.heads / a.kv_heads); }
// The first key a query at position pos reads (its last is pos).
PTQ_HD int64_t first_key(const AttentionDims& a, int64_t pos) {
  return a.window > 0 && pos - a.window + 1 > 0 ? pos - a.window + 1 : 0;
}
PTQ_HD float attention_scale(int64_t head_dim) { return float(1.0 / sqrt(double(head_dim))); }

// The lane's share of q · k for one key row (fp16 bits).
PTQ_HD float score_partial(const float* q, const uint16_t* k_row, int64_t head_dim, int lane, int lanes) {
  float s = 0.0f;
  for (int64_t i = lane; i < head_dim; i += lanes) s += q[i] * fp16_to_f32(k_row[i]);
  return s;
}

// Running maximum and sum of the online softmax (every thread of a block holds the same copy).
struct SoftmaxState {
  float max = -INFINITY;
  float sum = 0.0f;
};

// Takes a chunk's scores s[0 .. n): raises the running maximum and returns the factor e^(old max - new max) that
// rescales the sums so far (0 for the first chunk).
PTQ_HD float softmax_rescale(SoftmaxState& st, const float* s, int n) {
  float mx = st.max;
  for (int j = 0; j < n; ++j) mx = s[j] > mx ? s[j] : mx;
  const float corr = expf(st.max - mx);
  st.max = mx;
  return corr;
}

PTQ_HD float softmax_weight(float score, const SoftmaxState& st) { return expf(score - st.max); }

// Folds a chunk's weights p[0 .. n) into the running sum, in index order.
PTQ_HD void softmax_add(SoftmaxState& st, float corr, const float* p, int n) {
  float s = 0.0f;
  for (int j = 0; j < n; ++j) s += p[j];
  st.sum = st.sum * corr + s;
}

// Output dim i of one thread: acc · corr + Σ_j p[j] · v[j, i] over the chunk's value rows v (fp16 bits).
PTQ_HD float value_accumulate(float acc, float corr, const float* p, const uint16_t* v, int64_t head_dim, int n,
                              int64_t i) {
  float s = 0.0f;
  for (int j = 0; j < n; ++j) s += p[j] * fp16_to_f32(v[j * head_dim + i]);
  return acc * corr + s;
}

// ---- the online Hadamard (kernels/hadamard.h): one block per row, z the row's copy in shared memory ----------------
// Each step is kernels::hadamard_rotate's, element for element in the same fp32 operations (the butterflies are
// independent within a stage, so their order is free; a barrier separates the steps), hence bit for bit its output.

// z = x ⊙ signs, per block of p columns.
PTQ_HD void hadamard_load(const float* x, const float* signs, int64_t p, int64_t n, int lane, int lanes, float* z) {
  for (int64_t i = lane; i < n; i += lanes) z[i] = x[i] * signs[i % p];
}

// Stage h (1, 2, .., p/2) of every block's butterflies: (u, w) -> (u + w, u - w) across distance h; butterfly e of
// the n / 2 is pair r = e mod p/2 of block e / (p/2).
PTQ_HD void hadamard_stage(float* z, int64_t p, int64_t n, int64_t h, int lane, int lanes) {
  const int64_t half = p / 2;
  for (int64_t e = lane; e < n / 2; e += lanes) {
    const int64_t r = e % half, i = (e / half) * p + (r / h) * 2 * h + r % h;
    const float u = z[i], w = z[i + h];
    z[i] = u + w;
    z[i + h] = u - w;
  }
}

// z ·= 1/√p.
PTQ_HD void hadamard_scale(float* z, int64_t n, float scale, int lane, int lanes) {
  for (int64_t i = lane; i < n; i += lanes) z[i] = mul_rn(z[i], scale);
}

// x_b = Σ_a float(R[a][b]) · z_a, in increasing a from 0 (one product when m = 1, as hadamard.cpp).
PTQ_HD void hadamard_mix(const float* z, const float* r, int64_t p, int64_t m, int lane, int lanes, float* x) {
  for (int64_t j = lane; j < p * m; j += lanes) {
    if (m == 1) {
      x[j] = mul_rn(r[0], z[j]);
      continue;
    }
    const int64_t b = j / p, i = j % p;
    float y = 0.0f;
    for (int64_t a = 0; a < m; ++a) y = y + mul_rn(r[a * m + b], z[a * p + i]);
    x[j] = y;
  }
}

}  // namespace ptq::kernels::cuda
