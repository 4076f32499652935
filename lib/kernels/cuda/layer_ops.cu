// CUDA kernels of layer_ops_cuda.h.
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/layer_ops_common.h"
#include "kernels/cuda/layer_ops_cuda.h"

namespace ptq::kernels {

// layer_ops_ref.cpp: the references' argument checks.
void check_norm_args(const float* x, int64_t m, int64_t d, const float* gamma, const float* y, const char* who);
void check_rope_args(const float* x, int64_t m, int64_t heads, int64_t head_dim, const int64_t* positions,
                     const char* who);

namespace cuda {

namespace {

constexpr int kElementThreads = 256;

void check_grid(int64_t blocks, const char* who) {
  if (blocks > int64_t(0x7fffffff)) throw std::invalid_argument(std::string(who) + ": too many blocks for one launch");
}

// Blocks of kElementThreads for n elements (one thread each).
unsigned element_blocks(int64_t n, const char* who) {
  const int64_t blocks = (n + kElementThreads - 1) / kElementThreads;
  check_grid(blocks, who);
  return unsigned(blocks);
}

// The sum of every thread's v over the block (kNormThreads, a power of two); every thread gets it.
__device__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = kNormThreads / 2; s > 0; s /= 2) {
    if (int(threadIdx.x) < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();  // shared may be reused at once
  return total;
}

__global__ void norm_kernel(const float* x, int64_t d, const float* gamma, const float* beta, float eps,
                            bool centre, NormSplit split, float* y) {
  __shared__ double shared[kNormThreads];
  const int lane = threadIdx.x;
  const float* xr = x + int64_t(blockIdx.x) * d;
  const double mean = centre ? block_sum(norm_partial(xr, d, 0.0, false, lane, kNormThreads), shared) / double(d) : 0.0;
  const double sum_sq = block_sum(norm_partial(xr, d, mean, true, lane, kNormThreads), shared);
  const int64_t width = split.index != nullptr ? split.width : d;
  norm_write(xr, d, mean, norm_scale(sum_sq, d, eps), gamma, beta, split, lane, kNormThreads,
             y + int64_t(blockIdx.x) * width);
}

__global__ void rope_kernel(float* x, int64_t m, int64_t heads, int64_t head_dim, const int64_t* positions,
                            double theta) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, half = head_dim / 2;
  if (e >= m * heads * half) return;
  const int64_t row = e / half, t = row / heads;  // row: (token, head)
  rope_pair(x + row * head_dim, e % half, head_dim, positions[t], theta);
}

__global__ void swiglu_kernel(const float* gate, const float* up, int64_t count, float* out) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < count) out[e] = swiglu_one(gate[e], up[e]);
}

__global__ void add_kernel(float* y, const float* x, int64_t count) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < count) y[e] += x[e];
}

__global__ void kv_append_kernel(AttentionDims a, const float* k_new, const float* v_new, int64_t m, int64_t past,
                                 uint16_t* k_cache, uint16_t* v_cache) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < m * a.kv_heads * a.head_dim) kv_append_one(a, k_new, v_new, past, e, k_cache, v_cache);
}

// Scores of the chunk's n keys from c0 on into p: warp w takes keys w, w + kAttnWarps, ...
__device__ void score_chunk(const AttentionDims& a, const float* q, const uint16_t* k, int64_t c0, int n, float scale,
                            float* p) {
  const int lane = threadIdx.x % kWarp;
  for (int j = threadIdx.x / kWarp; j < n; j += kAttnWarps) {
    float s = score_partial(q, k + (c0 + j) * a.head_dim, a.head_dim, lane, kWarp);
    for (int o = kWarp / 2; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) p[j] = s * scale;
  }
}

