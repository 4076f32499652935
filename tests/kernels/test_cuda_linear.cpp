// The CUDA linear kernels (lib/kernels/cuda). Two kinds of tests:
//  - "[cuda-host]": the per-thread functions the kernels run (linear_common.h, int_linear_common.h), compiled for the
//    CPU and run over every (row, lane) of a launch, against the scalar references linear_ref / int_linear_ref and
//    PackedWeights::at. They run everywhere, so the decoding and indexing of the device code is tested without a GPU;
//    so do the cuBLAS loader (cublas.h: the library and its functions, no handle) and linear's choice of kernel.
//  - "[.cuda]" (hidden: a plain run skips them; "[cuda]" selects them): the kernels on a device against the same
//    references; ctest runs them as one entry (cuda_kernels, tests/kernels/run_cuda_tests.sh) that reports "skipped:
//    no CUDA device" where there is none.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <numeric>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "core/half.h"
#include "kernels/cuda/cublas.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/int_linear_common.h"
#include "kernels/cuda/int_linear_cuda.h"
#include "kernels/cuda/linear_common.h"
#include "kernels/cuda/linear_cuda.h"
#include "kernels/int_linear.h"
#include "kernels/linear.h"

using namespace ptq::kernels;
namespace cu = ptq::kernels::cuda;

