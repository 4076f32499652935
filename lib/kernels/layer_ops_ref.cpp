// Scalar references of layer_ops.h: plain loops, sums in double, one rounding to fp32 where model.cpp rounds.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/half.h"
#include "kernels/layer_ops.h"

namespace ptq::kernels {

namespace {

void require(bool ok, const char* who, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(who) + ": " + what);
}

// y = float(x · r) · gamma (+ beta) for one row (x already centred by the caller's `shift`); with a split, column j
// reads x[index[j]].
void scale_row(const float* x, int64_t d, double shift, double r, const float* gamma, const float* beta, float* y,
               const NormSplit& split = {}) {
  const int64_t width = split.index != nullptr ? split.width : d;
  for (int64_t j = 0; j < width; ++j) {
    const float v = float((double(x[split.index != nullptr ? split.index[j] : j]) - shift) * r) * gamma[j];
    y[j] = beta != nullptr ? v + beta[j] : v;
  }
}

}  // namespace

// Argument checks shared with the CUDA twins (layer_ops.cu declares them).
void check_norm_args(const float* x, int64_t m, int64_t d, const float* gamma, const float* y, const char* who) {
  require(m >= 0 && d > 0, who, "needs m >= 0 rows of d > 0 columns");
  require(m == 0 || (x != nullptr && gamma != nullptr && y != nullptr), who, "null input, gamma or output");
}

void check_rope_args(const float* x, int64_t m, int64_t heads, int64_t head_dim, const int64_t* positions,
                     const char* who) {
  require(m >= 0 && heads > 0 && head_dim > 0 && head_dim % 2 == 0, who, "needs heads > 0 and an even head_dim");
  require(m == 0 || (x != nullptr && positions != nullptr), who, "null input or positions");
}

void check_attention_dims(const AttentionDims& a, int64_t m, int64_t past, const char* who) {
  require(a.kv_heads > 0 && a.heads > 0 && a.heads % a.kv_heads == 0, who,
          std::to_string(a.heads) + " heads are not a positive multiple of " + std::to_string(a.kv_heads) +
              " kv heads");
  require(a.head_dim > 0 && a.head_dim % 2 == 0, who, "head_dim " + std::to_string(a.head_dim) + " is not even");
  require(m >= 0 && past >= 0 && past + m <= a.capacity, who,
          "positions " + std::to_string(past) + " + " + std::to_string(m) + " do not fit a cache of " +
              std::to_string(a.capacity));
  require(a.window >= 0, who, "negative sliding window");
}

void check_norm_split(const NormSplit& split, int64_t d, const char* who) {
  if (split.index == nullptr) return;
  require(split.width > 0, who, "a channel split of no columns");
  for (int64_t j = 0; j < split.width; ++j)
    require(split.index[j] >= 0 && split.index[j] < d, who,
            "split column " + std::to_string(j) + " reads input column " + std::to_string(split.index[j]) +
                ", outside 0.." + std::to_string(d - 1));
}

void rms_norm_ref(const float* x, int64_t m, int64_t d, const float* gamma, float eps, float* y, const float* beta,
                  const NormSplit& split) {
  check_norm_args(x, m, d, gamma, y, "rms_norm_ref");
  check_norm_split(split, d, "rms_norm_ref");
  const int64_t width = split.index != nullptr ? split.width : d;
  for (int64_t t = 0; t < m; ++t) {
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += double(x[t * d + j]) * double(x[t * d + j]);
    scale_row(x + t * d, d, 0.0, 1.0 / std::sqrt(ss / double(d) + double(eps)), gamma, beta, y + t * width, split);
  }
}

void layer_norm_ref(const float* x, int64_t m, int64_t d, const float* gamma, const float* beta, float eps, float* y) {
  check_norm_args(x, m, d, gamma, y, "layer_norm_ref");
  for (int64_t t = 0; t < m; ++t) {
    double sum = 0, var = 0;
    for (int64_t j = 0; j < d; ++j) sum += double(x[t * d + j]);
    const double mean = sum / double(d);
    for (int64_t j = 0; j < d; ++j) var += (double(x[t * d + j]) - mean) * (double(x[t * d + j]) - mean);
    scale_row(x + t * d, d, mean, 1.0 / std::sqrt(var / double(d) + double(eps)), gamma, beta, y + t * d);
  }
}

