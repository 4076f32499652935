// CUDA kernels of linear_cuda.h.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdio>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/cublas.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/linear_common.h"
#include "kernels/cuda/linear_cuda.h"
#include "kernels/linear.h"

namespace ptq::kernels::cuda {

namespace {

constexpr int kGemvWarps = 8;  // rows per 256-thread block
constexpr int kTileN = 64, kTileM = 64, kTileK = 32, kGemmThreads = 256;
static_assert(kTileN * kTileM == kGemmThreads * 16, "4 x 4 outputs per GEMM thread");

WeightsView view_of(const DeviceWeights& w) {
  return make_view(w, w.codes.as<uint32_t>(), w.scales.as<float>(), w.offsets.empty() ? nullptr : w.offsets.as<float>(),
                   w.data.data());
}

// xp as fp32 (Kind kKindF32) or rounded to nearest fp16 / bf16 (kKindF16 / kKindBF16: cuBLAS's operand).
template <int Kind>
__global__ void gather_x_kernel(const float* x, const int32_t* perm, int64_t m, int64_t k, int64_t xw, void* xp) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= m * xw) return;
  const int64_t t = i / xw, j = i % xw;
  const float v = j < k ? x[t * k + (perm != nullptr ? perm[j] : j)] : 0.0f;
  if constexpr (Kind == kKindF32)
    static_cast<float*>(xp)[i] = v;
  else
    static_cast<uint16_t*>(xp)[i] = Kind == kKindF16 ? f32_to_fp16(v) : f32_to_bf16(v);
}

// y [m, n] = bias in every row: the C that cuBLAS's GEMM adds onto.
__global__ void broadcast_bias_kernel(const float* bias, int64_t m, int64_t n, float* y) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < m * n) y[i] = bias[i % n];
}

template <int M, int CW>
__global__ void gemv_kernel(WeightsView w, const float* xp, float* y, const float* bias) {
  const int lane = threadIdx.x % kWarp;
  const int64_t r = int64_t(blockIdx.x) * kGemvWarps + threadIdx.x / kWarp;
  if (r >= w.n) return;  // whole warps leave together
  float acc[M];
  for (int t = 0; t < M; ++t) acc[t] = 0.0f;
  gemv_lane<CW>(w, xp, M, r, lane, kWarp, acc);
  for (int t = 0; t < M; ++t) {
    float v = acc[t];
    for (int d = kWarp / 2; d > 0; d /= 2) v += __shfl_xor_sync(0xffffffffu, v, d);
    if (lane == 0) y[t * w.n + r] = v + (bias != nullptr ? bias[r] : 0.0f);
  }
}

__global__ void gemm_kernel(WeightsView w, const float* xp, int64_t m, float* y, const float* bias) {
  __shared__ float ws[kTileK][kTileN + 1];
  __shared__ float xs[kTileK][kTileM + 1];
  const int64_t r0 = int64_t(blockIdx.x) * kTileN, t0 = int64_t(blockIdx.y) * kTileM;
  const int tid = threadIdx.x, tr = tid % 16, tt = tid / 16;  // outputs rows r0 + tr + 16 a, tokens t0 + tt + 16 b
  const int64_t xw = xp_width(w);
  float acc[4][4] = {};
  for (int64_t j0 = 0; j0 < xw; j0 += kTileK) {
    for (int e = tid; e < kTileK * kTileN; e += kGemmThreads) {
      const int jj = e % kTileK, rr = e / kTileK;
      const int64_t r = r0 + rr, j = j0 + jj;
      ws[jj][rr] = r < w.n && j < xw ? weight_at(w, r, j) : 0.0f;
    }
    for (int e = tid; e < kTileK * kTileM; e += kGemmThreads) {
      const int jj = e % kTileK, ti = e / kTileK;
      const int64_t t = t0 + ti, j = j0 + jj;
      xs[jj][ti] = t < m && j < xw ? xp[t * xw + j] : 0.0f;
    }
    __syncthreads();
    for (int jj = 0; jj < kTileK; ++jj)
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) acc[a][b] += ws[jj][tr + 16 * a] * xs[jj][tt + 16 * b];
    __syncthreads();
  }
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b) {
      const int64_t r = r0 + tr + 16 * a, t = t0 + tt + 16 * b;
      if (r < w.n && t < m) y[t * w.n + r] = acc[a][b] + (bias != nullptr ? bias[r] : 0.0f);
    }
}