namespace {

struct Case {
  int64_t n, k, groups;
  int bits;
  bool sym, act_order;
};

// Odd sizes: k not a multiple of 16/32/64, n not a multiple of a warp's rows or a tile; every container (2-bit: 2;
// 4-bit: 3, 4; bytes: 5, 8), groups that are and are not whole chunks, act-order.
const Case kCases[] = {
    {37, 96, 3, 4, true, false},    {29, 200, 5, 3, false, true}, {70, 130, 1, 8, true, false},
    {9, 192, 6, 2, false, false},   {33, 256, 2, 5, false, true}, {65, 48, 3, 4, false, false},
    {17, 1000, 8, 4, true, true},
};

PackedWeights make_weights(const Case& c, std::mt19937& rng) {
  const int max_code = (1 << c.bits) - 1;
  std::uniform_int_distribution<int> code(0, max_code);
  std::uniform_real_distribution<float> scale(0.01f, 0.2f);
  std::vector<uint8_t> q(size_t(c.n * c.k));
  for (auto& v : q) v = uint8_t(code(rng));
  std::vector<float> scales(size_t(c.n * c.groups));
  std::vector<int32_t> zeros(scales.size()), g_idx(size_t(c.k));
  for (size_t i = 0; i < scales.size(); ++i) {
    scales[i] = ptq::fp16_to_f32(ptq::f32_to_fp16(scale(rng)));
    zeros[i] = code(rng);
  }
  for (int64_t j = 0; j < c.k; ++j) g_idx[j] = int32_t(j / (c.k / c.groups));
  if (c.act_order) std::shuffle(g_idx.begin(), g_idx.end(), rng);
  return pack_quantized(q.data(), c.n, c.k, c.bits, c.groups, scales.data(), c.sym ? nullptr : zeros.data(),
                        c.act_order ? g_idx.data() : nullptr, "cuda-test");
}

std::vector<float> random_vec(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

cu::WeightsView host_view(const PackedWeights& w) {
  return cu::make_view(w, reinterpret_cast<const uint32_t*>(w.codes.data()), w.scales.data(),
                       w.offsets.empty() ? nullptr : w.offsets.data(), w.data);
}

// gather_x on the host: x in kernel column order, zero past k.
std::vector<float> gather(const PackedWeights& w, const cu::WeightsView& v, const std::vector<float>& x, int64_t m) {
  const int64_t xw = cu::xp_width(v);
  std::vector<float> xp(size_t(m * xw), 0.0f);
  for (int64_t t = 0; t < m; ++t)
    for (int64_t j = 0; j < w.k; ++j) xp[t * xw + j] = x[t * w.k + (w.perm.empty() ? j : w.perm[j])];
  return xp;
}

// fp32 sums of k products, in up to 32 lanes then a shuffle tree: recursive summation errs by at most
// L·u·Σ|x·w| with L = k/32 + 32 + 5 terms in the longest chain (u = 2^-24); x2 for the products.
double tolerance(int64_t k, double abs_terms) {
  return 2.0 * (double(k) / 32 + 37) * std::ldexp(1.0, -24) * abs_terms + 1e-6;
}

// The tensor-core GEMM rounds both operands to fp16 first: each product is then off by at most 2 · 2^-11 + 2^-22 of
// itself (fp16's unit roundoff 2^-11 per operand), or for an operand under fp16's normal range (2^-14) by its absolute
// rounding 2^-25 times the other operand; the fp32 sum adds (k + 2) u as above.
double fp16_operand_tolerance(int64_t k, double abs_terms, double abs_cross) {
  return (2 * std::ldexp(1.0, -11) + std::ldexp(1.0, -22)) * abs_terms + std::ldexp(1.0, -25) * abs_cross +
         double(k + 2) * std::ldexp(1.0, -24) * abs_terms + 1e-6;
}

// cuBLAS's GEMM uses F16 / BF16 weights as they are and rounds only the activations, to nearest in the weights' type:
// each product is off by at most u16 of itself (u16 = 2^-11 for fp16, 2^-8 for bf16: 11 and 8 significant bits), or
// for an fp16 activation under fp16's normal range (2^-14) by its absolute rounding 2^-25 times |w|; the product of two
// 16-bit floats is exact in fp32. cuBLAS sums in fp32 in an order of its own (tensor-core tiles, perhaps split-K),
// and tensor cores may truncate rather than round inside an mma: 2 (k + 2) u (u = 2^-24) of Σ|x·w| for those sums,
// the bias and linear_ref's own rounding to fp32.
double cublas_tolerance(WeightKind kind, int64_t k, double abs_terms, double abs_cross) {
  const double u16 = std::ldexp(1.0, kind == WeightKind::F16 ? -11 : -8);
  return u16 * abs_terms + (kind == WeightKind::F16 ? std::ldexp(1.0, -25) * abs_cross : 0.0) +
         2.0 * double(k + 2) * std::ldexp(1.0, -24) * abs_terms + 1e-6;
}

// How the kernel that made a result rounded its operands: not at all (gemv, gemm), both to fp16 (hmma), or the
// activations to the weights' fp16 / bf16 (cublas).
enum class Operands { Fp32, Fp16, Activations16 };

Operands operands_of(const std::string& kernel) {
  return kernel == "hmma" ? Operands::Fp16 : kernel == "cublas" ? Operands::Activations16 : Operands::Fp32;
}

// The bound on |y - linear_ref| for one output: Σ|x·w| and Σ(|x| + |w|) over its k terms, per Operands.
double output_tolerance(const PackedWeights& w, Operands ops, double abs_terms, double abs_cross) {
  switch (ops) {
    case Operands::Fp16: return fp16_operand_tolerance(w.k, abs_terms, abs_cross);
    case Operands::Activations16: return cublas_tolerance(w.kind, w.k, abs_terms, abs_cross);
    default: return tolerance(w.k, abs_terms);
  }
}

// Σ|x·w| and Σ(|x| + |w|) of output (t, r).
std::pair<double, double> abs_sums(const PackedWeights& w, const std::vector<float>& x, int64_t t, int64_t r) {
  double abs_terms = 0, abs_cross = 0;
  for (int64_t c = 0; c < w.k; ++c) {
    abs_terms += std::fabs(double(x[t * w.k + c]) * w.at(r, c));
    abs_cross += std::fabs(double(x[t * w.k + c])) + std::fabs(double(w.at(r, c)));
  }
  return {abs_terms, abs_cross};
}

// got against linear_ref within output_tolerance; an empty `bias`: none.
void compare_linear(const PackedWeights& w, const std::vector<float>& x, int64_t m, const std::vector<float>& got,
                    const std::vector<float>& bias, Operands ops = Operands::Fp32) {
  std::vector<float> want(size_t(m * w.n));
  linear_ref(w, x.data(), m, want.data(), bias.empty() ? nullptr : bias.data());
  for (int64_t t = 0; t < m; ++t)
    for (int64_t r = 0; r < w.n; ++r) {
      const auto [abs_terms, abs_cross] = abs_sums(w, x, t, r);
      INFO("token " << t << " row " << r << " of [" << w.n << ", " << w.k << "], operands " << int(ops));
      const double tol = output_tolerance(w, ops, abs_terms, abs_cross);
      REQUIRE(std::fabs(double(got[t * w.n + r]) - double(want[t * w.n + r])) <= tol);
    }
}

// Every weight layout of the tests: F32, F16 and BF16 views of odd shapes, then the quantized kCases. The float
// views point into `f32` / `f16`, kept alive with them.
struct AllWeights {
  std::vector<std::vector<float>> f32;
  std::vector<std::vector<uint16_t>> f16;
  std::vector<PackedWeights> weights;
};

std::unique_ptr<AllWeights> all_weights(std::mt19937& rng) {
  auto all = std::make_unique<AllWeights>();
  all->f32.reserve(3);
  all->f16.reserve(6);
  for (auto [n, k] : {std::pair<int64_t, int64_t>{13, 77}, {40, 9}, {7, 256}}) {
    const std::vector<float>& f = all->f32.emplace_back(random_vec(size_t(n * k), rng));
    std::vector<uint16_t> h(f.size()), b(f.size());
    for (size_t i = 0; i < f.size(); ++i) h[i] = ptq::f32_to_fp16(f[i]), b[i] = ptq::f32_to_bf16(f[i]);
    all->weights.push_back(view_float_weights(WeightKind::F32, f.data(), n, k));
    all->weights.push_back(view_float_weights(WeightKind::F16, all->f16.emplace_back(std::move(h)).data(), n, k));
    all->weights.push_back(view_float_weights(WeightKind::BF16, all->f16.emplace_back(std::move(b)).data(), n, k));
  }
  for (const Case& c : kCases) all->weights.push_back(make_weights(c, rng));
  return all;
}

// Integer weights in [-128, 127] and codes in [-128, 127], with the extremes planted.
struct IntCase {
  int64_t n, k, groups, m;
  bool per_token;
};
// GEMV (m <= 4), the dp4a GEMM (groups not whole 32-column steps) and the tensor-core GEMM (whole steps: 37 tokens of
// groups of 32, 70 tokens of groups of 128, 5 tokens per channel), odd row and token counts.
const IntCase kIntCases[] = {{37, 96, 3, 1, true},    {29, 200, 5, 3, false},  {70, 128, 1, 4, true},
                             {65, 24, 2, 7, true},    {130, 264, 11, 70, false}, {70, 160, 5, 37, true},
                             {130, 256, 2, 70, false}, {33, 64, 1, 5, true}};

struct IntData {
  std::vector<int16_t> w, c;
  std::vector<float> s, a;
};

IntData make_int(const IntCase& ic, std::mt19937& rng) {
  std::uniform_int_distribution<int> code(-128, 127);
  std::uniform_real_distribution<float> step(0.001f, 0.05f);
  IntData d;
  d.w.resize(size_t(ic.n * ic.k));
  d.c.resize(size_t(ic.m * ic.k));
  for (auto& v : d.w) v = int16_t(code(rng));
  for (auto& v : d.c) v = int16_t(code(rng));
  d.w[0] = -128, d.c[0] = -128;  // the largest product, 2^14
  d.s.resize(size_t(ic.n * ic.groups));
  d.a.resize(size_t(ic.per_token ? ic.m : 1));
  for (auto& v : d.s) v = step(rng);
  for (auto& v : d.a) v = step(rng);
  return d;
}

// mma.sync m16n8k32 (s8) on the CPU: A, B read back from the 32 lanes' fragments through the layout of
// int_linear_common.h, d[lane][reg] += Σ_k A[row][k] · B[k][col] for the lane's C element.
void mma_emulated(int32_t (&d)[32][4], const uint32_t (&a)[32][4], const uint32_t (&b)[32][2]) {
  int8_t am[16][32] = {}, bm[32][8] = {};
  for (int lane = 0; lane < 32; ++lane)
    for (int byte = 0; byte < 4; ++byte) {
      for (int reg = 0; reg < 4; ++reg)
        am[cu::mma_a_row(lane, reg)][cu::mma_a_col(lane, reg) + byte] = int8_t(uint8_t(a[lane][reg] >> (8 * byte)));
      for (int reg = 0; reg < 2; ++reg)
        bm[cu::mma_b_row(lane, reg) + byte][cu::mma_b_col(lane)] = int8_t(uint8_t(b[lane][reg] >> (8 * byte)));
    }
  for (int lane = 0; lane < 32; ++lane)
    for (int reg = 0; reg < 4; ++reg)
      for (int k = 0; k < 32; ++k)
        d[lane][reg] += int32_t(am[cu::mma_c_row(lane, reg)][k]) * int32_t(bm[k][cu::mma_c_col(lane, reg)]);
}

}  // namespace

TEST_CASE("cuda linear, host emulation: weight_at decodes every kernel column as PackedWeights::at", "[cuda-host]") {
  std::mt19937 rng(11);
  for (const Case& c : kCases) {
    const PackedWeights w = make_weights(c, rng);
    const cu::WeightsView v = host_view(w);
    for (int64_t r = 0; r < w.n; ++r)
      for (int64_t j = 0; j < w.k; ++j) {
        INFO("bits " << c.bits << " k " << c.k << " row " << r << " kernel column " << j);
        // Bit for bit: both compute scale * q - offset in fp32 without contraction.
        REQUIRE(cu::weight_at(v, r, j) == w.at(r, w.perm.empty() ? j : w.perm[j]));
      }
  }
}

TEST_CASE("cuda linear, host emulation: the GEMV's lanes and the GEMM's tiles sum to linear_ref", "[cuda-host]") {
  std::mt19937 rng(12);
  const auto all = all_weights(rng);
  for (const PackedWeights& w : all->weights) {
    const cu::WeightsView v = host_view(w);
    const std::vector<float> bias = random_vec(size_t(w.n), rng);
    for (int64_t m : {1, 3, 4}) {  // GEMV token counts
      const std::vector<float> x = random_vec(size_t(m * w.k), rng), xp = gather(w, v, x, m);
      std::vector<float> y(size_t(m * w.n));
      for (int64_t r = 0; r < w.n; ++r) {
        float total[4] = {0, 0, 0, 0};
        for (int lane = 0; lane < 32; ++lane) {  // the warp's lanes, then its shuffle sum
          float acc[4] = {0, 0, 0, 0};
          cu::with_chunk_width(v, [&](auto cw) {
            cu::gemv_lane<decltype(cw)::value>(v, xp.data(), int(m), r, lane, 32, acc);
          });
          for (int t = 0; t < m; ++t) total[t] += acc[t];
        }
        for (int t = 0; t < m; ++t) y[t * w.n + r] = total[t] + bias[r];
      }
      INFO("kind " << weight_kind_name(w.kind) << " bits " << w.bits << " m " << m);
      compare_linear(w, x, m, y, bias);
    }
    // The GEMM: every output is Σ_j weight_at(r, j) · xp[t, j] over the padded width.
    const int64_t m = 6;
    const std::vector<float> x = random_vec(size_t(m * w.k), rng), xp = gather(w, v, x, m);
    std::vector<float> y(size_t(m * w.n));
    const int64_t xw = cu::xp_width(v);
    for (int64_t t = 0; t < m; ++t)
      for (int64_t r = 0; r < w.n; ++r) {
        float acc = 0;
        for (int64_t j = 0; j < xw; ++j) acc += cu::weight_at(v, r, j) * xp[t * xw + j];
        y[t * w.n + r] = acc + bias[r];
      }
    INFO("GEMM, kind " << weight_kind_name(w.kind) << " bits " << w.bits);
    compare_linear(w, x, m, y, bias);
  }
}

TEST_CASE("cuda linear, host emulation: the tensor-core GEMM's tiles and fragments sum to linear_ref", "[cuda-host]") {
  std::mt19937 rng(15);
  const auto all = all_weights(rng);
  for (const PackedWeights& w : all->weights) {
    const cu::WeightsView v = host_view(w);
    if (!cu::hmma_takes(v)) continue;
    const std::vector<float> bias = random_vec(size_t(w.n), rng);
    for (int64_t m : {5, 70}) {
      const std::vector<float> x = random_vec(size_t(m * w.k), rng), xp = gather(w, v, x, m);
      const int64_t xw = cu::xp_width(v);
      std::vector<float> y(size_t(m * w.n), NAN);
      // hmma_kernel's grid, staging loop and warps; the lanes of a warp side by side around each mma, which the
      // emulation computes from the matrices rebuilt out of the fragments (sums in double: the device's fp32
      // accumulation is within the tolerance's (k + 2) u of it).
      for (int64_t rb = 0; rb < w.n; rb += cu::kMmaBlockRows)
        for (int64_t tb = 0; tb < m; tb += cu::kMmaBlockTokens) {
          static double acc[4][32][2][4][4];
          std::memset(acc, 0, sizeof acc);
          std::vector<uint16_t> ws(size_t(cu::kMmaBlockRows * cu::kHmmaStride)), xs(ws.size());
          for (int64_t j0 = 0; j0 < xw; j0 += cu::kHmmaTileK) {
            for (int e = 0; e < cu::kMmaBlockRows * cu::kHmmaTileK; ++e) {
              const int row = e / cu::kHmmaTileK, jj = e % cu::kHmmaTileK;
              ws[row * cu::kHmmaStride + jj] = cu::hmma_weight(v, rb + row, j0 + jj, xw);
              xs[row * cu::kHmmaStride + jj] = cu::hmma_x(xp.data(), m, xw, tb + row, j0 + jj);
            }
            for (int warp = 0; warp < cu::kMmaThreads / 32; ++warp) {
              const int wr = (warp % 2) * cu::kMmaWarpRows, wt = (warp / 2) * cu::kMmaWarpTokens;
              for (int kk = 0; kk < cu::kHmmaTileK; kk += 16) {
                std::vector<cu::HmmaFragments> f(32);
                for (int lane = 0; lane < 32; ++lane)
                  cu::load_hmma_fragments(ws.data(), xs.data(), wr, wt, kk, lane, f[lane]);
                for (int i = 0; i < 2; ++i)
                  for (int j = 0; j < 4; ++j) {
                    float am[16][16], bm[16][8];
                    for (int lane = 0; lane < 32; ++lane)
                      for (int half = 0; half < 2; ++half) {
                        for (int reg = 0; reg < 4; ++reg)
                          am[cu::mma_a_row(lane, reg)][cu::hmma_a_col(lane, reg) + half] =
                              ptq::fp16_to_f32(uint16_t(f[lane].a[i][reg] >> (16 * half)));
                        for (int reg = 0; reg < 2; ++reg)
                          bm[cu::hmma_b_row(lane, reg) + half][cu::mma_b_col(lane)] =
                              ptq::fp16_to_f32(uint16_t(f[lane].b[j][reg] >> (16 * half)));
                      }
                    for (int lane = 0; lane < 32; ++lane)
                      for (int reg = 0; reg < 4; ++reg)
                        for (int k = 0; k < 16; ++k)
                          acc[warp][lane][i][j][reg] +=
                              double(am[cu::mma_c_row(lane, reg)][k]) * bm[k][cu::mma_c_col(lane, reg)];
                  }
              }
            }
          }
          for (int warp = 0; warp < cu::kMmaThreads / 32; ++warp) {
            const int wr = (warp % 2) * cu::kMmaWarpRows, wt = (warp / 2) * cu::kMmaWarpTokens;
            for (int lane = 0; lane < 32; ++lane) {
              float a32[2][4][4];
              for (int i = 0; i < 2; ++i)
                for (int j = 0; j < 4; ++j)
                  for (int reg = 0; reg < 4; ++reg) a32[i][j][reg] = float(acc[warp][lane][i][j][reg]);
              cu::store_hmma_tile(a32, w.n, m, rb + wr, tb + wt, bias.data(), lane, y.data());
            }
          }
        }
      INFO("tensor-core GEMM, kind " << weight_kind_name(w.kind) << " bits " << w.bits << " m " << m);
      compare_linear(w, x, m, y, bias, Operands::Fp16);
    }
  }
}

TEST_CASE("cuda int_linear, host emulation: dp4a group sums and the epilogue equal int_linear_ref bit for bit",
          "[cuda-host]") {
  std::mt19937 rng(13);
  for (const IntCase& ic : kIntCases) {
    const IntData d = make_int(ic, rng);
    const IntWeights w{d.w.data(), d.s.data(), ic.n, ic.k, ic.groups};
    const IntActivations x{d.c.data(), d.a.data(), ic.m, ic.per_token};
    REQUIRE(cu::int_linear_supports(w));
    std::vector<float> bias = random_vec(size_t(ic.n), rng), want(size_t(ic.m * ic.n)), got(want.size());
    int_linear_ref(w, x, want.data(), bias.data());
    // Bytes as the device holds them, four columns per word.
    std::vector<int8_t> wb(d.w.begin(), d.w.end()), cb(d.c.begin(), d.c.end());
    const auto* ww = reinterpret_cast<const uint32_t*>(wb.data());
    const auto* cw = reinterpret_cast<const uint32_t*>(cb.data());
    const int64_t kd = ic.k / 4, gd = kd / ic.groups;
    for (int64_t t = 0; t < ic.m; ++t)
      for (int64_t r = 0; r < ic.n; ++r) {
        double sum = 0;
        for (int64_t g = 0; g < ic.groups; ++g) {
          int32_t acc = 0;
          for (int lane = 0; lane < 32; ++lane)
            acc += cu::group_partial(ww + r * kd, cw + t * kd, g * gd, (g + 1) * gd, lane, 32);
          sum = cu::epilogue_add(sum, d.s[r * ic.groups + g], acc);
        }
        got[t * ic.n + r] = cu::epilogue_finish(sum, ic.per_token ? d.a[t] : d.a[0], bias.data(), r);
      }
    INFO("n " << ic.n << " k " << ic.k << " groups " << ic.groups << " m " << ic.m);
    REQUIRE(got == want);
  }
}


TEST_CASE("cuda mma fragment layouts (s8 m16n8k32, f16 m16n8k16) cover each matrix element exactly once",
          "[cuda-host]") {
  int a[16][32] = {}, b[32][8] = {}, c[16][8] = {}, ha[16][16] = {}, hb[16][8] = {};
  for (int lane = 0; lane < 32; ++lane) {
    for (int reg = 0; reg < 4; ++reg) {
      for (int byte = 0; byte < 4; ++byte) ++a[cu::mma_a_row(lane, reg)][cu::mma_a_col(lane, reg) + byte];
      for (int half = 0; half < 2; ++half) ++ha[cu::mma_a_row(lane, reg)][cu::hmma_a_col(lane, reg) + half];
      ++c[cu::mma_c_row(lane, reg)][cu::mma_c_col(lane, reg)];
    }
    for (int reg = 0; reg < 2; ++reg) {
      for (int byte = 0; byte < 4; ++byte) ++b[cu::mma_b_row(lane, reg) + byte][cu::mma_b_col(lane)];
      for (int half = 0; half < 2; ++half) ++hb[cu::hmma_b_row(lane, reg) + half][cu::mma_b_col(lane)];
    }
  }
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 32; ++k) REQUIRE(a[r][k] == 1);
  for (int k = 0; k < 32; ++k)
    for (int t = 0; t < 8; ++t) REQUIRE(b[k][t] == 1);
  for (int r = 0; r < 16; ++r)
    for (int t = 0; t < 8; ++t) REQUIRE(c[r][t] == 1);
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 16; ++k) REQUIRE(ha[r][k] == 1);
  for (int k = 0; k < 16; ++k)
    for (int t = 0; t < 8; ++t) REQUIRE(hb[k][t] == 1);
}

