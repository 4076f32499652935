// GPTQ's device ops (kernels/gptq_ops.h):
//  - "[cuda-host]": the host emulation (cuda/gptq_common.h's per-thread code in gptq.cu's launch order) against
//    independent references: a double-precision product for gemm_at_b, the invariant Uᵀ U (H + λI) = I for the
//    factor, rounding to nearest on each group's own grid for a sweep with U = I (no error to push: RTN);
//  - "[.cuda]" (hidden unless asked for with "[cuda]"): the CUDA ops against the emulation, bit for bit (every
//    multiply-add is an explicit FMA and every division and square root is IEEE-rounded on both).
// The driver (algorithms/gptq.cpp's gptq_quantize_on) is tested on the emulation in tests/algorithms.
// u = 2^-24 is fp32's unit roundoff.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/grid_math.h"
#include "kernels/cuda/device.h"
#include "kernels/gptq_ops.h"

using namespace ptq;
using namespace ptq::kernels;
namespace cu = ptq::kernels::cuda;

namespace {

const double kU = std::ldexp(1.0, -24);

std::vector<float> random_vec(size_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// Memory of `ops` holding a copy of v.
template <class T>
std::shared_ptr<void> on(GptqOps& ops, const std::vector<T>& v) {
  std::shared_ptr<void> p = ops.alloc(v.size() * sizeof(T));
  ops.to_device(p.get(), v.data(), v.size() * sizeof(T));
  return p;
}

template <class T>
std::vector<T> back(GptqOps& ops, const std::shared_ptr<void>& p, size_t n) {
  std::vector<T> v(n);
  ops.to_host(v.data(), p.get(), n * sizeof(T));
  return v;
}

template <class T>
T* ptr(const std::shared_ptr<void>& p) {
  return static_cast<T*>(p.get());
}

// H = XᵀX / tokens + 0.1 I over correlated columns (4 latent factors): symmetric positive definite, condition ~1e2.
std::vector<float> spd_matrix(int64_t n, std::mt19937& rng) {
  const int64_t tokens = 4 * n;
  std::vector<float> f = random_vec(size_t(tokens * 4), rng), mix = random_vec(size_t(4 * n), rng),
                     noise = random_vec(size_t(tokens * n), rng);
  std::vector<double> x(size_t(tokens * n));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t c = 0; c < n; ++c) {
      double v = noise[t * n + c];
      for (int k = 0; k < 4; ++k) v += double(f[t * 4 + k]) * mix[k * n + c];
      x[t * n + c] = v;
    }
  std::vector<float> h(size_t(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t t = 0; t < tokens; ++t) s += x[t * n + i] * x[t * n + j];
      h[i * n + j] = float(s / double(tokens) + (i == j ? 0.1 : 0.0));
    }
  for (int64_t i = 0; i < n; ++i)  // exactly symmetric after the float rounding
    for (int64_t j = 0; j < i; ++j) h[i * n + j] = h[j * n + i];
  return h;
}

struct GemmCase {
  int64_t m, n, k, lda, ldb, ldc;
  float alpha, beta;
};

// C = beta C + alpha Aᵀ B on `ops`, from the given A, B, C.
std::vector<float> run_gemm(GptqOps& ops, const GemmCase& g, const std::vector<float>& a, const std::vector<float>& b,
                            const std::vector<float>& c) {
  auto da = on(ops, a), db = on(ops, b), dc = on(ops, c);
  ops.gemm_at_b(g.m, g.n, g.k, g.alpha, ptr<float>(da), g.lda, ptr<float>(db), g.ldb, g.beta, ptr<float>(dc), g.ldc);
  return back<float>(ops, dc, c.size());
}

const std::vector<GemmCase> kGemmCases = {
    {1, 1, 1, 1, 1, 1, 1.0f, 0.0f},      {37, 53, 29, 40, 61, 55, -1.0f, 1.0f}, {64, 64, 16, 64, 64, 64, 0.5f, 0.25f},
    {130, 67, 200, 130, 67, 70, 2.0f, 0.0f}, {5, 300, 3, 9, 301, 300, -1.0f, 1.0f}};

struct SweepData {
  int64_t in, out, width;
  int bits;
  bool sym, mse;
  std::vector<float> wt, u;
};

// gptq_sweep with the given U, as gptq_quantize_on runs it; returns codes,
// scales and zeros ([groups, out]), and the per-row loss.
struct SweepResult {
  std::vector<uint8_t> codes;
  std::vector<float> scale, zero;
  std::vector<double> loss;
};

SweepResult run_sweep(GptqOps& ops, const SweepData& d) {
  const int64_t groups = d.in / d.width;
  GptqSweepBuffers buffers = alloc_gptq_sweep(ops, d.in, d.out, groups);
  GptqSweep& s = buffers.view;
  auto u = on(ops, d.u);
  std::vector<int32_t> column_group(size_t(d.in));
  for (int64_t i = 0; i < d.in; ++i) column_group[i] = int32_t(i / d.width);
  ops.to_device(s.wt, d.wt.data(), d.wt.size() * sizeof(float));
  ops.to_device(buffers.column_group.get(), column_group.data(), column_group.size() * sizeof(int32_t));
  s.u = ptr<float>(u);
  s.width = d.width;
  s.bits = d.bits;
  s.sym = d.sym;
  s.mse = d.mse;
  gptq_sweep(ops, s);
  return {back<uint8_t>(ops, buffers.codes, size_t(d.in * d.out)), back<float>(ops, buffers.scale, size_t(groups * d.out)),
          back<float>(ops, buffers.zero, size_t(groups * d.out)), back<double>(ops, buffers.loss, size_t(d.out))};
}

// U of H + damp I on `ops`; empty when the ops report it not positive definite.
std::vector<float> run_factor(GptqOps& ops, const std::vector<float>& h, int64_t n, double damp) {
  auto dh = on(ops, h), work = ops.alloc(size_t(2 * n * n) * 8), u = ops.alloc(size_t(n * n) * 4);
  if (!ops.inverse_cholesky_upper(ptr<float>(dh), n, damp, ptr<double>(work), ptr<float>(u))) return {};
  return back<float>(ops, u, size_t(n * n));
}

// The sweeps the tests run: odd sizes; groups inside blocks (32, 96: block 96), groups wider than a block (144:
// block 72, each group starts a block), one group per row (in = 200: block 128, the grid at column 0 over all 200).
std::vector<SweepData> sweep_cases(std::mt19937& rng, bool identity_u) {
  std::vector<SweepData> cases;
  const struct {
    int64_t in, out, width;
    int bits;
    bool sym, mse;
  } shapes[] = {{288, 37, 96, 4, false, false}, {288, 29, 144, 3, true, false}, {200, 45, 200, 4, false, false},
                {160, 70, 32, 4, true, true},  {96, 9, 32, 8, false, false},  {64, 66, 64, 2, false, false}};
  for (const auto& s : shapes) {
    SweepData d{s.in, s.out, s.width, s.bits, s.sym, s.mse, random_vec(size_t(s.in * s.out), rng, 0.1f), {}};
    if (identity_u) {
      d.u.assign(size_t(s.in * s.in), 0.0f);
      for (int64_t i = 0; i < s.in; ++i) d.u[i * s.in + i] = 1.0f;
    } else {
      d.u = run_factor(*cuda_gptq_host_emulation(), spd_matrix(s.in, rng), s.in, 0.01);
    }
    cases.push_back(std::move(d));
  }
  return cases;
}

}  // namespace

