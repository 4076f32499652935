// backend.h's CPU reference: host memory, the packed CPU linear kernels, the scalar layer ops.
#include <vector>

#include "kernels/backend.h"
#include "kernels/linear.h"

namespace ptq::kernels {

namespace {

class CpuWeights final : public Backend::Weights {
 public:
  explicit CpuWeights(const PackedWeights& w) : w(w) {}
  int64_t bytes() const override { return w.bytes(); }
  PackedWeights w;  // a copy: codes and scales are copied, float data stays a view (kept alive by its owner)
};

// An activation-quantized module's copies: weight integers, steps, column order, bias.
class CpuActWeights final : public Backend::Weights {
 public:
  explicit CpuActWeights(const Backend::ActLinearWeights& a)
      : w(a.w.w, a.w.w + a.w.n * a.w.k), s(a.w.s, a.w.s + a.w.n * a.w.groups),
        perm(a.perm != nullptr ? std::vector<int32_t>(a.perm, a.perm + a.w.k) : std::vector<int32_t>()),
        bias(a.bias != nullptr ? std::vector<float>(a.bias, a.bias + a.w.n) : std::vector<float>()), codes(a.codes),
        view(a.w) {
    view.w = w.data();
    view.s = s.data();
  }
  int64_t bytes() const override { return int64_t(w.size() * sizeof(int16_t) + s.size() * sizeof(float)); }
  std::vector<int16_t> w;
  std::vector<float> s;
  std::vector<int32_t> perm;
  std::vector<float> bias;
  ActCodes codes;
  IntWeights view;
};

class CpuHadamard final : public Backend::Weights {
 public:
  explicit CpuHadamard(const HadamardFactors& f) : f(f) { check_hadamard_factors(f); }
  int64_t bytes() const override { return int64_t((f.signs.size() + f.r.size()) * sizeof(float)); }
  HadamardFactors f;
};

class CpuReferenceBackend final : public OnHost<Backend> {
 public:
  const char* name() const override { return "cpu-reference"; }
  std::unique_ptr<Weights> upload(const PackedWeights& w) override { return std::make_unique<CpuWeights>(w); }
  std::unique_ptr<Weights> upload(const ActLinearWeights& w) override { return std::make_unique<CpuActWeights>(w); }
  void linear(const Weights& w, const float* x, int64_t m, float* y, const float* bias) override {
    kernels::linear(static_cast<const CpuWeights&>(w).w, x, m, y, bias);
  }
  void act_linear(const Weights& weights, const float* x, int64_t m, float* y) override {
    const auto& w = static_cast<const CpuActWeights&>(weights);
    std::vector<int16_t> codes(size_t(m * w.view.k));
    std::vector<float> a(static_cast<size_t>(m));
    act_codes_ref(w.codes, x, m, w.view.k, w.view.k, w.perm.empty() ? nullptr : w.perm.data(), codes.data(), a.data());
    int_linear(w.view, IntActivations{codes.data(), a.data(), m, true}, y, w.bias.empty() ? nullptr : w.bias.data());
  }
  bool take_nonfinite_act_input() override { return false; }
  void rms_norm(const float* x, int64_t m, int64_t d, const float* gamma, const float* beta, float eps,
                const NormSplit& split, float* y) override {
    rms_norm_ref(x, m, d, gamma, eps, y, beta, split);
  }
  std::unique_ptr<Weights> upload(const HadamardFactors& f) override { return std::make_unique<CpuHadamard>(f); }
  void hadamard(const Weights& f, float* x, int64_t rows) override {
    hadamard_rotate(static_cast<const CpuHadamard&>(f).f, x, rows);
  }
  void rope(float* x, int64_t m, int64_t heads, int64_t head_dim, const int64_t* positions, double theta) override {
    rope_ref(x, m, heads, head_dim, positions, theta);
  }
  void kv_append(const AttentionDims& a, const float* k_new, const float* v_new, int64_t m, int64_t past,
                 uint16_t* k_cache, uint16_t* v_cache) override {
    kv_append_ref(a, k_new, v_new, m, past, k_cache, v_cache);
  }
  void attention(const AttentionDims& a, const float* q, int64_t m, int64_t past, const uint16_t* k_cache,
                 const uint16_t* v_cache, float* out) override {
    attention_ref(a, q, m, past, k_cache, v_cache, out);
  }
  void swiglu(const float* gate, const float* up, int64_t count, float* out) override {
    swiglu_ref(gate, up, count, out);
  }
  void add(float* y, const float* x, int64_t count) override { add_ref(y, x, count); }
};

}  // namespace

std::unique_ptr<Backend> cpu_reference_backend() { return std::make_unique<CpuReferenceBackend>(); }

}  // namespace ptq::kernels