TEST_CASE("cuda int_linear, host emulation: the tensor-core GEMM's warps equal int_linear_ref bit for bit",
          "[cuda-host]") {
  std::mt19937 rng(14);
  int tested = 0;
  for (const IntCase& ic : kIntCases) {
    const int64_t kd = ic.k / 4;
    if (ic.m <= 4 || !cu::int_mma_supports(kd, ic.groups)) continue;
    ++tested;
    const IntData d = make_int(ic, rng);
    const IntWeights w{d.w.data(), d.s.data(), ic.n, ic.k, ic.groups};
    const IntActivations x{d.c.data(), d.a.data(), ic.m, ic.per_token};
    std::vector<float> bias = random_vec(size_t(ic.n), rng), want(size_t(ic.m * ic.n)), got(want.size(), NAN);
    int_linear_ref(w, x, want.data(), bias.data());
    std::vector<int8_t> wb(d.w.begin(), d.w.end()), cb(d.c.begin(), d.c.end());
    const auto* ww = reinterpret_cast<const uint32_t*>(wb.data());
    const auto* cw = reinterpret_cast<const uint32_t*>(cb.data());
    const int64_t gd = kd / ic.groups;
    // int_mma_kernel's grid, warps and loops, the lanes of a warp side by side around each mma.
    for (int64_t bx = 0; bx * cu::kMmaBlockRows < ic.n; ++bx)
      for (int64_t by = 0; by * cu::kMmaBlockTokens < ic.m; ++by)
        for (int warp = 0; warp < cu::kMmaThreads / 32; ++warp) {
          const int64_t r0 = bx * cu::kMmaBlockRows + (warp % 2) * cu::kMmaWarpRows;
          const int64_t t0 = by * cu::kMmaBlockTokens + (warp / 2) * cu::kMmaWarpTokens;
          static int32_t acc[32][2][4][4];
          static double sum[32][2][4][4];
          std::memset(acc, 0, sizeof acc);
          std::memset(sum, 0, sizeof sum);
          std::vector<cu::MmaFragments> f(32);
          for (int64_t g = 0; g < ic.groups; ++g) {
            for (int64_t d0 = g * gd; d0 < (g + 1) * gd; d0 += 8) {
              for (int lane = 0; lane < 32; ++lane)
                cu::load_mma_fragments(ww, ic.n, cw, ic.m, kd, r0, t0, 4 * d0, lane, f[lane]);
              for (int i = 0; i < 2; ++i)
                for (int j = 0; j < 4; ++j) {
                  uint32_t a[32][4], b[32][2];
                  int32_t dd[32][4];
                  for (int lane = 0; lane < 32; ++lane) {
                    std::copy_n(f[lane].a[i], 4, a[lane]);
                    std::copy_n(f[lane].b[j], 2, b[lane]);
                    std::copy_n(acc[lane][i][j], 4, dd[lane]);
                  }
                  mma_emulated(dd, a, b);
                  for (int lane = 0; lane < 32; ++lane) std::copy_n(dd[lane], 4, acc[lane][i][j]);
                }
            }
            for (int lane = 0; lane < 32; ++lane)
              cu::fold_mma_group(acc[lane], sum[lane], d.s.data(), ic.n, ic.groups, g, r0, lane);
          }
          for (int lane = 0; lane < 32; ++lane)
            cu::store_mma_tile(sum[lane], ic.n, ic.m, r0, t0, d.a.data(), ic.per_token, bias.data(), lane, got.data());
        }
    INFO("n " << ic.n << " k " << ic.k << " groups " << ic.groups << " m " << ic.m);
    REQUIRE(got == want);
  }
  REQUIRE(tested == 3);
}


