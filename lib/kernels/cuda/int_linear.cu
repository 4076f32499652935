// CUDA kernels of int_linear_cuda.h.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/int_linear_common.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/int_linear_cuda.h"

namespace ptq::kernels::cuda {

bool int_linear_supports_layout(const IntWeights& w, std::string* why);  // int_linear_layout.cpp

namespace {

constexpr int kGemvWarps = 8;
constexpr int kTileN = 64, kTileM = 64, kTileD = 8, kThreads = 256;

template <int M>
__global__ void int_gemv_kernel(const uint32_t* w, const float* s, int64_t n, int64_t kd, int64_t groups,
                                const uint32_t* c, const float* a, bool per_token, float* y, const float* bias) {
  const int lane = threadIdx.x % kWarp;
  const int64_t r = int64_t(blockIdx.x) * kGemvWarps + threadIdx.x / kWarp;
  if (r >= n) return;
  const int64_t gd = kd / groups;
  double sum[M];
  for (int t = 0; t < M; ++t) sum[t] = 0.0;
  for (int64_t g = 0; g < groups; ++g)
    for (int t = 0; t < M; ++t) {
      int32_t acc = group_partial(w + r * kd, c + t * kd, g * gd, (g + 1) * gd, lane, kWarp);
      for (int d = kWarp / 2; d > 0; d /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, d);
      sum[t] = epilogue_add(sum[t], s[r * groups + g], acc);
    }
  if (lane == 0)
    for (int t = 0; t < M; ++t) y[t * n + r] = epilogue_finish(sum[t], per_token ? a[t] : a[0], bias, r);
}

__global__ void int_gemm_kernel(const uint32_t* w, const float* s, int64_t n, int64_t kd, int64_t groups,
                                const uint32_t* c, const float* a, int64_t m, bool per_token, float* y,
                                const float* bias) {
  __shared__ uint32_t ws[kTileD][kTileN + 1];
  __shared__ uint32_t cs[kTileD][kTileM + 1];
  const int64_t r0 = int64_t(blockIdx.x) * kTileN, t0 = int64_t(blockIdx.y) * kTileM;
  const int tid = threadIdx.x, tr = tid % 16, tt = tid / 16;
  const int64_t gd = kd / groups;
  int32_t acc[4][4] = {};
  double sum[4][4] = {};
  int64_t g = 0;
  for (int64_t d0 = 0; d0 < kd; d0 += kTileD) {
    for (int e = tid; e < kTileD * kTileN; e += kThreads) {
      const int dd = e % kTileD, rr = e / kTileD;
      const int64_t r = r0 + rr, d = d0 + dd;
      ws[dd][rr] = r < n && d < kd ? w[r * kd + d] : 0u;
    }
    for (int e = tid; e < kTileD * kTileM; e += kThreads) {
      const int dd = e % kTileD, ti = e / kTileD;
      const int64_t t = t0 + ti, d = d0 + dd;
      cs[dd][ti] = t < m && d < kd ? c[t * kd + d] : 0u;
    }
    __syncthreads();
    for (int dd = 0; dd < kTileD && d0 + dd < kd; ++dd) {
      if ((d0 + dd) % gd == 0 && d0 + dd > 0) {  // a group ends: fold its exact sums into the double sums
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) {
            const int64_t r = r0 + tr + 16 * i;
            sum[i][j] = epilogue_add(sum[i][j], r < n ? s[r * groups + g] : 0.0f, acc[i][j]);
            acc[i][j] = 0;
          }
        ++g;
      }
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = dot4(ws[dd][tr + 16 * i], cs[dd][tt + 16 * j], acc[i][j]);
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const int64_t r = r0 + tr + 16 * i, t = t0 + tt + 16 * j;
      if (r >= n || t >= m) continue;
      const double total = epilogue_add(sum[i][j], s[r * groups + g], acc[i][j]);
      y[t * n + r] = epilogue_finish(total, per_token ? a[t] : a[0], bias, r);
    }
}

__device__ __forceinline__ void mma_s8(int32_t (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// int_linear_common.h's tensor-core GEMM: each warp 32 rows x 32 tokens, fragments loaded from global memory (the
// L1 serves the block's reuse), every group's int32 sums exact, the double epilogue as the reference's.
__global__ void __launch_bounds__(kMmaThreads) int_mma_kernel(const uint32_t* w, const float* s, int64_t n, int64_t kd,
                                                              int64_t groups, const uint32_t* c, const float* a,
                                                              int64_t m, bool per_token, float* y, const float* bias) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t r0 = int64_t(blockIdx.x) * kMmaBlockRows + (warp % 2) * kMmaWarpRows;
  const int64_t t0 = int64_t(blockIdx.y) * kMmaBlockTokens + (warp / 2) * kMmaWarpTokens;
  const int64_t gd = kd / groups;
  int32_t acc[2][4][4] = {};
  double sum[2][4][4] = {};
  MmaFragments f;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t d0 = g * gd; d0 < (g + 1) * gd; d0 += 8) {
      load_mma_fragments(w, n, c, m, kd, r0, t0, 4 * d0, lane, f);
      PTQ_UNROLL for (int i = 0; i < 2; ++i)
        PTQ_UNROLL for (int j = 0; j < 4; ++j) mma_s8(acc[i][j], f.a[i], f.b[j]);
    }
    fold_mma_group(acc, sum, s, n, groups, g, r0, lane);
  }
  store_mma_tile(sum, n, m, r0, t0, a, per_token, bias, lane, y);
}

__global__ void act_codes_kernel(ActCodes p, const float* x, int64_t x_cols, int64_t k, const int32_t* perm, int8_t* c,
                                 float* a, int* nonfinite) {
  __shared__ float smn[kActCodeThreads], smx[kActCodeThreads], grid[3];
  const int tid = threadIdx.x;
  const int64_t t = blockIdx.x;
  const float* xr = x + t * x_cols;
  if (p.per_token) {
    act_row_range(xr, x_cols, tid, kActCodeThreads, smn[tid], smx[tid]);
    __syncthreads();
    for (int s = kActCodeThreads / 2; s > 0; s /= 2) {
      if (tid < s) {
        smn[tid] = fminf(smn[tid], smn[tid + s]);
        smx[tid] = fmaxf(smx[tid], smx[tid + s]);
      }
      __syncthreads();
    }
  }
  if (tid == 0) {
    const grid_math::ActGrid g = p.per_token ? grid_math::act_grid(smn[0], smx[0], p.sym, p.clip, p.qmax) : p.grid;
    grid[0] = g.scale, grid[1] = g.inv, grid[2] = g.zero;
    a[t] = g.scale;
    if (!act_code_valid(g.scale) && nonfinite != nullptr) *nonfinite = 1;
  }
  __syncthreads();
  grid_math::ActGrid g;
  g.scale = grid[0], g.inv = grid[1], g.zero = grid[2];
  for (int64_t j = tid; j < k; j += kActCodeThreads) c[t * k + j] = act_code_byte(p, g, xr, perm, j, nonfinite);
}

}  // namespace