__global__ void attention_kernel(AttentionDims a, const float* q, int64_t past, const uint16_t* k_cache,
                                 const uint16_t* v_cache, float* out) {
  __shared__ float qs[kAttnMaxHeadDim];
  __shared__ float p[kAttnChunk];
  const int64_t t = blockIdx.x / a.heads, h = blockIdx.x % a.heads, hd = a.head_dim;
  const int tid = threadIdx.x;
  for (int64_t i = tid; i < hd; i += kAttnThreads) qs[i] = q[(t * a.heads + h) * hd + i];
  __syncthreads();
  const int64_t pos = past + t, kv = kv_head_of(a, h) * a.capacity * hd;
  const float scale = attention_scale(hd);
  SoftmaxState st;
  float acc[kAttnDimsPerThread] = {};
  for (int64_t c0 = first_key(a, pos); c0 <= pos; c0 += kAttnChunk) {
    const int n = int(pos + 1 - c0 < kAttnChunk ? pos + 1 - c0 : kAttnChunk);
    score_chunk(a, qs, k_cache + kv, c0, n, scale, p);
    __syncthreads();
    const float corr = softmax_rescale(st, p, n);
    __syncthreads();  // every thread has read the scores
    for (int j = tid; j < n; j += kAttnThreads) p[j] = softmax_weight(p[j], st);
    __syncthreads();
    softmax_add(st, corr, p, n);
    for (int r = 0; r < kAttnDimsPerThread && tid + r * kAttnThreads < hd; ++r)
      acc[r] = value_accumulate(acc[r], corr, p, v_cache + kv + c0 * hd, hd, n, tid + r * kAttnThreads);
    __syncthreads();  // p is rewritten by the next chunk
  }
  for (int r = 0; r < kAttnDimsPerThread && tid + r * kAttnThreads < hd; ++r)
    out[(t * a.heads + h) * hd + tid + r * kAttnThreads] = acc[r] / st.sum;
}

constexpr int kHadamardThreads = 256;

__global__ void hadamard_kernel(const float* signs, const float* r, int64_t p, int64_t m, float scale, float* x) {
  extern __shared__ float z[];
  const int64_t n = p * m;
  const int lane = threadIdx.x;
  float* xr = x + int64_t(blockIdx.x) * n;
  hadamard_load(xr, signs, p, n, lane, kHadamardThreads, z);
  for (int64_t h = 1; h < p; h *= 2) {
    __syncthreads();
    hadamard_stage(z, p, n, h, lane, kHadamardThreads);
  }
  __syncthreads();
  hadamard_scale(z, n, scale, lane, kHadamardThreads);
  __syncthreads();
  hadamard_mix(z, r, p, m, lane, kHadamardThreads, xr);
}

// RMSNorm (centre false) or LayerNorm (centre true): one block per row.
void launch_norm(const float* x, int64_t m, int64_t d, const float* gamma, const float* beta, float eps, bool centre,
                 const NormSplit& split, float* y, const Stream* stream, const char* who) {
  check_norm_args(x, m, d, gamma, y, who);
  if (split.index != nullptr && split.width <= 0)
    throw std::invalid_argument(std::string(who) + ": a channel split of no columns");
  check_grid(m, who);
  if (m == 0) return;
  norm_kernel<<<unsigned(m), kNormThreads, 0, stream_of(stream)>>>(x, d, gamma, beta, eps, centre, split, y);
  check_launch(who);
}

}  // namespace

void rms_norm(const float* x, int64_t m, int64_t d, const float* gamma, float eps, float* y, const float* beta,
              const NormSplit& split, const Stream* stream) {
  launch_norm(x, m, d, gamma, beta, eps, false, split, y, stream, "cuda::rms_norm");
}

void layer_norm(const float* x, int64_t m, int64_t d, const float* gamma, const float* beta, float eps, float* y,
                const Stream* stream) {
  launch_norm(x, m, d, gamma, beta, eps, true, NormSplit{}, y, stream, "cuda::layer_norm");
}

DeviceHadamard upload_hadamard(const HadamardFactors& f) {
  check_hadamard_factors(f);
  std::vector<float> r(f.r.size());
  for (size_t i = 0; i < r.size(); ++i) r[i] = static_cast<float>(f.r[i]);  // hadamard.cpp mixes with float(R)
  DeviceHadamard d;
  d.signs = to_device(f.signs.data(), f.signs.size());
  d.r = to_device(r.data(), r.size());
  d.p = f.p;
  d.m = f.m;
  d.scale = 1.0f / std::sqrt(static_cast<float>(f.p));
  return d;
}