namespace {

// Activations with a wide range and their code settings: 8-bit symmetric per tensor, 4-bit symmetric per token,
// 7-bit asymmetric per token with clipping, and a column order.
struct ActCase {
  ActCodes codes;
  bool perm;
};
std::vector<ActCase> act_cases() {
  std::vector<ActCase> cases(4);
  cases[0].codes.per_token = false;
  cases[0].codes.grid = ptq::grid_math::act_grid(-3.0f, 2.5f, true, 1.0, 127);
  cases[1].codes.qmin = -8, cases[1].codes.qmax = 7;
  cases[2].codes.sym = false, cases[2].codes.clip = 0.9, cases[2].codes.qmin = 0, cases[2].codes.qmax = 127;
  cases[3] = cases[1];
  cases[3].perm = true;
  return cases;
}

// act_codes_kernel on the CPU: each lane's range, the block's tree in its order, then every column's code.
void act_codes_emulated(const ActCodes& p, const float* x, int64_t m, int64_t x_cols, int64_t k, const int32_t* perm,
                        int8_t* c, float* a, int* nonfinite = nullptr) {
  constexpr int kT = cu::kActCodeThreads;
  for (int64_t t = 0; t < m; ++t) {
    float mn[kT], mx[kT];
    for (int lane = 0; lane < kT; ++lane) cu::act_row_range(x + t * x_cols, x_cols, lane, kT, mn[lane], mx[lane]);
    for (int s = kT / 2; s > 0; s /= 2)
      for (int lane = 0; lane < s; ++lane) {
        mn[lane] = std::fmin(mn[lane], mn[lane + s]);
        mx[lane] = std::fmax(mx[lane], mx[lane + s]);
      }
    const ptq::grid_math::ActGrid g = p.per_token ? ptq::grid_math::act_grid(mn[0], mx[0], p.sym, p.clip, p.qmax)
                                                  : p.grid;
    a[t] = g.scale;
    if (!cu::act_code_valid(g.scale) && nonfinite != nullptr) *nonfinite = 1;
    for (int64_t j = 0; j < k; ++j) c[t * k + j] = cu::act_code_byte(p, g, x + t * x_cols, perm, j, nonfinite);
  }
}

// Inputs [m, k] with one non-finite value at token 1 (a NaN, +Inf, -Inf) or none, and whether act_codes_ref refuses
// them: a NaN always; an Inf where it makes the step non-finite (a per-token row's range), not on a static grid,
// where it clamps to the grid's end as any large value does.
struct NonfiniteCase {
  const char* what;
  std::vector<float> x;
  bool refused;
};
std::vector<NonfiniteCase> nonfinite_cases(const ActCodes& p, const int32_t* perm, int64_t m, int64_t k,
                                           std::mt19937& rng) {
  std::vector<NonfiniteCase> out;
  const float inf = std::numeric_limits<float>::infinity();
  for (auto [what, v] : {std::pair<const char*, float>{"none", 0.0f}, {"NaN", std::nanf("")}, {"+Inf", inf},
                         {"-Inf", -inf}}) {
    std::vector<float> x = random_vec(size_t(m * k), rng);
    if (std::string(what) != "none") x[size_t(k + k / 2)] = v;
    std::vector<int16_t> c(size_t(m * k));
    std::vector<float> a(static_cast<size_t>(m));
    bool refused = false;
    try {
      act_codes_ref(p, x.data(), m, k, k, perm, c.data(), a.data());
    } catch (const std::invalid_argument&) {
      refused = true;
    }
    out.push_back({what, std::move(x), refused});
  }
  return out;
}

}  // namespace