__device__ __forceinline__ void mma_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// linear_common.h's tensor-core GEMM.
__global__ void __launch_bounds__(kMmaThreads) hmma_kernel(WeightsView w, const float* xp, int64_t m, float* y,
                                                           const float* bias) {
  __shared__ __align__(16) uint16_t ws[kMmaBlockRows * kHmmaStride];
  __shared__ __align__(16) uint16_t xs[kMmaBlockTokens * kHmmaStride];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t rb = int64_t(blockIdx.x) * kMmaBlockRows, tb = int64_t(blockIdx.y) * kMmaBlockTokens;
  const int wr = (warp % 2) * kMmaWarpRows, wt = (warp / 2) * kMmaWarpTokens;
  const int64_t xw = xp_width(w);
  float acc[2][4][4] = {};
  HmmaFragments f;
  for (int64_t j0 = 0; j0 < xw; j0 += kHmmaTileK) {
    for (int e = threadIdx.x; e < kMmaBlockRows * kHmmaTileK; e += kMmaThreads) {
      const int row = e / kHmmaTileK, jj = e % kHmmaTileK;
      ws[row * kHmmaStride + jj] = hmma_weight(w, rb + row, j0 + jj, xw);
      xs[row * kHmmaStride + jj] = hmma_x(xp, m, xw, tb + row, j0 + jj);
    }
    __syncthreads();
    PTQ_UNROLL for (int kk = 0; kk < kHmmaTileK; kk += 16) {
      load_hmma_fragments(ws, xs, wr, wt, kk, lane, f);
      PTQ_UNROLL for (int i = 0; i < 2; ++i)
        PTQ_UNROLL for (int j = 0; j < 4; ++j) mma_f16(acc[i][j], f.a[i], f.b[j]);
    }
    __syncthreads();
  }
  store_hmma_tile(acc, w.n, m, rb + wr, tb + wt, bias, lane, y);
}

// Per-thread scratch for the gathered activations (grown, never shrunk).
void* workspace(size_t bytes) {
  thread_local Buffer buf;
  if (buf.bytes() < bytes) buf = Buffer(bytes);
  return buf.data();
}

unsigned blocks_of(int64_t total) { return unsigned((total + 255) / 256); }

// x gathered into xp [m, xp_width] in the type of out_kind (kKindF32, kKindF16 or kKindBF16).
void gather_x(const DeviceWeights& w, int out_kind, const float* x, int64_t m, int64_t xw, void* xp, cudaStream_t s) {
  const int32_t* perm = w.perm.empty() ? nullptr : w.perm.as<int32_t>();
  const unsigned blocks = blocks_of(m * xw);
  if (out_kind == kKindF16)
    gather_x_kernel<kKindF16><<<blocks, 256, 0, s>>>(x, perm, m, w.k, xw, xp);
  else if (out_kind == kKindBF16)
    gather_x_kernel<kKindBF16><<<blocks, 256, 0, s>>>(x, perm, m, w.k, xw, xp);
  else
    gather_x_kernel<kKindF32><<<blocks, 256, 0, s>>>(x, perm, m, w.k, xw, xp);
  check_launch("gather_x");
}

// ---- which kernel (linear_cuda.h's list) -----------------------------------------------------------------------

enum class Kernel { Gemv, Cublas, Hmma, Gemm };
constexpr const char* kKernelNames[] = {"gemv", "cublas", "hmma", "gemm"};
static_assert(std::size(kKernelNames) == size_t(Kernel::Gemm) + 1, "a name per kernel");

std::atomic<FloatGemm> g_float_gemm{FloatGemm::Auto};

// The kernel for w at m tokens. `fallback` receives why cuBLAS was passed over under FloatGemm::Auto (else empty).
Kernel choose_kernel(const DeviceWeights& w, int64_t m, std::string& fallback) {
  if (m <= kGemvMaxTokens) return Kernel::Gemv;
  if (!hmma_takes(view_of(w))) return Kernel::Gemm;
  const FloatGemm g = float_gemm();
  if (w.kind == WeightKind::Quant || g == FloatGemm::Own) return Kernel::Hmma;
  std::string why = cublas_unavailable();
  if (why.empty()) return Kernel::Cublas;
  if (g == FloatGemm::Cublas)
    throw Error(std::string("cuda::linear: the cuBLAS GEMM is required (FloatGemm::Cublas) for ") +
                weight_kind_name(w.kind) + " weights, but cuBLAS is unavailable: " + why);
  fallback = std::move(why);
  return Kernel::Hmma;
}

void note_fallback(const std::string& why) {
  static std::once_flag once;
  std::call_once(once, [&] {
    std::fprintf(stderr, "ptq: cuBLAS is unavailable (%s); F16/BF16 GEMMs run on ptq's own tensor-core kernel\n",
                 why.c_str());
  });
}

