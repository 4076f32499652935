// backend.h on a CUDA device: device memory (cuda::Buffer) and the kernels of linear_cuda.h / layer_ops_cuda.h. Plain
// C++ over the cuda:: API, so it compiles in every build; without CUDA, cuda_backend() throws saying why.
#include "kernels/backend.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/int_linear_cuda.h"
#include "kernels/cuda/layer_ops_cuda.h"
#include "kernels/cuda/linear_cuda.h"

namespace ptq::kernels {

namespace {

class CudaWeights final : public Backend::Weights {
 public:
  explicit CudaWeights(const PackedWeights& w) : w(cuda::upload(w)) {}
  int64_t bytes() const override { return w.bytes(); }
  cuda::DeviceWeights w;
};

// Groups that are not whole dwords (a MergeQuant split's odd widths) are padded with zero weight columns
// (cuda::pad_groups_to_dwords); the codes then follow the padded column map.
class CudaActWeights final : public Backend::Weights {
 public:
  explicit CudaActWeights(const Backend::ActLinearWeights& a) : codes(a.codes), x_cols(a.w.k) {
    if (a.w.groups > 0 && a.w.k % a.w.groups == 0 && (a.w.k / a.w.groups) % 4 != 0) {
      const cuda::DwordPadded p = cuda::pad_groups_to_dwords(a.w, a.perm);
      w = cuda::upload(p.view);
      perm = cuda::to_device(p.perm.data(), p.perm.size());
    } else {
      w = cuda::upload(a.w);
      if (a.perm != nullptr) perm = cuda::to_device(a.perm, size_t(a.w.k));
    }
    if (a.bias != nullptr) bias = cuda::to_device(a.bias, size_t(a.w.n));
  }
  int64_t bytes() const override { return int64_t(w.w.bytes() + w.s.bytes()); }
  cuda::DeviceIntWeights w;  // w.k: the codes' columns (padded)
  cuda::Buffer perm, bias;
  ActCodes codes;
  int64_t x_cols;  // the input's columns
};

class CudaHadamard final : public Backend::Weights {
 public:
  explicit CudaHadamard(const HadamardFactors& f) : f(cuda::upload_hadamard(f)) {}
  int64_t bytes() const override { return int64_t(f.signs.bytes() + f.r.bytes()); }
  cuda::DeviceHadamard f;
};

// Per-thread scratch (grown, never shrunk): an activation-quantized module's codes and steps.
template <class T>
T* act_scratch(int slot, size_t count) {
  thread_local cuda::Buffer bufs[2];
  cuda::Buffer& b = bufs[slot];
  if (b.bytes() < count * sizeof(T)) b = cuda::Buffer(count * sizeof(T));
  return b.as<T>();
}

class CudaBackend final : public OnCuda<Backend> {
 public:
  CudaBackend() { nonfinite_.zero(); }
  const char* name() const override { return "cuda"; }
  std::unique_ptr<Weights> upload(const PackedWeights& w) override { return std::make_unique<CudaWeights>(w); }
  std::unique_ptr<Weights> upload(const ActLinearWeights& w) override { return std::make_unique<CudaActWeights>(w); }
  void linear(const Weights& w, const float* x, int64_t m, float* y, const float* bias) override {
    cuda::linear(static_cast<const CudaWeights&>(w).w, x, m, y, bias);
  }
  void act_linear(const Weights& weights, const float* x, int64_t m, float* y) override {
    const auto& w = static_cast<const CudaActWeights&>(weights);
    int8_t* c = act_scratch<int8_t>(0, size_t(m * w.w.k));
    float* a = act_scratch<float>(1, size_t(m));
    cuda::act_codes(w.codes, x, m, w.x_cols, w.w.k, w.perm.empty() ? nullptr : w.perm.as<int32_t>(), c, a,
                    nonfinite_.as<int>());
    cuda::int_linear(w.w, c, a, m, true, y, w.bias.empty() ? nullptr : w.bias.as<float>());
  }
  bool take_nonfinite_act_input() override {
    int flag = 0;
    cuda::synchronize();
    nonfinite_.download(&flag, sizeof(flag));
    if (flag != 0) nonfinite_.zero();
    return flag != 0;
  }
  void rms_norm(const float* x, int64_t m, int64_t d, const float* gamma, const float* beta, float eps,
                const NormSplit& split, float* y) override {
    cuda::rms_norm(x, m, d, gamma, eps, y, beta, split);
  }
  std::unique_ptr<Weights> upload(const HadamardFactors& f) override { return std::make_unique<CudaHadamard>(f); }
  void hadamard(const Weights& f, float* x, int64_t rows) override {
    cuda::hadamard_rotate(static_cast<const CudaHadamard&>(f).f, x, rows);
  }
  void rope(float* x, int64_t m, int64_t heads, int64_t head_dim, const int64_t* positions, double theta) override {
    cuda::rope(x, m, heads, head_dim, positions, theta);
  }
  void kv_append(const AttentionDims& a, const float* k_new, const float* v_new, int64_t m, int64_t past,
                 uint16_t* k_cache, uint16_t* v_cache) override {
    cuda::kv_append(a, k_new, v_new, m, past, k_cache, v_cache);
  }
  void attention(const AttentionDims& a, const float* q, int64_t m, int64_t past, const uint16_t* k_cache,
                 const uint16_t* v_cache, float* out) override {
    cuda::attention(a, q, m, past, k_cache, v_cache, out);
  }
  void swiglu(const float* gate, const float* up, int64_t count, float* out) override {
    cuda::swiglu(gate, up, count, out);
  }
  void add(float* y, const float* x, int64_t count) override { cuda::add(y, x, count); }

 private:
  cuda::Buffer nonfinite_{sizeof(int)};  // one int: act_codes' record of an input it could not code (take_nonfinite_act_input)
};

}  // namespace

std::unique_ptr<Backend> cuda_backend() {
  if (cuda::device_count() == 0) throw cuda::Error("no CUDA device: " + cuda::unavailable_reason());
  return std::make_unique<CudaBackend>();
}

}  // namespace ptq::kernels