TEST_CASE("cuda act_codes, host emulation: the blocks' ranges and codes equal act_codes_ref bit for bit",
          "[cuda-host]") {
  std::mt19937 rng(16);
  for (const ActCase& ac : act_cases())
    for (auto [m, k] : {std::pair<int64_t, int64_t>{1, 7}, {5, 300}, {3, 1000}}) {
      std::vector<float> x = random_vec(size_t(m * k), rng);
      for (auto& v : x) v *= 2.0f;
      std::vector<int32_t> perm(static_cast<size_t>(k));
      for (int64_t j = 0; j < k; ++j) perm[j] = int32_t(k - 1 - j);
      const int32_t* p = ac.perm ? perm.data() : nullptr;
      std::vector<int16_t> want(size_t(m * k));
      std::vector<float> a_want(static_cast<size_t>(m)), a_got(static_cast<size_t>(m));
      act_codes_ref(ac.codes, x.data(), m, k, k, p, want.data(), a_want.data());
      std::vector<int8_t> got(size_t(m * k));
      act_codes_emulated(ac.codes, x.data(), m, k, k, p, got.data(), a_got.data());
      INFO("m " << m << " k " << k << " per_token " << ac.codes.per_token << " sym " << ac.codes.sym);
      REQUIRE(std::vector<int16_t>(got.begin(), got.end()) == want);
      REQUIRE(a_got == a_want);
    }
}

TEST_CASE("cuda act_codes, host emulation: the nonfinite record is set exactly where act_codes_ref refuses",
          "[cuda-host]") {
  std::mt19937 rng(18);
  int refused = 0, accepted_inf = 0;
  for (const ActCase& ac : act_cases()) {
    const int64_t m = 3, k = 300;
    std::vector<int32_t> perm(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) perm[j] = int32_t(k - 1 - j);
    const int32_t* p = ac.perm ? perm.data() : nullptr;
    for (const NonfiniteCase& nc : nonfinite_cases(ac.codes, p, m, k, rng)) {
      std::vector<int8_t> c(size_t(m * k));
      std::vector<float> a(static_cast<size_t>(m));
      int flag = 0;
      act_codes_emulated(ac.codes, nc.x.data(), m, k, k, p, c.data(), a.data(), &flag);
      INFO(nc.what << " per_token " << ac.codes.per_token << " sym " << ac.codes.sym);
      CHECK((flag != 0) == nc.refused);
      refused += nc.refused;
      accepted_inf += !nc.refused && std::string(nc.what) != "none";
    }
  }
  CHECK(refused > 0);       // both outcomes occur: the record is not constant
  CHECK(accepted_inf > 0);  // an Inf on a static grid is coded (clamped), as act_codes_ref codes it
}

