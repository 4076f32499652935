// The decoder's layer ops: the scalar references of layer_ops.h and their CUDA twins (cuda/layer_ops_cuda.h).
//  - untagged: the references against hand-computed cases;
//  - "[cuda-host]": the per-thread functions of cuda/layer_ops_common.h run over every thread of each launch on the
//    CPU (host emulation, mirroring layer_ops.cu's indexing), against the references;
//  - "[.cuda]" (hidden unless asked for with "[cuda]"): the kernels on a device against the references (ctest's
//    cuda_kernels entry; skipped without a device).
// u = 2^-24 is fp32's unit roundoff; every tolerance below is a first-order bound in u, explained where it is built.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <random>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "core/half.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/layer_ops_common.h"
#include "kernels/cuda/layer_ops_cuda.h"
#include "kernels/hadamard.h"
#include "kernels/layer_ops.h"

using namespace ptq::kernels;
namespace cu = ptq::kernels::cuda;

namespace {

const double kU = std::ldexp(1.0, -24);

std::vector<float> random_vec(size_t n, std::mt19937& rng, float mean = 0.0f, float sd = 1.0f) {
  std::normal_distribution<float> nd(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// ---- norms ---------------------------------------------------------------------------------------------------

struct NormData {
  int64_t m, d;
  std::vector<float> x, gamma, beta;
};

NormData make_norm(int64_t m, int64_t d, float offset, std::mt19937& rng) {
  return {m, d, random_vec(size_t(m * d), rng, offset), random_vec(size_t(d), rng, 1.0f, 0.5f),
          random_vec(size_t(d), rng)};
}

// The kernel and the reference both compute float((x - mean) · r) · gamma (+ beta) from double sums that differ
// only in order (relative ~d·2^-53, far below u), so float((x - mean) · r) is equal or one ulp (2u) apart; the fp32
// product and add round the same or (device FMA) once less: 4u·(|x̂·gamma| + |beta|), x̂ the exact normalised value.
// LayerNorm's x - mean also carries the means' difference, at most d·2^-52·max|x|, times r·|gamma|.
void compare_norm(const NormData& n, bool centre, bool with_beta, float eps, const std::vector<float>& got) {
  for (int64_t t = 0; t < n.m; ++t) {
    const float* x = n.x.data() + t * n.d;
    double mean = 0, ss = 0, xmax = 0;
    if (centre)
      for (int64_t j = 0; j < n.d; ++j) mean += x[j] / double(n.d);
    for (int64_t j = 0; j < n.d; ++j) {
      ss += (x[j] - mean) * (x[j] - mean);
      xmax = std::max(xmax, double(std::fabs(x[j])));
    }
    const double r = 1.0 / std::sqrt(ss / double(n.d) + eps);
    std::vector<float> want(size_t(n.d));
    if (centre)
      layer_norm_ref(x, 1, n.d, n.gamma.data(), with_beta ? n.beta.data() : nullptr, eps, want.data());
    else
      rms_norm_ref(x, 1, n.d, n.gamma.data(), eps, want.data(), with_beta ? n.beta.data() : nullptr);
    for (int64_t j = 0; j < n.d; ++j) {
      const double g = std::fabs(n.gamma[j]), b = with_beta ? std::fabs(n.beta[j]) : 0.0;
      const double tol = 4 * kU * (std::fabs(x[j] - mean) * r * g + b) + double(n.d) * std::ldexp(xmax, -52) * r * g;
      INFO((centre ? "LayerNorm" : "RMSNorm") << " row " << t << " of " << n.m << ", column " << j << " of " << n.d);
      REQUIRE(std::fabs(double(got[t * n.d + j]) - double(want[j])) <= tol);
    }
  }
}

// norm_kernel on the CPU: the block's lanes one after another, the block sums in lane order.
std::vector<float> norm_host(const NormData& n, bool centre, bool with_beta, float eps) {
  std::vector<float> y(n.x.size(), NAN);
  for (int64_t t = 0; t < n.m; ++t) {
    const float* x = n.x.data() + t * n.d;
    double mean = 0, ss = 0;
    const int lanes = cu::kNormThreads;
    if (centre) {
      for (int lane = 0; lane < lanes; ++lane) mean += cu::norm_partial(x, n.d, 0.0, false, lane, lanes);
      mean /= double(n.d);
    }
    for (int lane = 0; lane < lanes; ++lane) ss += cu::norm_partial(x, n.d, mean, true, lane, lanes);
    const double r = cu::norm_scale(ss, n.d, eps);
    const float* beta = with_beta ? n.beta.data() : nullptr;
    float* yr = y.data() + t * n.d;
    for (int lane = 0; lane < lanes; ++lane)
      cu::norm_write(x, n.d, mean, r, n.gamma.data(), beta, NormSplit{}, lane, lanes, yr);
  }
  return y;
}

// A channel split of d columns into d + d/3 + 1: every column once, then copies of every third, and column d - 1
// again (an odd width); gamma and beta of that width.
struct SplitNorm {
  NormData n;
  std::vector<int64_t> index;
  std::vector<float> gamma, beta;
};
SplitNorm make_split(int64_t m, int64_t d, std::mt19937& rng) {
  SplitNorm s{make_norm(m, d, 0.0f, rng), {}, {}, {}};
  for (int64_t j = 0; j < d; ++j) s.index.push_back(j);
  for (int64_t j = 0; j < d; j += 3) s.index.push_back(j);
  s.index.push_back(d - 1);
  s.gamma = random_vec(s.index.size(), rng, 1.0f, 0.5f);
  s.beta = random_vec(s.index.size(), rng);
  return s;
}

// The split against rms_norm_ref with the split; the same tolerance as compare_norm (RMSNorm: no mean), the
// column's gamma and beta those of the emitted column.
void compare_split(const SplitNorm& s, float eps, const std::vector<float>& got) {
  const int64_t w = int64_t(s.index.size()), d = s.n.d;
  std::vector<float> want(size_t(s.n.m * w));
  rms_norm_ref(s.n.x.data(), s.n.m, d, s.gamma.data(), eps, want.data(), s.beta.data(), NormSplit{s.index.data(), w});
  for (int64_t t = 0; t < s.n.m; ++t) {
    const float* x = s.n.x.data() + t * d;
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += double(x[j]) * x[j];
    const double r = 1.0 / std::sqrt(ss / double(d) + eps);
    for (int64_t j = 0; j < w; ++j) {
      const double tol = 4 * kU * (std::fabs(x[s.index[size_t(j)]]) * r * std::fabs(s.gamma[size_t(j)]) +
                                   std::fabs(s.beta[size_t(j)]));
      INFO("row " << t << ", emitted column " << j << " of " << w << " (input column " << s.index[size_t(j)] << ")");
      REQUIRE(std::fabs(double(got[size_t(t * w + j)]) - double(want[size_t(t * w + j)])) <= tol);
    }
  }
}

std::vector<float> split_host(const SplitNorm& s, float eps) {
  const int64_t w = int64_t(s.index.size()), d = s.n.d;
  std::vector<float> y(size_t(s.n.m * w), NAN);
  const int lanes = cu::kNormThreads;
  for (int64_t t = 0; t < s.n.m; ++t) {
    const float* x = s.n.x.data() + t * d;
    double ss = 0;
    for (int lane = 0; lane < lanes; ++lane) ss += cu::norm_partial(x, d, 0.0, true, lane, lanes);
    for (int lane = 0; lane < lanes; ++lane)
      cu::norm_write(x, d, 0.0, cu::norm_scale(ss, d, eps), s.gamma.data(), s.beta.data(), NormSplit{s.index.data(), w},
                     lane, lanes, y.data() + t * w);
  }
  return y;
}

// ---- the online Hadamard -------------------------------------------------------------------------------------

// Factors of n = p·m with random signs and a random orthogonal-ish R (any matrix serves: the kernels must agree
// with hadamard_rotate whatever R is).
HadamardFactors make_factors(int64_t p, int64_t m, std::mt19937& rng) {
  HadamardFactors f;
  f.p = p;
  f.m = m;
  for (int64_t i = 0; i < p; ++i) f.signs.push_back(rng() % 2 != 0 ? 1.0f : -1.0f);
  std::normal_distribution<double> nd(0.0, 1.0 / std::sqrt(double(m)));
  for (int64_t i = 0; i < m * m; ++i) f.r.push_back(m == 1 ? (rng() % 2 != 0 ? 1.0 : -1.0) : nd(rng));
  return f;
}

// (p, m, rows): one block, odd block counts (11008 = 256 · 43 is Llama-2-7B's ffn), more lanes than butterflies, a
// row past the 48 KiB of shared memory a block gets without opting in (16384 floats: 64 KiB).
const std::tuple<int64_t, int64_t, int64_t> kHadamardShapes[] = {
    {1, 1, 2}, {2, 1, 3}, {64, 1, 5}, {32, 3, 4}, {8, 43, 2}, {256, 43, 2}, {4096, 1, 1}, {16384, 1, 2}};

// Random factors of a shape, a random input x [rows, p·m] and want = hadamard_rotate's output for it.
struct HadamardCase {
  HadamardFactors f;
  std::vector<float> x, want;
};
HadamardCase make_hadamard_case(int64_t p, int64_t m, int64_t rows, std::mt19937& rng) {
  HadamardCase c{make_factors(p, m, rng), random_vec(size_t(rows * p * m), rng), {}};
  c.want = c.x;
  hadamard_rotate(c.f, c.want.data(), rows);
  return c;
}

// hadamard_kernel on the CPU: each step over every lane of the block, a barrier (the loop's end) between steps.
std::vector<float> hadamard_host(const HadamardFactors& f, const std::vector<float>& x, int64_t rows) {
  std::vector<float> out = x, r(f.r.begin(), f.r.end()), z(size_t(f.n()));
  const float scale = 1.0f / std::sqrt(static_cast<float>(f.p));
  const int lanes = 256;
  for (int64_t t = 0; t < rows; ++t) {
    float* xr = out.data() + t * f.n();
    for (int lane = 0; lane < lanes; ++lane) cu::hadamard_load(xr, f.signs.data(), f.p, f.n(), lane, lanes, z.data());
    for (int64_t h = 1; h < f.p; h *= 2)
      for (int lane = 0; lane < lanes; ++lane) cu::hadamard_stage(z.data(), f.p, f.n(), h, lane, lanes);
    for (int lane = 0; lane < lanes; ++lane) cu::hadamard_scale(z.data(), f.n(), scale, lane, lanes);
    for (int lane = 0; lane < lanes; ++lane) cu::hadamard_mix(z.data(), r.data(), f.p, f.m, lane, lanes, xr);
  }
  return out;
}

const std::pair<int64_t, int64_t> kNormShapes[] = {{1, 1}, {1, 64}, {7, 300}, {3, 4096}, {7, 1000}};

// ---- RoPE ------------------------------------------------------------------------------------------------------

struct RopeCase {
  int64_t m, heads, head_dim;
  std::vector<int64_t> positions;
  double theta;
};

std::vector<int64_t> positions_from(int64_t past, int64_t m) {
  std::vector<int64_t> p(static_cast<size_t>(m));
  for (int64_t t = 0; t < m; ++t) p[size_t(t)] = past + t;
  return p;
}

std::vector<RopeCase> rope_cases() {
  return {{1, 6, 64, positions_from(0, 1), 10000.0},      {7, 6, 64, positions_from(13, 7), 10000.0},
          {7, 2, 80, positions_from(0, 7), 500000.0},     {1, 6, 96, positions_from(13, 1), 1e6},
          {7, 3, 128, {0, 5, 4096, 3, 100000, 1, 17}, 10000.0}, {2, 1, 2, {1, 2}, 10.0}};
}

// Each output is a·c - b·s (or b·c + a·s) with c, s = float(cos), float(sin) of the same double angle; the device's
// double pow/cos/sin may round c or s to the neighbouring float (≤ u: |c|, |s| ≤ 1), and the two products and the
// sum round once each (or the device fuses one): ≤ (|a| + |b|)·u + 3u·(|a| + |b|) = 4u·(|a| + |b|).
void compare_rope(const RopeCase& c, const std::vector<float>& x, const std::vector<float>& got) {
  std::vector<float> want = x;
  rope_ref(want.data(), c.m, c.heads, c.head_dim, c.positions.data(), c.theta);
  const int64_t half = c.head_dim / 2;
  for (int64_t row = 0; row < c.m * c.heads; ++row)
    for (int64_t i = 0; i < c.head_dim; ++i) {
      const int64_t e = row * c.head_dim + i, pair = row * c.head_dim + (i < half ? i + half : i - half);
      INFO("token " << row / c.heads << " head " << row % c.heads << " dim " << i << " of " << c.head_dim);
      REQUIRE(std::fabs(double(got[e]) - double(want[e])) <= 4 * kU * (std::fabs(x[e]) + std::fabs(x[pair])));
    }
}

// ---- attention -----------------------------------------------------------------------------------------------

struct AttnCase {
  AttentionDims a;
  int64_t m, past;
};

// Odd sizes: head_dim 64, 80, 96, 128, 256 (two output dims per thread); m 1 and 7; past 0 and 13; GQA 6/2, 6/3,
// MHA 4/4; more than one chunk of keys (past 200); a sliding window.
const AttnCase kAttnCases[] = {
    {{6, 2, 64, 20}, 1, 0},   {{6, 2, 64, 20}, 7, 13},    {{6, 2, 80, 24}, 7, 13},  {{6, 2, 96, 16}, 1, 13},
    {{4, 4, 64, 7}, 7, 0},    {{6, 3, 128, 210}, 3, 200}, {{2, 1, 256, 140}, 2, 130},
    {{6, 2, 64, 160, 37}, 5, 150},
};

struct AttnData {
  std::vector<float> q, k_new, v_new;
  std::vector<uint16_t> k_cache, v_cache;  // positions < past random, the rest as kv_append_ref leaves them
};

std::vector<uint16_t> random_fp16(size_t n, std::mt19937& rng) {
  std::vector<uint16_t> h;
  for (float f : random_vec(n, rng)) h.push_back(ptq::f32_to_fp16(f));
  return h;
}

AttnData make_attention(const AttnCase& c, std::mt19937& rng) {
  const AttentionDims& a = c.a;
  AttnData d;
  d.q = random_vec(size_t(c.m * a.heads * a.head_dim), rng);
  d.k_new = random_vec(size_t(c.m * a.kv_heads * a.head_dim), rng);
  d.v_new = random_vec(d.k_new.size(), rng);
  d.k_cache = random_fp16(size_t(a.kv_heads * a.capacity * a.head_dim), rng);
  d.v_cache = random_fp16(d.k_cache.size(), rng);
  return d;
}

// Bound on |fp32 kernel - attention_ref| for the outputs of (token t, head h). With S_j = scale·Σ|q_i·k_ji| and
// s_j the scores of the L keys read (in chunks of kAttnChunk):
//  - an fp32 score errs by at most (head_dim + 2)·u·S_j (a sum of head_dim products, the scale rounded to fp32);
//  - each weight e^(s_j - max) then errs relatively by that, plus u·|s_j - max| (the rounded argument), 2 ulp = 4u of
//    expf, and 4u per chunk for the rescale factors: ε; normalised weights err by at most 2ε, so the output by
//    2ε·max|v|;
//  - the fp32 sums of weights and of weighted values (≤ kAttnChunk terms per chunk, 3 roundings per chunk to fold
//    them in, the division, the reference's rounding) add 2·(n + 3·chunks + 2)·u·max|v|.
// Doubled for the second-order terms the first-order bound omits.
double attention_tolerance(const AttnCase& c, const AttnData& d, int64_t t, int64_t h) {
  const AttentionDims& a = c.a;
  const int64_t hd = a.head_dim, pos = c.past + t, lo = a.window > 0 ? std::max<int64_t>(0, pos - a.window + 1) : 0;
  const int64_t L = pos + 1 - lo;
  const uint16_t* k = d.k_cache.data() + (h / (a.heads / a.kv_heads)) * a.capacity * hd;
  const uint16_t* v = d.v_cache.data() + (h / (a.heads / a.kv_heads)) * a.capacity * hd;
  const float* q = d.q.data() + (t * a.heads + h) * hd;
  const double scale = 1.0 / std::sqrt(double(hd));
  double s_abs = 0, s_max = -INFINITY, s_min = INFINITY, v_max = 0;
  for (int64_t j = lo; j <= pos; ++j) {
    double s = 0, sa = 0;
    for (int64_t i = 0; i < hd; ++i) {
      const double p = double(q[i]) * ptq::fp16_to_f32(k[j * hd + i]);
      s += p, sa += std::fabs(p);
      v_max = std::max(v_max, double(std::fabs(ptq::fp16_to_f32(v[j * hd + i]))));
    }
    s_abs = std::max(s_abs, sa * scale), s_max = std::max(s_max, s * scale), s_min = std::min(s_min, s * scale);
  }
  const int64_t chunks = (L + cu::kAttnChunk - 1) / cu::kAttnChunk, n = std::min<int64_t>(L, cu::kAttnChunk);
  const double eps = double(hd + 2) * kU * s_abs + kU * (s_max - s_min) + double(4 + 4 * chunks) * kU;
  return 2 * (2 * eps + 2 * double(n + 3 * chunks + 2) * kU) * v_max;
}

void compare_attention(const AttnCase& c, const AttnData& d, const std::vector<float>& got) {
  const AttentionDims& a = c.a;
  std::vector<float> want(got.size());
  attention_ref(a, d.q.data(), c.m, c.past, d.k_cache.data(), d.v_cache.data(), want.data());
  for (int64_t t = 0; t < c.m; ++t)
    for (int64_t h = 0; h < a.heads; ++h) {
      const double tol = attention_tolerance(c, d, t, h);
      for (int64_t i = 0; i < a.head_dim; ++i) {
        const int64_t e = (t * a.heads + h) * a.head_dim + i;
        INFO("heads " << a.heads << "/" << a.kv_heads << " head_dim " << a.head_dim << " past " << c.past
                      << " window " << a.window << ": token " << t << " head " << h << " dim " << i);
        REQUIRE(std::fabs(double(got[e]) - double(want[e])) <= tol);
      }
    }
}

// attention_kernel on the CPU, block (t, h) at a time: the warps' keys, the shared chunk p, each thread's output dims.
std::vector<float> attention_host(const AttnCase& c, const AttnData& d) {
  const AttentionDims& a = c.a;
  const int64_t hd = a.head_dim;
  std::vector<float> out(d.q.size(), NAN);
  for (int64_t t = 0; t < c.m; ++t)
    for (int64_t h = 0; h < a.heads; ++h) {
      const float* q = d.q.data() + (t * a.heads + h) * hd;
      const int64_t pos = c.past + t, kv = cu::kv_head_of(a, h) * a.capacity * hd;
      cu::SoftmaxState st;
      float acc[cu::kAttnThreads][cu::kAttnDimsPerThread] = {};
      float p[cu::kAttnChunk];
      for (int64_t c0 = cu::first_key(a, pos); c0 <= pos; c0 += cu::kAttnChunk) {
        const int n = int(std::min<int64_t>(cu::kAttnChunk, pos + 1 - c0));
        std::fill(p, p + cu::kAttnChunk, NAN);
        for (int w = 0; w < cu::kAttnWarps; ++w)
          for (int j = w; j < n; j += cu::kAttnWarps) {
            float s = 0.0f;
            for (int lane = 0; lane < 32; ++lane)
              s += cu::score_partial(q, d.k_cache.data() + kv + (c0 + j) * hd, hd, lane, 32);
            p[j] = s * cu::attention_scale(hd);
          }
        const float corr = cu::softmax_rescale(st, p, n);
        for (int j = 0; j < n; ++j) p[j] = cu::softmax_weight(p[j], st);
        cu::softmax_add(st, corr, p, n);
        for (int tid = 0; tid < cu::kAttnThreads; ++tid)
          for (int r = 0; r < cu::kAttnDimsPerThread && tid + r * cu::kAttnThreads < hd; ++r)
            acc[tid][r] = cu::value_accumulate(acc[tid][r], corr, p, d.v_cache.data() + kv + c0 * hd, hd, n,
                                               tid + r * cu::kAttnThreads);
      }
      for (int tid = 0; tid < cu::kAttnThreads; ++tid)
        for (int r = 0; r < cu::kAttnDimsPerThread && tid + r * cu::kAttnThreads < hd; ++r)
          out[(t * a.heads + h) * hd + tid + r * cu::kAttnThreads] = acc[tid][r] / st.sum;
    }
  return out;
}

// ---- swiglu --------------------------------------------------------------------------------------------------

std::vector<float> gate_values(size_t n, std::mt19937& rng) {
  std::vector<float> g = random_vec(n, rng, 0.0f, 4.0f);
  const float planted[] = {0.0f, -0.0f, 20.0f, -20.0f, 87.0f, -87.0f, 90.0f, -90.0f, 1e-30f};
  for (size_t i = 0; i < std::size(planted) && i < n; ++i) g[i] = planted[i];
  return g;
}

// Relative to |exact|: expf (2 ulp = 4u), 1 + e (u), the division (u) and the product (u) on the kernel's side, the
// rounded silu and product on the reference's: 9u, taken as 10u. expf(-gate) overflows for gate < -88.7, where the
// kernel gives ±0 and the exact |silu| < 89·e^-88.7 < 2^-120: an absolute 2^-120·|up| covers it.
void compare_swiglu(const std::vector<float>& g, const std::vector<float>& up, const std::vector<float>& got) {
  std::vector<float> want(g.size());
  swiglu_ref(g.data(), up.data(), int64_t(g.size()), want.data());
  for (size_t i = 0; i < g.size(); ++i) {
    const double exact = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * up[i];
    INFO("gate " << g[i] << " up " << up[i]);
    const double tol = 10 * kU * std::fabs(exact) + std::ldexp(std::fabs(up[i]), -120);
    REQUIRE(std::fabs(double(got[i]) - double(want[i])) <= tol);
  }
}

// ---- device helpers ------------------------------------------------------------------------------------------

template <class T>
std::vector<T> download(const cu::Buffer& b) {
  std::vector<T> v(b.bytes() / sizeof(T));
  b.download(v.data(), b.bytes());
  return v;
}

}  // namespace

// ==== the references, by hand ====================================================================================

TEST_CASE("rms_norm_ref and layer_norm_ref on hand-computed rows", "[layer_ops]") {
  // [3, 4]: mean(x²) = 12.5, x / √12.5 = [0.6√2, 0.8√2]; gamma [1, 2]; beta [0.5, -1].
  const float x[] = {3, 4}, gamma[] = {1, 2}, beta[] = {0.5f, -1};
  float y[2];
  rms_norm_ref(x, 1, 2, gamma, 0.0f, y);
  CHECK(y[0] == Approx(0.6 * std::sqrt(2.0)).epsilon(1e-7));
  CHECK(y[1] == Approx(1.6 * std::sqrt(2.0)).epsilon(1e-7));
  rms_norm_ref(x, 1, 2, gamma, 0.0f, y, beta);
  CHECK(y[0] == Approx(0.6 * std::sqrt(2.0) + 0.5).epsilon(1e-7));
  CHECK(y[1] == Approx(1.6 * std::sqrt(2.0) - 1).epsilon(1e-7));
  // eps inside the root: [1, 1] with eps 3 -> 1 / √(1 + 3) = 0.5.
  const float ones[] = {1, 1}, g1[] = {1, 1};
  rms_norm_ref(ones, 1, 2, g1, 3.0f, y);
  CHECK(y[0] == 0.5f);
  CHECK(y[1] == 0.5f);
  // Two rows, in place: row 2 = 2 · row 1 normalises to the same values.
  float rows[] = {1, -2, 2, -4};
  rms_norm_ref(rows, 2, 2, g1, 0.0f, rows);
  CHECK(rows[0] == Approx(1 / std::sqrt(2.5)).epsilon(1e-7));
  CHECK(rows[1] == Approx(-2 / std::sqrt(2.5)).epsilon(1e-7));
  CHECK(rows[2] == rows[0]);
  CHECK(rows[3] == rows[1]);
  // A channel split (MergeQuant's): columns [1, 0, 1] of x̂ = [0.6√2, 0.8√2], statistics of the 2 input columns,
  // gamma and beta per emitted column.
  const int64_t index[] = {1, 0, 1};
  const float g3[] = {1, 2, 3}, b3[] = {0, 1, -1};
  float ys[3];
  rms_norm_ref(x, 1, 2, g3, 0.0f, ys, b3, NormSplit{index, 3});
  CHECK(ys[0] == Approx(0.8 * std::sqrt(2.0)).epsilon(1e-7));
  CHECK(ys[1] == Approx(2 * 0.6 * std::sqrt(2.0) + 1).epsilon(1e-7));
  CHECK(ys[2] == Approx(3 * 0.8 * std::sqrt(2.0) - 1).epsilon(1e-7));
  const int64_t outside[] = {0, 2};
  CHECK_THROWS_WITH(rms_norm_ref(x, 1, 2, g3, 0.0f, ys, nullptr, NormSplit{outside, 2}),
                    Catch::Contains("input column 2"));
  // LayerNorm of [1, 2, 3, 4]: mean 2.5, biased variance 1.25; gamma 2, beta 1.
  const float l[] = {1, 2, 3, 4}, g2[] = {2, 2, 2, 2}, b1[] = {1, 1, 1, 1};
  float z[4];
  layer_norm_ref(l, 1, 4, g2, b1, 0.0f, z);
  // fp32 roundings of x̂, x̂·gamma and the sum: ≤ 3u·(|2x̂| + 1) < 4e-7 absolute (z[1] = 1 - 0.894 cancels).
  for (int j = 0; j < 4; ++j) CHECK(z[j] == Approx(2 * (l[j] - 2.5) / std::sqrt(1.25) + 1).margin(4e-7));
  layer_norm_ref(l, 1, 4, g2, nullptr, 0.0f, z);
  CHECK(z[0] == Approx(-3 / std::sqrt(1.25)).epsilon(1e-7));
}

TEST_CASE("rope_ref: identity at position 0, rotate-half pairs (i, i + head_dim/2) at the HF frequencies",
          "[layer_ops]") {
  std::mt19937 rng(1);
  std::vector<float> x = random_vec(3 * 8, rng), y = x;
  const int64_t zeros[] = {0};
  rope_ref(y.data(), 1, 3, 8, zeros, 10000.0);
  REQUIRE(y == x);  // cos 0 = 1, sin 0 = 0 exactly
  // head_dim 4, theta 100: pair (0, 2) turns by pos · 1, pair (1, 3) by pos · 100^(-2/4) = pos · 0.1.
  float e0[] = {1, 0, 0, 0}, e1[] = {0, 1, 0, 0};
  const int64_t one[] = {1}, two[] = {2};
  rope_ref(e0, 1, 1, 4, one, 100.0);
  CHECK(e0[0] == Approx(std::cos(1.0)).epsilon(1e-7));
  CHECK(e0[1] == 0.0f);
  CHECK(e0[2] == Approx(std::sin(1.0)).epsilon(1e-7));  // the partner is i + half, not i + 1 (interleaved)
  CHECK(e0[3] == 0.0f);
  rope_ref(e1, 1, 1, 4, two, 100.0);
  CHECK(e1[0] == 0.0f);
  CHECK(e1[1] == Approx(std::cos(0.2)).epsilon(1e-7));
  CHECK(e1[3] == Approx(std::sin(0.2)).epsilon(1e-7));
  // The second half turns the other way: x_{i+half} = 1 -> x_i = -sin.
  float e2[] = {0, 0, 1, 0};
  rope_ref(e2, 1, 1, 4, one, 100.0);
  CHECK(e2[0] == Approx(-std::sin(1.0)).epsilon(1e-7));
  CHECK(e2[2] == Approx(std::cos(1.0)).epsilon(1e-7));
  // Each token its own position: token 1 at 0 stays.
  float two_tokens[] = {1, 0, 1, 0};
  const int64_t pos[] = {1, 0};
  rope_ref(two_tokens, 2, 1, 2, pos, 10000.0);
  CHECK(two_tokens[0] == Approx(std::cos(1.0)).epsilon(1e-7));
  CHECK(two_tokens[1] == Approx(std::sin(1.0)).epsilon(1e-7));
  CHECK(two_tokens[2] == 1.0f);
  CHECK(two_tokens[3] == 0.0f);
}

TEST_CASE("swiglu_ref = gate · sigmoid(gate) · up", "[layer_ops]") {
  const float g[] = {0, 1, -1, 30}, up[] = {5, 2, 1, 0.5f};
  float out[4];
  swiglu_ref(g, up, 4, out);
  CHECK(out[0] == 0.0f);
  CHECK(out[1] == Approx(2 / (1 + std::exp(-1.0))).epsilon(1e-7));
  CHECK(out[2] == Approx(-1 / (1 + std::exp(1.0))).epsilon(1e-7));
  CHECK(out[3] == Approx(15.0).epsilon(1e-7));
}

TEST_CASE("add_ref adds x into y elementwise", "[layer_ops]") {
  float y[] = {1.0f, -2.0f, 0.25f};
  const float x[] = {2.0f, 2.0f, -0.5f};
  add_ref(y, x, 3);
  CHECK(y[0] == 3.0f);
  CHECK(y[1] == 0.0f);
  CHECK(y[2] == -0.25f);
  REQUIRE_THROWS_AS(add_ref(y, x, -1), std::invalid_argument);
}

TEST_CASE("kv_append_ref rounds to fp16 and stores at [kv_head][position][dim]", "[layer_ops]") {
  const AttentionDims a{4, 2, 2, 5};  // 2 kv heads, head_dim 2, 5 positions
  std::vector<uint16_t> kc(2 * 5 * 2, 0xffff), vc = kc;
  // Two new tokens at positions 3 and 4, rows [kv head 0 dims 0, 1 | kv head 1 dims 0, 1].
  const float k[] = {1, -2, 0.1f, 65504, 2049, 1e-8f, -0.0f, 3};
  const float v[] = {0.5f, 1, 1, 1, 1, 1, 1, 70000};
  kv_append_ref(a, k, v, 2, 3, kc.data(), vc.data());
  const auto at = [&](const std::vector<uint16_t>& c, int g, int p, int i) { return c[size_t((g * 5 + p) * 2 + i)]; };
  CHECK(at(kc, 0, 3, 0) == 0x3c00);  // 1
  CHECK(at(kc, 0, 3, 1) == 0xc000);  // -2
  CHECK(at(kc, 1, 3, 0) == 0x2e66);  // 0.1 -> 0.0999755859375
  CHECK(at(kc, 1, 3, 1) == 0x7bff);  // 65504, the largest fp16
  CHECK(at(kc, 0, 4, 0) == 0x6800);  // 2049 is a tie between 2048 and 2050: to even, 2048
  CHECK(at(kc, 0, 4, 1) == 0x0000);  // 1e-8 < 2^-25: rounds to zero
  CHECK(at(kc, 1, 4, 0) == 0x8000);  // -0
  CHECK(at(vc, 0, 3, 0) == 0x3800);  // 0.5
  CHECK(at(vc, 1, 4, 1) == 0x7c00);  // 70000 overflows to inf
  for (int g = 0; g < 2; ++g)
    for (int p = 0; p < 3; ++p)
      for (int i = 0; i < 2; ++i) CHECK(at(kc, g, p, i) == 0xffff);  // positions before past untouched
}

TEST_CASE("attention_ref: one key, equal scores, known weights, causality, GQA heads and the sliding window",
          "[layer_ops]") {
  const uint16_t one = ptq::f32_to_fp16(1.0f), two = ptq::f32_to_fp16(2.0f);
  SECTION("one key: the output is its value") {
    const AttentionDims a{1, 1, 2, 1};
    const uint16_t k[] = {ptq::f32_to_fp16(0.3f), ptq::f32_to_fp16(-1.0f)};
    const uint16_t v[] = {ptq::f32_to_fp16(0.1f), ptq::f32_to_fp16(7.0f)};
    const float q[] = {4, 5};
    float out[2];
    attention_ref(a, q, 1, 0, k, v, out);
    CHECK(out[0] == ptq::fp16_to_f32(v[0]));
    CHECK(out[1] == 7.0f);
  }
  SECTION("scores 0 and 1 weigh the values 1 / (1 + e) and e / (1 + e)") {
    const AttentionDims a{1, 1, 4, 2};  // scale 1/2
    const uint16_t k[] = {0, 0, 0, 0, two, 0, 0, 0};
    const uint16_t v[] = {one, 0, one, 0, 0, one, two, 0};
    const float q[] = {1, 9, 9, 9};
    float out[4];
    attention_ref(a, q, 1, 1, k, v, out);  // the query at position 1 reads both keys
    const double w1 = std::exp(1.0) / (1 + std::exp(1.0));
    CHECK(out[0] == Approx(1 - w1).epsilon(1e-7));
    CHECK(out[1] == Approx(w1).epsilon(1e-7));
    CHECK(out[2] == Approx(1 + w1).epsilon(1e-7));
    CHECK(out[3] == 0.0f);
  }
  SECTION("causal, GQA and window: q = 0 averages the values a query may read") {
    // 4 heads over 2 kv heads (heads 0, 1 -> kv 0; 2, 3 -> kv 1), head_dim 2, 3 positions; value of kv head g at
    // position p: (g + 1) · (p + 1) in both dims.
    AttentionDims a{4, 2, 2, 3};
    std::vector<uint16_t> k(2 * 3 * 2, one), v(k.size());
    for (int g = 0; g < 2; ++g)
      for (int p = 0; p < 3; ++p)
        for (int i = 0; i < 2; ++i) v[size_t((g * 3 + p) * 2 + i)] = ptq::f32_to_fp16(float((g + 1) * (p + 1)));
    const std::vector<float> q(3 * 4 * 2, 0.0f);
    std::vector<float> out(q.size());
    attention_ref(a, q.data(), 3, 0, k.data(), v.data(), out.data());
    const auto o = [&](int t, int h) { return out[size_t((t * 4 + h) * 2)]; };
    for (int h = 0; h < 4; ++h) {
      const float s = float(h / 2 + 1);
      CHECK(o(0, h) == s * 1.0f);  // position 0 reads only key 0
      CHECK(o(1, h) == Approx(s * 1.5).epsilon(1e-7));
      CHECK(o(2, h) == Approx(s * 2.0).epsilon(1e-7));
    }
    a.window = 2;  // position p reads p - 1 and p
    attention_ref(a, q.data(), 3, 0, k.data(), v.data(), out.data());
    CHECK(o(2, 0) == Approx(2.5).epsilon(1e-7));
    CHECK(o(2, 3) == Approx(5.0).epsilon(1e-7));
    a.window = 1;
    attention_ref(a, q.data() + 8, 1, 1, k.data(), v.data(), out.data());  // one query at position 1, itself only
    CHECK(out[0] == 2.0f);
    CHECK(out[6] == 4.0f);
  }
}

TEST_CASE("layer ops refuse bad shapes, and without CUDA the twins say so", "[layer_ops][cuda-host]") {
  float x[8] = {};
  uint16_t c[8] = {};
  const int64_t pos[] = {0};
  CHECK_THROWS_AS(attention_ref(AttentionDims{6, 4, 2, 4}, x, 1, 0, c, c, x), std::invalid_argument);  // 6 % 4
  CHECK_THROWS_AS(attention_ref(AttentionDims{2, 1, 3, 4}, x, 1, 0, c, c, x), std::invalid_argument);  // odd dim
  CHECK_THROWS_AS(kv_append_ref(AttentionDims{2, 1, 2, 4}, x, x, 2, 3, c, c), std::invalid_argument);  // 3 + 2 > 4
  CHECK_THROWS_AS(rope_ref(x, 1, 1, 3, pos, 10000.0), std::invalid_argument);
  CHECK_THROWS_AS(rms_norm_ref(x, 1, 0, x, 1e-5f, x), std::invalid_argument);
  // The CUDA twins check first (std::invalid_argument, no device touched), or say there is no CUDA at all.
  const AttentionDims wide{1, 1, cu::kAttnMaxHeadDim + 2, 4};
  if (cu::built_with_cuda()) {
    CHECK_THROWS_AS(cu::attention(wide, x, 1, 0, c, c, x), std::invalid_argument);
    CHECK_THROWS_AS(cu::rope(x, 1, 1, 3, pos, 10000.0), std::invalid_argument);
  } else {
    CHECK_THROWS_AS(cu::attention(wide, x, 1, 0, c, c, x), cu::Error);
    CHECK_THROWS_AS(cu::rms_norm(x, 1, 2, x, 1e-5f, x), cu::Error);
    CHECK_THROWS_AS(cu::layer_norm(x, 1, 2, x, x, 1e-5f, x), cu::Error);
    CHECK_THROWS_AS(cu::rope(x, 1, 1, 2, pos, 10000.0), cu::Error);
    CHECK_THROWS_AS(cu::swiglu(x, x, 1, x), cu::Error);
    CHECK_THROWS_AS(cu::kv_append(AttentionDims{1, 1, 2, 4}, x, x, 1, 0, c, c), cu::Error);
    HadamardFactors f;
    f.signs = {1.0f};
    f.r = {1.0};
    CHECK_THROWS_AS(cu::upload_hadamard(f), cu::Error);
  }
}

// ==== host emulation of the kernels ===============================================================================

TEST_CASE("layer ops, host emulation: the norm blocks' lanes equal rms_norm_ref and layer_norm_ref", "[cuda-host]") {
  std::mt19937 rng(31);
  for (auto [m, d] : kNormShapes)
    for (bool centre : {false, true})
      for (bool with_beta : {false, true}) {
        const NormData n = make_norm(m, d, centre ? 3.0f : 0.0f, rng);
        compare_norm(n, centre, with_beta, 1e-5f, norm_host(n, centre, with_beta, 1e-5f));
      }
}

TEST_CASE("layer ops, host emulation: a split norm's lanes emit the index's columns as rms_norm_ref", "[cuda-host]") {
  std::mt19937 rng(36);
  for (auto [m, d] : kNormShapes) {
    const SplitNorm s = make_split(m, d, rng);
    compare_split(s, 1e-5f, split_host(s, 1e-5f));
  }
}

TEST_CASE("layer ops, host emulation: the Hadamard blocks equal hadamard_rotate bit for bit", "[cuda-host]") {
  std::mt19937 rng(37);
  for (auto [p, m, rows] : kHadamardShapes) {
    const HadamardCase c = make_hadamard_case(p, m, rows, rng);
    INFO("p " << p << " m " << m << " rows " << rows);
    // The same fp32 operations on the same operands (signs, butterflies, 1/√p, the mix in increasing a).
    REQUIRE(hadamard_host(c.f, c.x, rows) == c.want);
  }
}

TEST_CASE("layer ops, host emulation: rope_pair over the launch's threads equals rope_ref", "[cuda-host]") {
  std::mt19937 rng(32);
  for (const RopeCase& c : rope_cases()) {
    const std::vector<float> x = random_vec(size_t(c.m * c.heads * c.head_dim), rng);
    std::vector<float> got = x;
    const int64_t half = c.head_dim / 2;
    for (int64_t e = 0; e < c.m * c.heads * half; ++e) {  // rope_kernel's thread e
      const int64_t row = e / half;
      cu::rope_pair(got.data() + row * c.head_dim, e % half, c.head_dim, c.positions[size_t(row / c.heads)], c.theta);
    }
    compare_rope(c, x, got);
  }
}

TEST_CASE("layer ops, host emulation: swiglu_one equals swiglu_ref", "[cuda-host]") {
  std::mt19937 rng(33);
  for (size_t count : {1, 1000, 4099}) {
    const std::vector<float> g = gate_values(count, rng), up = random_vec(count, rng);
    std::vector<float> got(count);
    for (size_t i = 0; i < count; ++i) got[i] = cu::swiglu_one(g[i], up[i]);
    compare_swiglu(g, up, got);
  }
}

TEST_CASE("layer ops, host emulation: kv_append_one fills the caches as kv_append_ref, bit for bit", "[cuda-host]") {
  std::mt19937 rng(34);
  for (const AttnCase& c : kAttnCases) {
    AttnData d = make_attention(c, rng);
    std::vector<uint16_t> k = d.k_cache, v = d.v_cache;
    kv_append_ref(c.a, d.k_new.data(), d.v_new.data(), c.m, c.past, d.k_cache.data(), d.v_cache.data());
    for (int64_t e = 0; e < c.m * c.a.kv_heads * c.a.head_dim; ++e)
      cu::kv_append_one(c.a, d.k_new.data(), d.v_new.data(), c.past, e, k.data(), v.data());
    INFO("heads " << c.a.heads << "/" << c.a.kv_heads << " head_dim " << c.a.head_dim << " past " << c.past);
    REQUIRE(k == d.k_cache);  // both round with ptq::f32_to_fp16 (integer operations and one exact-order add)
    REQUIRE(v == d.v_cache);
  }
}

TEST_CASE("layer ops, host emulation: the attention blocks equal attention_ref", "[cuda-host]") {
  std::mt19937 rng(35);
  for (const AttnCase& c : kAttnCases) {
    AttnData d = make_attention(c, rng);
    kv_append_ref(c.a, d.k_new.data(), d.v_new.data(), c.m, c.past, d.k_cache.data(), d.v_cache.data());
    compare_attention(c, d, attention_host(c, d));
  }
}

// ==== on a device =================================================================================================

TEST_CASE("cuda rms_norm and layer_norm equal the references", "[.cuda]") {
  std::mt19937 rng(41);
  cu::Stream stream;
  for (auto [m, d] : kNormShapes)
    for (bool centre : {false, true})
      for (bool with_beta : {false, true}) {
        const NormData n = make_norm(m, d, centre ? 3.0f : 0.0f, rng);
        cu::Buffer x = cu::to_device(n.x.data(), n.x.size()), g = cu::to_device(n.gamma.data(), n.gamma.size());
        cu::Buffer b = cu::to_device(n.beta.data(), n.beta.size()), y(n.x.size() * sizeof(float));
        const float* beta = with_beta ? b.as<float>() : nullptr;
        if (centre)
          cu::layer_norm(x.as<float>(), m, d, g.as<float>(), beta, 1e-5f, y.as<float>(), &stream);
        else
          cu::rms_norm(x.as<float>(), m, d, g.as<float>(), 1e-5f, y.as<float>(), beta, {}, &stream);
        stream.synchronize();
        compare_norm(n, centre, with_beta, 1e-5f, download<float>(y));
        cu::rms_norm(x.as<float>(), m, d, g.as<float>(), 1e-5f, x.as<float>(), beta);  // in place
        cu::synchronize();
        compare_norm(n, false, with_beta, 1e-5f, download<float>(x));
      }
}

TEST_CASE("cuda rms_norm with a channel split equals rms_norm_ref's", "[.cuda]") {
  std::mt19937 rng(46);
  for (auto [m, d] : kNormShapes) {
    const SplitNorm s = make_split(m, d, rng);
    const int64_t w = int64_t(s.index.size());
    cu::Buffer x = cu::to_device(s.n.x.data(), s.n.x.size()), g = cu::to_device(s.gamma.data(), s.gamma.size());
    cu::Buffer b = cu::to_device(s.beta.data(), s.beta.size()), idx = cu::to_device(s.index.data(), s.index.size());
    cu::Buffer y(size_t(m * w) * sizeof(float));
    cu::rms_norm(x.as<float>(), m, d, g.as<float>(), 1e-5f, y.as<float>(), b.as<float>(),
                 NormSplit{idx.as<int64_t>(), w});
    cu::synchronize();
    compare_split(s, 1e-5f, download<float>(y));
  }
}

TEST_CASE("cuda hadamard_rotate equals hadamard_rotate bit for bit", "[.cuda]") {
  std::mt19937 rng(47);
  for (auto [p, m, rows] : kHadamardShapes) {
    const HadamardCase c = make_hadamard_case(p, m, rows, rng);
    const cu::DeviceHadamard d = cu::upload_hadamard(c.f);
    cu::Buffer xd = cu::to_device(c.x.data(), c.x.size());
    cu::hadamard_rotate(d, xd.as<float>(), rows);
    cu::synchronize();
    INFO("p " << p << " m " << m << " rows " << rows);
    REQUIRE(download<float>(xd) == c.want);  // mul_rn keeps the mix unfused: the same fp32 operations
  }
  // A row wider than a block's shared memory is refused, naming the width (2^24 floats, 64 MiB).
  HadamardFactors wide = make_factors(int64_t(1) << 24, 1, rng);
  const cu::DeviceHadamard d = cu::upload_hadamard(wide);
  cu::Buffer xd(sizeof(float));
  CHECK_THROWS_WITH(cu::hadamard_rotate(d, xd.as<float>(), 1), Catch::Contains("16777216 floats"));
}

TEST_CASE("cuda rope equals rope_ref", "[.cuda]") {
  std::mt19937 rng(42);
  for (const RopeCase& c : rope_cases()) {
    const std::vector<float> x = random_vec(size_t(c.m * c.heads * c.head_dim), rng);
    cu::Buffer dx = cu::to_device(x.data(), x.size()), dp = cu::to_device(c.positions.data(), c.positions.size());
    cu::rope(dx.as<float>(), c.m, c.heads, c.head_dim, dp.as<int64_t>(), c.theta);
    cu::synchronize();
    compare_rope(c, x, download<float>(dx));
  }
}

TEST_CASE("cuda add equals add_ref", "[.cuda]") {
  std::vector<float> y = {1.0f, -2.0f, 3.5f, 0.0f, 1e30f}, x = {0.5f, 2.0f, -1.0f, -0.0f, 1e30f}, want = y;
  add_ref(want.data(), x.data(), int64_t(x.size()));
  cu::Buffer dy = cu::to_device(y.data(), y.size()), dx = cu::to_device(x.data(), x.size());
  cu::add(dy.as<float>(), dx.as<float>(), int64_t(x.size()));
  cu::synchronize();
  std::vector<float> got(y.size());
  dy.download(got.data(), got.size() * sizeof(float));
  REQUIRE(got == want);  // one fp32 add per element on both sides
}

TEST_CASE("cuda swiglu equals swiglu_ref", "[.cuda]") {
  std::mt19937 rng(43);
  for (size_t count : {1, 1000, 4099}) {
    const std::vector<float> g = gate_values(count, rng), up = random_vec(count, rng);
    cu::Buffer dg = cu::to_device(g.data(), count), du = cu::to_device(up.data(), count), dout(count * sizeof(float));
    cu::swiglu(dg.as<float>(), du.as<float>(), int64_t(count), dout.as<float>());
    cu::synchronize();
    compare_swiglu(g, up, download<float>(dout));
  }
}

TEST_CASE("cuda kv_append (bit for bit) and attention equal the references", "[.cuda]") {
  std::mt19937 rng(44);
  for (const AttnCase& c : kAttnCases) {
    AttnData d = make_attention(c, rng);
    cu::Buffer kc = cu::to_device(d.k_cache.data(), d.k_cache.size());
    cu::Buffer vc = cu::to_device(d.v_cache.data(), d.v_cache.size());
    cu::Buffer kn = cu::to_device(d.k_new.data(), d.k_new.size()), vn = cu::to_device(d.v_new.data(), d.v_new.size());
    cu::Buffer q = cu::to_device(d.q.data(), d.q.size()), out(d.q.size() * sizeof(float));
    kv_append_ref(c.a, d.k_new.data(), d.v_new.data(), c.m, c.past, d.k_cache.data(), d.v_cache.data());
    cu::kv_append(c.a, kn.as<float>(), vn.as<float>(), c.m, c.past, kc.as<uint16_t>(), vc.as<uint16_t>());
    cu::attention(c.a, q.as<float>(), c.m, c.past, kc.as<uint16_t>(), vc.as<uint16_t>(), out.as<float>());
    cu::synchronize();
    INFO("heads " << c.a.heads << "/" << c.a.kv_heads << " head_dim " << c.a.head_dim << " past " << c.past);
    REQUIRE(download<uint16_t>(kc) == d.k_cache);
    REQUIRE(download<uint16_t>(vc) == d.v_cache);
    compare_attention(c, d, download<float>(out));
  }
}