TEST_CASE("gptq_device_block: groups inside a block or starting one, at most 128 columns", "[cuda-host]") {
  CHECK(gptq_device_block(32, 4096) == 128);
  CHECK(gptq_device_block(96, 288) == 96);
  CHECK(gptq_device_block(144, 288) == 72);
  CHECK(gptq_device_block(256, 4096) == 128);
  CHECK(gptq_device_block(4096, 4096) == 128);
  CHECK(gptq_device_block(67, 67) == 67);
  for (int64_t width : {1, 7, 32, 100, 128, 129, 250, 384, 1000})
    for (int64_t in : {width * 3, width * 8}) {
      const int64_t b = gptq_device_block(width, in);
      INFO("width " << width << " in " << in << " block " << b);
      CHECK(b >= 1);
      CHECK(b <= kGptqDeviceBlock);
      CHECK((b % width == 0 || width % b == 0));
    }
}

TEST_CASE("gptq ops, host emulation: gemm_at_b equals the double-precision product within fp32 summation error",
          "[cuda-host]") {
  std::mt19937 rng(11);
  for (const GemmCase& g : kGemmCases) {
    const std::vector<float> a = random_vec(size_t(g.k * g.lda), rng), b = random_vec(size_t(g.k * g.ldb), rng),
                             c = random_vec(size_t(g.m * g.ldc), rng);
    const std::vector<float> got = run_gemm(*cuda_gptq_host_emulation(), g, a, b, c);
    for (int64_t i = 0; i < g.m; ++i)
      for (int64_t j = 0; j < g.ldc; ++j) {
        INFO("m " << g.m << " n " << g.n << " k " << g.k << ", element (" << i << ", " << j << ")");
        if (j >= g.n) {  // past n: untouched
          REQUIRE(std::memcmp(&got[i * g.ldc + j], &c[i * g.ldc + j], 4) == 0);
          continue;
        }
        double exact = 0, abs_sum = 0;
        for (int64_t t = 0; t < g.k; ++t) {
          exact += double(a[t * g.lda + i]) * b[t * g.ldb + j];
          abs_sum += std::fabs(double(a[t * g.lda + i]) * b[t * g.ldb + j]);
        }
        const double want = double(g.beta) * c[i * g.ldc + j] + double(g.alpha) * exact;
        // k FMAs each round once (k u Σ|ab|), then alpha · acc and beta · c round once each and their sum once.
        const double tol = (double(g.k) + 2) * kU * std::fabs(g.alpha) * abs_sum +
                           2 * kU * std::fabs(g.beta * c[i * g.ldc + j]) + kU * std::fabs(want);
        REQUIRE(std::fabs(double(got[i * g.ldc + j]) - want) <= tol);
      }
  }
}