TEST_CASE("cuda act_linear's dword padding: zero weight columns and a column map leave y bit for bit", "[cuda-host]") {
  std::mt19937 rng(17);
  // (n, k, groups): odd widths (821: sotu-llama-8m's down_proj after MergeQuant's splits), widths 4j + 1, 2, 3, and
  // whole dwords (a copy); natural and permuted columns; static and per-token codes.
  for (auto [n, k, groups] : {std::tuple<int64_t, int64_t, int64_t>{9, 821, 1}, {5, 15, 3}, {7, 30, 5}, {6, 33, 3},
                              {4, 16, 2}})
    for (bool permuted : {false, true})
      for (const ActCase& ac : act_cases()) {
        std::vector<int16_t> w(size_t(n * k));
        std::uniform_int_distribution<int> code(-128, 127);
        for (auto& v : w) v = int16_t(code(rng));
        const std::vector<float> s = random_vec(size_t(n * groups), rng), x = random_vec(size_t(3 * k), rng);
        std::vector<int32_t> perm(static_cast<size_t>(k));
        for (int64_t j = 0; j < k; ++j) perm[j] = int32_t((j * 7 + 3) % k);
        if (k % 7 == 0) std::iota(perm.begin(), perm.end(), 0);  // (j·7 + 3) mod k is a permutation when gcd(7, k) = 1
        const int32_t* p = permuted ? perm.data() : nullptr;
        const IntWeights iw{w.data(), s.data(), n, k, groups};
        // The unpadded module: its codes and int_linear_ref.
        std::vector<int16_t> c(size_t(3 * k));
        std::vector<float> a(3), want(size_t(3 * n)), got(size_t(3 * n));
        act_codes_ref(ac.codes, x.data(), 3, k, k, p, c.data(), a.data());
        int_linear_ref(iw, IntActivations{c.data(), a.data(), 3, true}, want.data());
        // Padded: whole dwords per group, codes through the padded map (the device's act_codes, emulated).
        const cu::DwordPadded d = cu::pad_groups_to_dwords(iw, p);
        REQUIRE(cu::int_linear_supports(d.view));
        REQUIRE(d.view.k % 4 == 0);
        std::vector<int8_t> c8(size_t(3 * d.view.k));
        std::vector<float> a8(3);
        act_codes_emulated(ac.codes, x.data(), 3, k, d.view.k, d.perm.data(), c8.data(), a8.data());
        const std::vector<int16_t> c16(c8.begin(), c8.end());
        int_linear_ref(d.view, IntActivations{c16.data(), a8.data(), 3, true}, got.data());
        INFO("n " << n << " k " << k << " groups " << groups << " permuted " << permuted << " per_token "
                  << ac.codes.per_token);
        REQUIRE(a8 == a);
        REQUIRE(got == want);
      }
}

TEST_CASE("cuda int_linear refuses weights that do not fit a byte or a dword group", "[cuda-host]") {
  std::vector<int16_t> w(8 * 12, 1);
  std::vector<float> s(8 * 3, 0.1f);
  REQUIRE(cu::int_linear_supports(IntWeights{w.data(), s.data(), 8, 12, 3}));        // groups of 4 columns
  REQUIRE_FALSE(cu::int_linear_supports(IntWeights{w.data(), s.data(), 8, 12, 2}));  // groups of 6: not whole dwords
  REQUIRE(cu::int_linear_supports_padded(IntWeights{w.data(), s.data(), 8, 12, 2}));  // ... until padded to 8
  w[5 * 12 + 7] = 128;
  REQUIRE_FALSE(cu::int_linear_supports(IntWeights{w.data(), s.data(), 8, 12, 3}));  // 128 is not a signed byte
  w[5 * 12 + 7] = -128;
  REQUIRE(cu::int_linear_supports(IntWeights{w.data(), s.data(), 8, 12, 3}));
}

TEST_CASE("without a device the CUDA layer says why, and uploads throw", "[cuda-host]") {
  if (cu::device_count() > 0) {
    SUCCEED("a CUDA device is present: the [cuda] tests run instead");
    return;
  }
  REQUIRE_FALSE(cu::unavailable_reason().empty());
  std::vector<float> f(4 * 4, 1.0f);
  REQUIRE_THROWS_AS(cu::upload(view_float_weights(WeightKind::F32, f.data(), 4, 4)), cu::Error);
  REQUIRE_THROWS_AS(cu::Buffer(16), cu::Error);
}

namespace {

// Sets the process-wide FloatGemm for a test and restores the previous one.
class FloatGemmScope {
 public:
  explicit FloatGemmScope(cu::FloatGemm g) : saved_(cu::float_gemm()) { cu::set_float_gemm(g); }
  ~FloatGemmScope() { cu::set_float_gemm(saved_); }
  FloatGemmScope(const FloatGemmScope&) = delete;
  FloatGemmScope& operator=(const FloatGemmScope&) = delete;

 private:
  cu::FloatGemm saved_;
};

}  // namespace

TEST_CASE("the cuBLAS loader finds libcublas and every function it calls, without a device", "[cuda-host]") {
  if (!cu::built_with_cuda()) {
    REQUIRE(cu::cublas_library().empty());
    REQUIRE(cu::cublas_load_error().find("without CUDA") != std::string::npos);
    return;
  }
  // Conditional on the toolkit's file: the build machines, CI (one image) and the device machine have the CUDA 13
  // toolkit at /usr/local/cuda, where cuBLAS must load; a machine without it must say why instead.
  const std::string error = cu::cublas_load_error(), library = cu::cublas_library();
  if (std::ifstream("/usr/local/cuda/lib64/libcublas.so.13").good()) {
    INFO(error);
    REQUIRE(error.empty());
    REQUIRE(std::find(std::begin(cu::kCublasCandidates), std::end(cu::kCublasCandidates), library) !=
            std::end(cu::kCublasCandidates));
  } else {
    REQUIRE(library.empty());
    REQUIRE(error.find("no usable cuBLAS library") != std::string::npos);
  }
}