void hadamard_rotate(const DeviceHadamard& f, float* x, int64_t rows, const Stream* stream) {
  const char* who = "cuda::hadamard_rotate";
  if (rows < 0 || (rows > 0 && x == nullptr)) throw std::invalid_argument(std::string(who) + ": bad rows or input");
  check_grid(rows, who);
  if (rows == 0) return;
  const size_t bytes = size_t(f.n()) * sizeof(float);
  int device = 0, optin = 0;
  check(cudaGetDevice(&device), who);
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), who);
  if (bytes > size_t(optin))
    throw std::invalid_argument(std::string(who) + ": a row of " + std::to_string(f.n()) + " floats exceeds the " +
                                std::to_string(optin) + " bytes of shared memory a block may have");
  if (bytes > 48 * 1024)
    check(cudaFuncSetAttribute(hadamard_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)), who);
  hadamard_kernel<<<unsigned(rows), kHadamardThreads, bytes, stream_of(stream)>>>(f.signs.as<float>(), f.r.as<float>(),
                                                                                  f.p, f.m, f.scale, x);
  check_launch(who);
}

void rope(float* x, int64_t m, int64_t heads, int64_t head_dim, const int64_t* positions, double theta,
          const Stream* stream) {
  check_rope_args(x, m, heads, head_dim, positions, "cuda::rope");
  const int64_t n = m * heads * (head_dim / 2);
  const unsigned blocks = element_blocks(n, "cuda::rope");
  if (n == 0) return;
  rope_kernel<<<blocks, kElementThreads, 0, stream_of(stream)>>>(x, m, heads, head_dim, positions, theta);
  check_launch("rope");
}

void swiglu(const float* gate, const float* up, int64_t count, float* out, const Stream* stream) {
  if (count < 0) throw std::invalid_argument("cuda::swiglu: negative count");
  const unsigned blocks = element_blocks(count, "cuda::swiglu");
  if (count == 0) return;
  swiglu_kernel<<<blocks, kElementThreads, 0, stream_of(stream)>>>(gate, up, count, out);
  check_launch("swiglu");
}

void add(float* y, const float* x, int64_t count, const Stream* stream) {
  if (count < 0) throw std::invalid_argument("cuda::add: negative count");
  const unsigned blocks = element_blocks(count, "cuda::add");
  if (count == 0) return;
  add_kernel<<<blocks, kElementThreads, 0, stream_of(stream)>>>(y, x, count);
  check_launch("add");
}

void kv_append(const AttentionDims& a, const float* k_new, const float* v_new, int64_t m, int64_t past,
               uint16_t* k_cache, uint16_t* v_cache, const Stream* stream) {
  check_attention_dims(a, m, past, "cuda::kv_append");
  const int64_t n = m * a.kv_heads * a.head_dim;
  const unsigned blocks = element_blocks(n, "cuda::kv_append");
  if (n == 0) return;
  kv_append_kernel<<<blocks, kElementThreads, 0, stream_of(stream)>>>(a, k_new, v_new, m, past, k_cache, v_cache);
  check_launch("kv_append");
}

void attention(const AttentionDims& a, const float* q, int64_t m, int64_t past, const uint16_t* k_cache,
               const uint16_t* v_cache, float* out, const Stream* stream) {
  check_attention_dims(a, m, past, "cuda::attention");
  if (a.head_dim > kAttnMaxHeadDim)
    throw std::invalid_argument("cuda::attention: head_dim " + std::to_string(a.head_dim) + " is above " +
                                std::to_string(kAttnMaxHeadDim));
  check_grid(m * a.heads, "cuda::attention");
  if (m == 0) return;
  attention_kernel<<<unsigned(m * a.heads), kAttnThreads, 0, stream_of(stream)>>>(a, q, past, k_cache, v_cache, out);
  check_launch("attention");
}

}  // namespace cuda
}  // namespace ptq::kernels