TEST_CASE("gptq ops, host emulation: Uᵀ U (H + λI) = I, U upper, and an indefinite H is reported", "[cuda-host]") {
  std::mt19937 rng(12);
  for (int64_t n : {1, 2, 17, 96}) {
    const std::vector<float> h = spd_matrix(n, rng);
    const double damp = 0.01;
    const std::vector<float> u = run_factor(*cuda_gptq_host_emulation(), h, n, damp);
    REQUIRE(u.size() == size_t(n * n));
    // Uᵀ U (H + λI) in double from the fp32 U: U's elements carry one fp32 rounding each (u relative), so the
    // product is I to within ~2 n u κ (κ ≲ 2e2 here, n ≤ 96: 2e-3); the double factorisation adds nothing visible.
    double worst = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        if (i > j) REQUIRE(u[i * n + j] == 0.0f);
        double p = 0;
        for (int64_t k = 0; k < n; ++k) {
          double uu = 0;  // (Uᵀ U)[i][k]
          for (int64_t r = 0; r <= std::min(i, k); ++r) uu += double(u[r * n + i]) * u[r * n + k];
          p += uu * (double(h[k * n + j]) + (k == j ? damp : 0.0));
        }
        worst = std::max(worst, std::fabs(p - (i == j ? 1.0 : 0.0)));
      }
    INFO("n " << n << ": max |Uᵀ U (H + λI) - I| = " << worst);
    CHECK(worst <= 2 * double(n) * kU * 2e2);
    for (int64_t i = 0; i < n; ++i) CHECK(u[i * n + i] > 0);
  }
  // Eigenvalues 3 and -1 (and a zero pivot): not positive definite with no damping, positive definite with 2.
  const std::vector<float> indefinite = {1, 2, 2, 1};
  CHECK(run_factor(*cuda_gptq_host_emulation(), indefinite, 2, 0.0).empty());
  CHECK(run_factor(*cuda_gptq_host_emulation(), {0, 0, 0, 1}, 2, 0.0).empty());
  CHECK_FALSE(run_factor(*cuda_gptq_host_emulation(), indefinite, 2, 2.0).empty());
}