TEST_CASE("cublasGemmEx's arguments for y = x Wᵀ, run through the BLAS definition of the call, give x Wᵀ",
          "[cuda-host]") {
  // The column-major GEMM as the BLAS reference defines it: C[i + j·ldc] = Σ_l op(A)[i, l] · op(B)[l, j], with
  // op(A)[i, l] = A[l + i·lda] transposed, A[i + l·lda] not (likewise B); what cublasGemmEx computes on a device.
  auto gemm_ex = [](const cu::GemmExShape& g, const std::vector<double>& A, const std::vector<double>& B,
                    std::vector<double>& C) {
    for (int64_t i = 0; i < g.rows; ++i)
      for (int64_t j = 0; j < g.cols; ++j) {
        double sum = 0;
        for (int64_t l = 0; l < g.depth; ++l)
          sum += (g.trans_a ? A[size_t(l + i * g.lda)] : A[size_t(i + l * g.lda)]) *
                 (g.trans_b ? B[size_t(j + l * g.ldb)] : B[size_t(l + j * g.ldb)]);
        C[size_t(i + j * g.ldc)] = sum;
      }
  };
  std::mt19937 rng(31);
  std::uniform_int_distribution<int> small(-8, 8);  // integers: every sum exact, the comparison bit for bit
  // (m, n, k, row strides of W and x): linear_cublas's x rows padded to 8 elements, W's rows as stored, and padded.
  for (auto [m, n, k, ldw, ldx] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{5, 13, 77, 77, 80},
                                   {70, 9, 8, 8, 8}, {6, 31, 301, 304, 304}, {33, 1, 3, 3, 8}}) {
    std::vector<double> w(size_t(n * ldw), 1e30), x(size_t(m * ldx), 1e30);  // padding poisoned: must not be read
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < k; ++j) w[size_t(r * ldw + j)] = small(rng);
    for (int64_t t = 0; t < m; ++t)
      for (int64_t j = 0; j < k; ++j) x[size_t(t * ldx + j)] = small(rng);
    const cu::GemmExShape g = cu::cublas_xwt_shape(m, n, k, ldw, ldx);
    std::vector<double> y(size_t(m * n), -1);
    gemm_ex(g, w, x, y);
    INFO("m " << m << " n " << n << " k " << k << " ldw " << ldw << " ldx " << ldx);
    bool equal = true;
    for (int64_t t = 0; t < m; ++t)
      for (int64_t r = 0; r < n; ++r) {
        double want = 0;  // y [m, n] row-major = x Wᵀ
        for (int64_t j = 0; j < k; ++j) want += x[size_t(t * ldx + j)] * w[size_t(r * ldw + j)];
        equal = equal && y[size_t(t * n + r)] == want;
      }
    CHECK(equal);
  }
}

TEST_CASE("cuda linear picks its kernel by weight kind, token count and FloatGemm: cuBLAS forced without it throws why",
          "[cuda-host]") {
  cu::DeviceWeights f32, f16, bf16, quant;  // no buffers: the choice reads the kind only
  f32.kind = WeightKind::F32, f16.kind = WeightKind::F16, bf16.kind = WeightKind::BF16, quant.kind = WeightKind::Quant;
  if (!cu::built_with_cuda()) {
    REQUIRE_THROWS_AS(cu::linear_kernel(f16, 8), cu::Error);
    return;
  }
  const std::string why = cu::cublas_unavailable();  // here without a device: "no usable CUDA driver ..."
  INFO("cublas_unavailable: " << why);
  for (cu::FloatGemm g : {cu::FloatGemm::Auto, cu::FloatGemm::Own, cu::FloatGemm::Cublas}) {
    const FloatGemmScope scope(g);
    INFO("FloatGemm " << int(g));
    for (const cu::DeviceWeights* w : {&f32, &f16, &bf16, &quant})
      REQUIRE(std::string(cu::linear_kernel(*w, kGemvMaxTokens)) == "gemv");
    REQUIRE(std::string(cu::linear_kernel(f32, 5)) == "gemm");
    REQUIRE(std::string(cu::linear_kernel(quant, 5)) == "hmma");
    for (const cu::DeviceWeights* w : {&f16, &bf16}) {
      if (g == cu::FloatGemm::Own || (g == cu::FloatGemm::Auto && !why.empty())) {
        REQUIRE(std::string(cu::linear_kernel(*w, 5)) == "hmma");
      } else if (why.empty()) {
        REQUIRE(std::string(cu::linear_kernel(*w, 5)) == "cublas");
      } else {
        try {
          cu::linear_kernel(*w, 5);
          FAIL("FloatGemm::Cublas without cuBLAS did not throw");
        } catch (const cu::Error& e) {
          REQUIRE(std::string(e.what()).find("cuBLAS is unavailable: " + why) != std::string::npos);
        }
      }
    }
  }
}

namespace {

// Random [n, k] weights of a 16-bit kind (F16 or BF16) with the view of them (not copyable: the view points into
// `bits`).
struct HalfWeights {
  std::vector<uint16_t> bits;
  PackedWeights w;
  HalfWeights(WeightKind kind, int64_t n, int64_t k, std::mt19937& rng) {
    for (float v : random_vec(size_t(n * k), rng))
      bits.push_back(kind == WeightKind::F16 ? ptq::f32_to_fp16(v) : ptq::f32_to_bf16(v));
    w = view_float_weights(kind, bits.data(), n, k);
  }
  HalfWeights(const HalfWeights&) = delete;
  HalfWeights& operator=(const HalfWeights&) = delete;
};

// Shapes of the cuBLAS tests: n and k not multiples of 8 (k = 9: one padded 16-column row of fp16 activations).
const std::pair<int64_t, int64_t> kHalfShapes[] = {{13, 77}, {70, 9}, {37, 301}, {129, 1031}};
// Token counts above kGemvMaxTokens, not multiples of 8 either.
const int64_t kHalfTokens[] = {5, 63, 130};

// f(weights, their device copy) for every kHalfShapes shape in F16 and in BF16, where cuBLAS is available.
template <class F>
void for_half_weights(std::mt19937& rng, F&& f) {
  INFO("cublas_unavailable: " << cu::cublas_unavailable());
  REQUIRE(cu::cublas_unavailable().empty());
  for (auto [n, k] : kHalfShapes)
    for (WeightKind kind : {WeightKind::F16, WeightKind::BF16}) {
      const HalfWeights h(kind, n, k, rng);
      f(h.w, cu::upload(h.w));
    }
}

// linear_host with FloatGemm g, checking that `kernel` ran.
std::vector<float> run_linear(cu::FloatGemm g, const char* kernel, const cu::DeviceWeights& dw,
                              const std::vector<float>& x, int64_t m, const std::vector<float>& bias) {
  const FloatGemmScope scope(g);
  REQUIRE(std::string(cu::linear_kernel(dw, m)) == kernel);
  std::vector<float> y(size_t(m * dw.n), NAN);
  cu::linear_host(dw, x.data(), m, y.data(), bias.empty() ? nullptr : bias.data());
  return y;
}

}  // namespace

// ---- on a device ---------------------------------------------------------------------------------------------