// linear_cuda.h's cublas kernel: x rounded to the weights' type into the workspace (rows of xp_width elements, a
// multiple of 8: 16-byte aligned rows for cuBLAS), y pre-filled with the bias where there is one.
void linear_cublas(const DeviceWeights& w, const float* x, int64_t m, float* y, const float* bias, cudaStream_t s) {
  const int64_t xw = xp_width(view_of(w));
  void* x16 = workspace(size_t(m * xw) * sizeof(uint16_t));
  gather_x(w, int(w.kind), x, m, xw, x16, s);
  if (bias != nullptr) {
    broadcast_bias_kernel<<<blocks_of(m * w.n), 256, 0, s>>>(bias, m, w.n, y);
    check_launch("broadcast_bias");
  }
  cublas_gemm_xwt(w.kind, w.data.data(), w.k, x16, xw, m, w.n, w.k, bias != nullptr, y, s);
}

}  // namespace

void set_float_gemm(FloatGemm g) { g_float_gemm.store(g); }
FloatGemm float_gemm() { return g_float_gemm.load(); }

const char* linear_kernel(const DeviceWeights& w, int64_t m) {
  std::string fallback;
  return kKernelNames[int(choose_kernel(w, m, fallback))];
}

int64_t DeviceWeights::bytes() const {
  return int64_t(codes.bytes() + scales.bytes() + offsets.bytes() + perm.bytes() + data.bytes());
}

DeviceWeights upload(const PackedWeights& w) {
  DeviceWeights d;
  d.kind = w.kind;
  d.n = w.n;
  d.k = w.k;
  d.bits = w.bits;
  d.container = w.container;
  d.kpad = w.kpad;
  d.group = w.group;
  d.groups = w.groups;
  if (w.kind == WeightKind::Quant) {
    d.codes = to_device(w.codes.data(), w.codes.size());
    d.scales = to_device(w.scales.data(), w.scales.size());
    d.offsets = to_device(w.offsets.data(), w.offsets.size());
    d.perm = to_device(w.perm.data(), w.perm.size());
  } else {
    const size_t elem = w.kind == WeightKind::F32 ? 4 : 2;
    d.data = Buffer(size_t(w.n * w.k) * elem);
    d.data.upload(w.data, d.data.bytes());
  }
  return d;
}

void linear(const DeviceWeights& w, const float* x, int64_t m, float* y, const float* bias, const Stream* stream) {
  if (w.n <= 0 || w.k <= 0) throw std::invalid_argument("cuda::linear: empty weights");
  if (m < 0) throw std::invalid_argument("cuda::linear: negative token count");
  if (m == 0) return;
  if (x == nullptr || y == nullptr) throw std::invalid_argument("cuda::linear: null input or output");
  const cudaStream_t s = stream_of(stream);
  std::string fallback;
  const Kernel kernel = choose_kernel(w, m, fallback);
  if (!fallback.empty()) note_fallback(fallback);
  if (kernel == Kernel::Cublas) return linear_cublas(w, x, m, y, bias, s);
  const WeightsView v = view_of(w);
  const int64_t xw = xp_width(v);
  float* xp = static_cast<float*>(workspace(size_t(m * xw) * sizeof(float)));
  gather_x(w, kKindF32, x, m, xw, xp, s);
  if (kernel == Kernel::Gemv) {
    const unsigned blocks = unsigned((w.n + kGemvWarps - 1) / kGemvWarps);
    with_chunk_width(v, [&](auto cw) {
      with_token_count(m, [&](auto tokens) {
        gemv_kernel<decltype(tokens)::value, decltype(cw)::value><<<blocks, kGemvWarps * kWarp, 0, s>>>(v, xp, y, bias);
      });
    });
    static_assert(kGemvMaxTokens == 4, "one gemv instance per token count");
    check_launch("gemv");
    return;
  }
  if (kernel == Kernel::Hmma) {
    const dim3 grid(unsigned((w.n + kMmaBlockRows - 1) / kMmaBlockRows),
                    unsigned((m + kMmaBlockTokens - 1) / kMmaBlockTokens));
    hmma_kernel<<<grid, kMmaThreads, 0, s>>>(v, xp, m, y, bias);
    check_launch("hmma");
    return;
  }
  const dim3 grid(unsigned((w.n + kTileN - 1) / kTileN), unsigned((m + kTileM - 1) / kTileM));
  gemm_kernel<<<grid, kGemmThreads, 0, s>>>(v, xp, m, y, bias);
  check_launch("gemm");
}

void linear_host(const DeviceWeights& w, const float* x, int64_t m, float* y, const float* bias) {
  Buffer dx = to_device(x, size_t(m * w.k)), dy(size_t(m * w.n) * sizeof(float));
  Buffer db = bias != nullptr ? to_device(bias, size_t(w.n)) : Buffer();
  linear(w, dx.as<float>(), m, dy.as<float>(), bias != nullptr ? db.as<float>() : nullptr);
  synchronize();
  dy.download(y, dy.bytes());
}

}  // namespace ptq::kernels::cuda