void rope_ref(float* x, int64_t m, int64_t heads, int64_t head_dim, const int64_t* positions, double theta) {
  check_rope_args(x, m, heads, head_dim, positions, "rope_ref");
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double inv_freq = 1.0 / std::pow(theta, double(2 * i) / double(head_dim));
    for (int64_t t = 0; t < m; ++t) {
      const double angle = double(positions[t]) * inv_freq;
      const float c = float(std::cos(angle)), s = float(std::sin(angle));
      for (int64_t h = 0; h < heads; ++h) {
        float* row = x + (t * heads + h) * head_dim;
        const float a = row[i], b = row[i + half];
        const float ac = a * c, bs = b * s, bc = b * c, as = a * s;  // each product rounded, as model.cpp's tensors
        row[i] = ac - bs;
        row[i + half] = bc + as;
      }
    }
  }
}

void swiglu_ref(const float* gate, const float* up, int64_t count, float* out) {
  require(count >= 0, "swiglu_ref", "negative count");
  for (int64_t i = 0; i < count; ++i) {
    const double g = gate[i];
    out[i] = float(g / (1.0 + std::exp(-g))) * up[i];
  }
}

void add_ref(float* y, const float* x, int64_t count) {
  require(count >= 0, "add_ref", "negative count");
  for (int64_t i = 0; i < count; ++i) y[i] += x[i];
}

void kv_append_ref(const AttentionDims& a, const float* k_new, const float* v_new, int64_t m, int64_t past,
                   uint16_t* k_cache, uint16_t* v_cache) {
  check_attention_dims(a, m, past, "kv_append_ref");
  const int64_t width = a.kv_heads * a.head_dim;
  for (int64_t t = 0; t < m; ++t)
    for (int64_t g = 0; g < a.kv_heads; ++g)
      for (int64_t i = 0; i < a.head_dim; ++i) {
        const int64_t dst = (g * a.capacity + past + t) * a.head_dim + i, src = t * width + g * a.head_dim + i;
        k_cache[dst] = f32_to_fp16(k_new[src]);
        v_cache[dst] = f32_to_fp16(v_new[src]);
      }
}

void attention_ref(const AttentionDims& a, const float* q, int64_t m, int64_t past, const uint16_t* k_cache,
                   const uint16_t* v_cache, float* out) {
  check_attention_dims(a, m, past, "attention_ref");
  const int64_t hd = a.head_dim, rep = a.heads / a.kv_heads;
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<double> p, acc;
  for (int64_t t = 0; t < m; ++t)
    for (int64_t h = 0; h < a.heads; ++h) {
      const int64_t pos = past + t, lo = a.window > 0 && pos - a.window + 1 > 0 ? pos - a.window + 1 : 0;
      const float* qh = q + (t * a.heads + h) * hd;
      const uint16_t* k = k_cache + (h / rep) * a.capacity * hd;
      const uint16_t* v = v_cache + (h / rep) * a.capacity * hd;
      p.assign(size_t(pos + 1 - lo), 0.0);
      double mx = -INFINITY, sum = 0;
      for (int64_t j = lo; j <= pos; ++j) {
        double s = 0;
        for (int64_t i = 0; i < hd; ++i) s += double(qh[i]) * double(fp16_to_f32(k[j * hd + i]));
        p[size_t(j - lo)] = s * scale;
        mx = std::max(mx, s * scale);
      }
      for (double& e : p) sum += (e = std::exp(e - mx));
      acc.assign(size_t(hd), 0.0);
      for (int64_t j = lo; j <= pos; ++j)
        for (int64_t i = 0; i < hd; ++i) acc[size_t(i)] += p[size_t(j - lo)] * double(fp16_to_f32(v[j * hd + i]));
      for (int64_t i = 0; i < hd; ++i) out[(t * a.heads + h) * hd + i] = float(acc[size_t(i)] / sum);
    }
}

}  // namespace ptq::kernels