void act_codes(const ActCodes& p, const float* x, int64_t m, int64_t x_cols, int64_t k, const int32_t* perm,
               int8_t* c, float* a, int* nonfinite, const Stream* stream) {
  if (m < 0 || k <= 0 || x_cols <= 0 || (perm == nullptr && k != x_cols))
    throw std::invalid_argument("cuda::act_codes: bad shape");
  if (m == 0) return;
  if (m > int64_t(0x7fffffff)) throw std::invalid_argument("cuda::act_codes: too many tokens for one launch");
  act_codes_kernel<<<unsigned(m), kActCodeThreads, 0, stream_of(stream)>>>(p, x, x_cols, k, perm, c, a, nonfinite);
  check_launch("act_codes");
}

DeviceIntWeights upload(const IntWeights& w) {
  std::string why;
  if (!int_linear_supports_layout(w, &why)) throw std::invalid_argument("cuda::int_linear: " + why);
  std::vector<int8_t> bytes(size_t(w.n * w.k));
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = int8_t(w.w[i]);
  DeviceIntWeights d;
  d.n = w.n;
  d.k = w.k;
  d.groups = w.groups;
  d.w = to_device(bytes.data(), bytes.size());
  d.s = to_device(w.s, size_t(w.n * w.groups));
  return d;
}

void int_linear(const DeviceIntWeights& w, const int8_t* c, const float* a, int64_t m, bool per_token, float* y,
                const float* bias, const Stream* stream) {
  if (m < 0) throw std::invalid_argument("cuda::int_linear: negative token count");
  if (m == 0) return;
  if (c == nullptr || a == nullptr || y == nullptr) throw std::invalid_argument("cuda::int_linear: null argument");
  const cudaStream_t st = stream_of(stream);
  const int64_t kd = w.k / 4;
  const auto* wd = w.w.as<uint32_t>();
  const auto* cd = reinterpret_cast<const uint32_t*>(c);
  const float* sd = w.s.as<float>();
  if (m <= 4) {
    const unsigned blocks = unsigned((w.n + kGemvWarps - 1) / kGemvWarps), threads = kGemvWarps * kWarp;
    with_token_count(m, [&](auto tokens) {
      int_gemv_kernel<decltype(tokens)::value><<<blocks, threads, 0, st>>>(wd, sd, w.n, kd, w.groups, cd, a, per_token,
                                                                          y, bias);
    });
    check_launch("int_gemv");
    return;
  }
  if (int_mma_supports(kd, w.groups)) {
    const dim3 grid(unsigned((w.n + kMmaBlockRows - 1) / kMmaBlockRows),
                    unsigned((m + kMmaBlockTokens - 1) / kMmaBlockTokens));
    int_mma_kernel<<<grid, kMmaThreads, 0, st>>>(wd, sd, w.n, kd, w.groups, cd, a, m, per_token, y, bias);
    check_launch("int_mma");
    return;
  }
  const dim3 grid(unsigned((w.n + kTileN - 1) / kTileN), unsigned((m + kTileM - 1) / kTileM));
  int_gemm_kernel<<<grid, kThreads, 0, st>>>(wd, sd, w.n, kd, w.groups, cd, a, m, per_token, y, bias);
  check_launch("int_gemm");
}

void int_linear_host(const DeviceIntWeights& w, const IntActivations& x, float* y, const float* bias) {
  std::vector<int8_t> codes(size_t(x.m * w.k));
  for (size_t i = 0; i < codes.size(); ++i) {
    if (x.c[i] < -128 || x.c[i] > 127)
      throw std::invalid_argument("cuda::int_linear: activation code " + std::to_string(x.c[i]) + " at [" +
                                  std::to_string(int64_t(i) / w.k) + ", " + std::to_string(int64_t(i) % w.k) +
                                  "] is outside [-128, 127]");
    codes[i] = int8_t(x.c[i]);
  }
  Buffer dc = to_device(codes.data(), codes.size()), da = to_device(x.a, size_t(x.per_token ? x.m : 1));
  Buffer dy(size_t(x.m * w.n) * sizeof(float));
  Buffer db = bias != nullptr ? to_device(bias, size_t(w.n)) : Buffer();
  int_linear(w, dc.as<int8_t>(), da.as<float>(), x.m, x.per_token, dy.as<float>(),
             bias != nullptr ? db.as<float>() : nullptr);
  synchronize();
  dy.download(y, dy.bytes());
}

}  // namespace ptq::kernels::cuda