TEST_CASE("cuda linear equals linear_ref on odd sizes, every grid, float kinds, GEMV and GEMM", "[.cuda]") {
  std::mt19937 rng(21);
  const auto all = all_weights(rng);
  for (const PackedWeights& w : all->weights) {
    const cu::DeviceWeights dw = cu::upload(w);
    const std::vector<float> bias = random_vec(size_t(w.n), rng);
    for (int64_t m : {1, 2, 3, 4, 5, 63, 130}) {
      const std::vector<float> x = random_vec(size_t(m * w.k), rng);
      std::vector<float> y(size_t(m * w.n));
      cu::linear_host(dw, x.data(), m, y.data(), bias.data());
      const std::string kernel = cu::linear_kernel(dw, m);
      INFO("kind " << weight_kind_name(w.kind) << " bits " << w.bits << " m " << m << " kernel " << kernel);
      compare_linear(w, x, m, y, bias, operands_of(kernel));
    }
  }
}

TEST_CASE("cuda linear on cuBLAS equals linear_ref within its activations' rounding, F16 and BF16, odd sizes, bias",
          "[.cuda]") {
  std::mt19937 rng(24);
  for_half_weights(rng, [&](const PackedWeights& w, const cu::DeviceWeights& dw) {
    for (int64_t m : kHalfTokens)
      for (bool with_bias : {false, true}) {
        const std::vector<float> x = random_vec(size_t(m * w.k), rng);
        const std::vector<float> bias = with_bias ? random_vec(size_t(w.n), rng) : std::vector<float>();
        const std::vector<float> y = run_linear(cu::FloatGemm::Cublas, "cublas", dw, x, m, bias);
        INFO(weight_kind_name(w.kind) << " [" << w.n << ", " << w.k << "] m " << m << " bias " << with_bias);
        compare_linear(w, x, m, y, bias, Operands::Activations16);
      }
  });
}

TEST_CASE("cuda linear: cuBLAS and the own hmma kernel agree within the sum of their bounds", "[.cuda]") {
  std::mt19937 rng(25);
  for_half_weights(rng, [&](const PackedWeights& w, const cu::DeviceWeights& dw) {
    const std::vector<float> bias = random_vec(size_t(w.n), rng);
    for (int64_t m : kHalfTokens) {
      const std::vector<float> x = random_vec(size_t(m * w.k), rng);
      const std::vector<float> a = run_linear(cu::FloatGemm::Cublas, "cublas", dw, x, m, bias);
      const std::vector<float> b = run_linear(cu::FloatGemm::Own, "hmma", dw, x, m, bias);
      // Each is within its bound of linear_ref, so they are within the sum of the two of each other.
      for (int64_t t = 0; t < m; ++t)
        for (int64_t r = 0; r < w.n; ++r) {
          const auto [abs_terms, abs_cross] = abs_sums(w, x, t, r);
          const double tol = output_tolerance(w, Operands::Activations16, abs_terms, abs_cross) +
                             output_tolerance(w, Operands::Fp16, abs_terms, abs_cross);
          INFO(weight_kind_name(w.kind) << " [" << w.n << ", " << w.k << "] m " << m << " token " << t << " row " << r);
          REQUIRE(std::fabs(double(a[t * w.n + r]) - double(b[t * w.n + r])) <= tol);
        }
    }
  });
}

TEST_CASE("cuda act_codes equals act_codes_ref bit for bit", "[.cuda]") {
  std::mt19937 rng(23);
  for (const ActCase& ac : act_cases())
    for (auto [m, k] : {std::pair<int64_t, int64_t>{1, 7}, {5, 300}, {70, 1000}}) {
      const std::vector<float> x = random_vec(size_t(m * k), rng);
      std::vector<int32_t> perm(static_cast<size_t>(k));
      for (int64_t j = 0; j < k; ++j) perm[j] = int32_t(k - 1 - j);
      std::vector<int16_t> want(size_t(m * k));
      std::vector<float> a_want(static_cast<size_t>(m)), a_got(static_cast<size_t>(m));
      act_codes_ref(ac.codes, x.data(), m, k, k, ac.perm ? perm.data() : nullptr, want.data(), a_want.data());
      cu::Buffer dx = cu::to_device(x.data(), x.size()), dp = cu::to_device(perm.data(), perm.size());
      cu::Buffer dc(size_t(m * k)), da(size_t(m) * sizeof(float));
      cu::act_codes(ac.codes, dx.as<float>(), m, k, k, ac.perm ? dp.as<int32_t>() : nullptr, dc.as<int8_t>(),
                    da.as<float>());
      cu::synchronize();
      std::vector<int8_t> got(size_t(m * k));
      dc.download(got.data(), got.size());
      da.download(a_got.data(), a_got.size() * sizeof(float));
      INFO("m " << m << " k " << k << " per_token " << ac.codes.per_token << " sym " << ac.codes.sym);
      CHECK(std::vector<int16_t>(got.begin(), got.end()) == want);
      CHECK(a_got == a_want);
    }
}

TEST_CASE("cuda act_codes sets its nonfinite record exactly where act_codes_ref refuses", "[.cuda]") {
  std::mt19937 rng(24);
  const int64_t m = 3, k = 300;
  for (const ActCase& ac : act_cases()) {
    std::vector<int32_t> perm(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) perm[j] = int32_t(k - 1 - j);
    cu::Buffer dp = cu::to_device(perm.data(), perm.size());
    for (const NonfiniteCase& nc : nonfinite_cases(ac.codes, ac.perm ? perm.data() : nullptr, m, k, rng)) {
      cu::Buffer dx = cu::to_device(nc.x.data(), nc.x.size()), dc(size_t(m * k)), da(size_t(m) * sizeof(float));
      cu::Buffer flag(sizeof(int));
      flag.zero();
      cu::act_codes(ac.codes, dx.as<float>(), m, k, k, ac.perm ? dp.as<int32_t>() : nullptr, dc.as<int8_t>(),
                    da.as<float>(), flag.as<int>());
      cu::synchronize();
      int got = 0;
      flag.download(&got, sizeof(got));
      INFO(nc.what << " per_token " << ac.codes.per_token << " sym " << ac.codes.sym);
      CHECK((got != 0) == nc.refused);
    }
  }
}

TEST_CASE("cuda int_linear equals int_linear_ref bit for bit, GEMV and GEMM", "[.cuda]") {
  std::mt19937 rng(22);
  for (const IntCase& ic : kIntCases) {
    const IntData d = make_int(ic, rng);
    const IntWeights w{d.w.data(), d.s.data(), ic.n, ic.k, ic.groups};
    const IntActivations x{d.c.data(), d.a.data(), ic.m, ic.per_token};
    const cu::DeviceIntWeights dw = cu::upload(w);
    std::vector<float> bias = random_vec(size_t(ic.n), rng), want(size_t(ic.m * ic.n)), got(want.size());
    int_linear_ref(w, x, want.data(), bias.data());
    cu::int_linear_host(dw, x, got.data(), bias.data());
    INFO("n " << ic.n << " k " << ic.k << " groups " << ic.groups << " m " << ic.m);
    REQUIRE(got == want);
  }
}