TEST_CASE("gptq ops, host emulation: a sweep with U = I rounds every group on its own grid (RTN)", "[cuda-host]") {
  std::mt19937 rng(13);
  for (const SweepData& d : sweep_cases(rng, /*identity_u=*/true)) {
    const SweepResult r = run_sweep(*cuda_gptq_host_emulation(), d);
    double loss = 0;
    for (int64_t row = 0; row < d.out; ++row)
      for (int64_t g = 0; g < d.in / d.width; ++g) {
        const int64_t c0 = g * d.width;
        const GridParams p = grid_math::find_grid([&](int64_t k) { return d.wt[(c0 + k) * d.out + row]; }, d.width,
                                                  d.bits, d.sym, d.mse);
        INFO("in " << d.in << " width " << d.width << " bits " << d.bits << " row " << row << " group " << g);
        REQUIRE(r.scale[g * d.out + row] == p.scale);
        REQUIRE(r.zero[g * d.out + row] == p.zero);
        for (int64_t c = c0; c < c0 + d.width; ++c) {
          const float x = d.wt[c * d.out + row];
          const int q = grid_math::quantize_code(x, p, d.bits);
          REQUIRE(int(r.codes[c * d.out + row]) == q);
          const double e = double(x) - grid_math::dequantize_code(q, p);
          loss += e * e / 2;
        }
      }
    double got = 0;
    for (double l : r.loss) got += l;
    // Σ (w - q)² / 2 with U_ii = 1: the same squares summed in another order (relative 1e-12 covers it).
    CHECK(got == Approx(loss).epsilon(1e-12));
  }
}

TEST_CASE("without a device the GPTQ ops say why", "[cuda-host]") {
  if (cu::device_count() > 0) {
    SUCCEED("a CUDA device is present: the [cuda] cases test the ops");
    return;
  }
  CHECK_THROWS_AS(cuda_gptq_ops(), cu::Error);
  CHECK_THROWS_WITH(cuda_gptq_ops(), Catch::Contains(cu::unavailable_reason()));
}

TEST_CASE("cuda gemm_at_b equals its host emulation bit for bit", "[.cuda]") {
  std::mt19937 rng(21);
  const auto device = cuda_gptq_ops();
  for (const GemmCase& g : kGemmCases) {
    const std::vector<float> a = random_vec(size_t(g.k * g.lda), rng), b = random_vec(size_t(g.k * g.ldb), rng),
                             c = random_vec(size_t(g.m * g.ldc), rng);
    const std::vector<float> want = run_gemm(*cuda_gptq_host_emulation(), g, a, b, c), got = run_gemm(*device, g, a, b, c);
    INFO("m " << g.m << " n " << g.n << " k " << g.k);
    CHECK(got == want);
  }
}

TEST_CASE("cuda inverse_cholesky_upper equals its host emulation bit for bit", "[.cuda]") {
  std::mt19937 rng(22);
  const auto device = cuda_gptq_ops();
  for (int64_t n : {1, 17, 96, 300}) {
    const std::vector<float> h = spd_matrix(n, rng);
    INFO("n " << n);
    CHECK(run_factor(*device, h, n, 0.01) == run_factor(*cuda_gptq_host_emulation(), h, n, 0.01));
  }
  CHECK(run_factor(*device, {1, 2, 2, 1}, 2, 0.0).empty());
}

TEST_CASE("cuda GPTQ sweep (blocks and lazy updates) equals its host emulation bit for bit", "[.cuda]") {
  std::mt19937 rng(23);
  const auto device = cuda_gptq_ops();
  for (bool identity : {true, false})
    for (const SweepData& d : sweep_cases(rng, identity)) {
      const SweepResult want = run_sweep(*cuda_gptq_host_emulation(), d), got = run_sweep(*device, d);
      INFO("in " << d.in << " out " << d.out << " width " << d.width << " bits " << d.bits << " mse " << d.mse
                 << " U = I " << identity);
      // The clip search (mse) sums pow(|d|, 2.4): CUDA's pow may differ from the C library's in the last bit, which
      // can only swap two trial grids whose errors tie to an ulp; none is expected on these data.
      CHECK(got.codes == want.codes);
      CHECK(got.scale == want.scale);
      CHECK(got.zero == want.zero);
      CHECK(got.loss == want.loss);
    }
}
