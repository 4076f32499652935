#include "quant/act_linear.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <ATen/ATen.h>

#include "core/error.h"
#include "kernels/cuda/int_linear_cuda.h"
#include "kernels/int_linear.h"

namespace ptq {

namespace {

// |acc| bound an int32 accumulator holds.
constexpr double kInt32Max = 2147483647.0;

void check_groups(const QuantizedWeight& qw, int64_t& groups, int64_t& width) {
  const int64_t K = qw.q.size(1);
  groups = qw.scales.size(1);
  if (groups <= 0 || K % groups != 0)
    fail_input("activation-quantized linear: {} groups do not divide {} input columns", groups, K);
  width = K / groups;
}

}  // namespace

ActQuantLinear::ActQuantLinear(const QuantizedWeight& qw, const at::Tensor& bias, const ActQuantSpec& act,
                               ActQuantParams params)
    : act_(act), params_(std::move(params)), bias_(bias) {
  check_groups(qw, groups_, width_);
  const int64_t K = qw.q.size(1);
  at::Tensor g_idx = qw.g_idx.to(at::kLong);
  const at::Tensor natural = at::div(at::arange(K, at::kLong), width_, "floor");
  // q - zero in int16 (|.| <= 256 for any 2..8-bit grid): 2 bytes per weight of temporaries, not fp64's 8.
  at::Tensor w = qw.q.to(at::kShort) - qw.zeros.to(at::kShort).gather(1, g_idx.unsqueeze(0).expand({qw.q.size(0), K}));
  // The simulated per-channel path reads the dequantized weight; the integer path never does.
  if (act_.granularity == ActGranularity::PerChannel)
    w_hat_ = w.to(at::kDouble) * qw.scales.to(at::kDouble).gather(1, g_idx.unsqueeze(0).expand({qw.q.size(0), K}));
  if (!g_idx.equal(natural)) {
    // Stable sort by group: each group's columns become contiguous, in their original relative order.
    perm_ = std::get<1>(at::sort(g_idx, /*stable=*/true, /*dim=*/0, /*descending=*/false));
    if (!g_idx.index_select(0, perm_).equal(natural))
      fail_input("activation-quantized linear: g_idx does not give every group {} columns", width_);
    w = w.index_select(1, perm_);
  }
  w_int_ = w.contiguous();
  out_ = w_int_.size(0);
  in_ = w_int_.size(1);
  scales_ = qw.scales.to(at::kFloat).contiguous();
  if (bias_.defined()) bias_ = bias_.to(at::kFloat).contiguous();
  w_max_abs_ = kernels::int_weights_max_abs(int_weights(w_int_));
  if (w_max_abs_ > kernels::kIntLinearMaxCode)
    fail_input("activation-quantized linear: a weight integer q - zero is outside ±{}", kernels::kIntLinearMaxCode);
  // |c| <= 2^(b-1) (symmetric) or 2^b - 1 (asymmetric q - zero, zero within the grid).
  const int64_t act_max = act_.sym ? int64_t(1) << (act_.bits - 1) : (int64_t(1) << act_.bits) - 1;
  int_kernel_ = kernels::int_linear_width_fits(width_, act_max, w_max_abs_);
  // Activation codes beyond a signed byte (asymmetric 8-bit) would always fall back: no byte copy for those.
  const bool act_fits_byte = act_.sym ? act_.bits <= 8 : act_.bits <= 7;
  if (int_kernel_ && act_fits_byte && act_.granularity != ActGranularity::PerChannel &&
      kernels::int_linear8_supports(int_weights(w_int_))) {
    w8_ = std::make_shared<const kernels::IntWeights8>(kernels::pack_int_weights8(int_weights(w_int_)));
    w_int_ = at::Tensor();  // 1 byte per weight resident (half a byte for 4-bit weights) instead of 3
  }
  if (act_.is_static() && (!params_.scale.defined() || !params_.zero.defined()))
    fail_input("activation-quantized linear: {} needs static scales", act_.describe());
  if (w8_ != nullptr && act_.granularity == ActGranularity::PerTensor)
    step_ = params_.scale.to(at::kFloat).reshape({-1})[0].item<float>();
}

at::Tensor ActQuantLinear::accumulators(const QuantizedActivation& qa) const {
  at::Tensor c = qa.codes.to(at::kDouble);
  if (perm_.defined()) c = c.index_select(1, perm_);
  const int64_t T = c.size(0), N = out_;
  // [G, T, w] x [G, w, N] -> [G, T, N] -> [T, N, G]
  at::Tensor cg = c.view({T, groups_, width_}).transpose(0, 1);
  at::Tensor wg = weight_integers().to(at::kDouble).view({N, groups_, width_}).permute({1, 2, 0});
  at::Tensor acc = at::bmm(cg, wg).permute({1, 2, 0});
  if (acc.numel() > 0 && acc.abs().max().item<double>() > kInt32Max)
    fail_input("activation-quantized linear: an accumulator exceeds int32 ({:.3g})", acc.abs().max().item<double>());
  return acc;
}

namespace {

// The codes of the last input this thread rounded for byte kernels (grown, reused).
kernels::Codes8& codes_scratch() {
  thread_local kernels::Codes8 c;
  return c;
}

}  // namespace

bool ActQuantLinear::same_codes(const ActQuantLinear& o) const {
  if (!codes_from_floats() || !o.codes_from_floats()) return false;
  if (act_.granularity != o.act_.granularity || act_.qmin() != o.act_.qmin() || act_.qmax() != o.act_.qmax() ||
      in_ != o.in_ || groups_ != o.groups_)
    return false;
  return act_.granularity == ActGranularity::PerTensor ? step_ == o.step_ : act_.clip == o.act_.clip;
}

bool ActQuantLinear::make_codes(const at::Tensor& xf, kernels::Codes8& codes) const {
  // quantize_activation's grid and rounding: static per-tensor with the stored step, or per-token dynamic from each
  // row's range (w8_ is never built for per-channel modules).
  return act_.granularity == ActGranularity::PerTensor
             ? kernels::codes8_static(xf.data_ptr<float>(), xf.size(0), in_, groups_, 1.0f / step_, step_,
                                      act_.qmin(), act_.qmax(), codes)
             : kernels::codes8_dynamic(xf.data_ptr<float>(), xf.size(0), in_, groups_, act_.clip, act_.qmax(), codes);
}

at::Tensor ActQuantLinear::forward_codes(const kernels::Codes8& codes, const at::Tensor& x) const {
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape.back() = out_;
  at::Tensor y = at::empty({codes.m, out_}, at::kFloat);
  kernels::int_linear8_codes(*w8_, codes, y.data_ptr<float>(), bias_.defined() ? bias_.data_ptr<float>() : nullptr);
  return y.view(out_shape);
}

std::vector<at::Tensor> ActQuantLinear::forward_siblings(const at::Tensor& x,
                                                         const std::vector<const LinearKernel*>& siblings) const {
  std::vector<const ActQuantLinear*> mods;
  for (const LinearKernel* k : siblings) {
    const auto* a = dynamic_cast<const ActQuantLinear*>(k);
    if (a == nullptr || !same_codes(*a)) return LinearKernel::forward_siblings(x, siblings);
    mods.push_back(a);
  }
  kernels::Codes8& codes = codes_scratch();
  // A non-finite input: each forward reports it.
  if (!make_codes(x.reshape({-1, in_}).to(at::kFloat).contiguous(), codes))
    return LinearKernel::forward_siblings(x, siblings);
  std::vector<at::Tensor> out;
  for (const ActQuantLinear* m : mods) out.push_back(m->forward_codes(codes, x));
  return out;
}

at::Tensor ActQuantLinear::forward(const at::Tensor& x) const {
  const int64_t K = in_, N = out_;
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape.back() = N;
  const at::Tensor x2 = x.reshape({-1, K});
  if (codes_from_floats()) {
    // Symmetric codes made and consumed by the byte kernel in one pass. A non-finite input falls through to the path
    // below, which reports it.
    kernels::Codes8& codes = codes_scratch();
    if (make_codes(x2.to(at::kFloat).contiguous(), codes)) return forward_codes(codes, x);
  }
  const QuantizedActivation qa = quantize_activation(x2, act_, &params_);
  if (act_.granularity == ActGranularity::PerChannel) {
    at::Tensor y = at::matmul(qa.codes.to(at::kDouble) * qa.scale.to(at::kDouble), w_hat_.t()).to(at::kFloat);
    if (bias_.defined()) y = y + bias_;
    return y.view(out_shape);
  }
  if (!int_kernel_) {
    // Groups too wide for int32 in the worst case (kernels/int_linear.h): the fp64 accumulators, which refuse only
    // values that actually exceed int32.
    at::Tensor y = ((accumulators(qa) * scales_.to(at::kDouble).unsqueeze(0)).sum(-1) *
                    qa.scale.to(at::kDouble).reshape({-1, 1})).to(at::kFloat);
    if (bias_.defined()) y = y + bias_;
    return y.view(out_shape);
  }
  // Integer GEMM (kernels/int_linear.h): codes to int16 in group order, exact int32 group sums, the epilogue
  // y = fp32(a[t] · Σ_g s[n, g] · acc) + bias of the header above, in the order of act_quant_linear_ref.
  // NaN/Inf have no int16 code: refused here rather than turned into garbage integers (finite or fail).
  if (!at::isfinite(qa.codes).all().item<bool>() || !at::isfinite(qa.scale).all().item<bool>())
    fail_input("activation-quantized linear: its input holds NaN or Inf (the model's activations overflowed or its "
               "weights are damaged)");
  at::Tensor codes = qa.codes;
  if (perm_.defined()) codes = codes.index_select(1, perm_);
  codes = codes.to(at::kShort).contiguous();  // integers within ±255 (quantize_activation), checked by the kernel
  const at::Tensor a = qa.scale.to(at::kFloat).contiguous();
  const int64_t T = codes.size(0);
  at::Tensor y = at::empty({T, N}, at::kFloat);
  kernels::IntActivations xa{codes.data_ptr<int16_t>(), a.data_ptr<float>(), T,
                             act_.granularity == ActGranularity::PerToken};
  const float* bias = bias_.defined() ? bias_.data_ptr<float>() : nullptr;
  if (w8_ != nullptr && kernels::int_linear8(*w8_, xa, y.data_ptr<float>(), bias)) return y.view(out_shape);
  // int16 weights (or, should a code leave a signed byte, the byte weights widened for this call).
  const at::Tensor w_int = weight_integers();
  kernels::int_linear(int_weights(w_int), xa, y.data_ptr<float>(), bias);
  return y.view(out_shape);
}

int64_t ActQuantLinear::weight_bytes() const {
  const int64_t steps = scales_.numel() * 4;
  if (w8_ != nullptr) return int64_t(w8_->tiles.size()) + steps;
  if (w_hat_.defined()) return w_hat_.numel() * 8;
  return w_int_.numel() * 2 + steps;
}

at::Tensor ActQuantLinear::weight_integers() const {
  if (w_int_.defined()) return w_int_;
  at::Tensor w = at::empty({out_, in_}, at::TensorOptions().dtype(at::kShort));
  kernels::unpack_int_weights8(*w8_, w.data_ptr<int16_t>());
  return w;
}

std::string ActQuantLinear::device_unsupported() const {
  if (act_.granularity == ActGranularity::PerChannel) return "per-channel static activation scales (simulated in fp64)";
  if (!int_kernel_) return fmt::format("groups of {} columns, too wide for int32 sums", width_);
  if (!act_.sym && act_.bits > 7) return "asymmetric 8-bit activation codes (outside a signed byte)";
  const at::Tensor w = weight_integers();
  if (!kernels::cuda::int_linear_supports_padded(int_weights(w)))
    return fmt::format("weight integers outside a signed byte, or groups of {} columns too wide for int32 sums",
                       width_);
  return "";
}

ActQuantLinear::DeviceView ActQuantLinear::device_view() const {
  DeviceView d;
  d.w = weight_integers().contiguous();
  d.steps = scales_;
  d.bias = bias_;
  if (perm_.defined()) {
    const at::Tensor p = perm_.to(at::kInt).contiguous();
    d.perm.assign(p.data_ptr<int32_t>(), p.data_ptr<int32_t>() + p.numel());
  }
  kernels::Backend::ActLinearWeights& v = d.view;
  v.w = int_weights(d.w);
  v.perm = d.perm.empty() ? nullptr : d.perm.data();
  v.bias = d.bias.defined() ? d.bias.data_ptr<float>() : nullptr;
  kernels::ActCodes& c = v.codes;
  c.per_token = act_.granularity == ActGranularity::PerToken;
  c.sym = act_.sym;
  c.clip = act_.clip;
  c.qmin = act_.qmin();
  c.qmax = act_.qmax();
  if (!c.per_token) {
    const float scale = params_.scale.to(at::kFloat).reshape({-1})[0].item<float>();
    c.grid = {scale, 1.0f / scale, params_.zero.to(at::kFloat).reshape({-1})[0].item<float>()};
  }
  return d;
}

kernels::IntWeights ActQuantLinear::int_weights(const at::Tensor& w_int) const {
  return kernels::IntWeights{w_int.data_ptr<int16_t>(), scales_.data_ptr<float>(), out_, in_, groups_, w_max_abs_};
}

at::Tensor act_quant_linear_ref(const at::Tensor& x_in, const QuantizedWeight& qw, const at::Tensor& bias,
                                const ActQuantSpec& act, const ActQuantParams* params) {
  int64_t groups = 0, width = 0;
  check_groups(qw, groups, width);
  const at::Tensor x = x_in.reshape({-1, qw.q.size(1)});
  const QuantizedActivation qa = quantize_activation_ref(x, act, params);
  const int64_t T = x.size(0), K = qw.q.size(1), N = qw.q.size(0);
  const at::Tensor codes = qa.codes.contiguous(), q = qw.q.to(at::kInt).contiguous(),
                   zeros = qw.zeros.to(at::kInt).contiguous(), g_idx = qw.g_idx.to(at::kInt).contiguous(),
                   scales = qw.scales.to(at::kFloat).contiguous(), ascale = qa.scale.contiguous();
  const float* pc = codes.data_ptr<float>();
  const int32_t* pq = q.data_ptr<int32_t>();
  const int32_t* pz = zeros.data_ptr<int32_t>();
  const int32_t* pg = g_idx.data_ptr<int32_t>();
  const float* ps = scales.data_ptr<float>();
  const float* pa = ascale.data_ptr<float>();
  at::Tensor y = at::empty({T, N}, at::kFloat);
  std::vector<int64_t> acc(groups);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double sum = 0;
      if (act.granularity == ActGranularity::PerChannel) {
        for (int64_t k = 0; k < K; ++k) {
          const int g = pg[k];
          sum += double(pc[t * K + k]) * double(pa[k]) *
                 (double(ps[n * groups + g]) * double(pq[n * K + k] - pz[n * groups + g]));
        }
      } else {
        std::fill(acc.begin(), acc.end(), 0);
        for (int64_t k = 0; k < K; ++k) {
          const int g = pg[k];
          acc[g] += static_cast<int64_t>(pc[t * K + k]) * (pq[n * K + k] - pz[n * groups + g]);
        }
        for (int64_t g = 0; g < groups; ++g) sum += double(ps[n * groups + g]) * double(acc[g]);
        sum *= double(act.granularity == ActGranularity::PerToken ? pa[t] : pa[0]);
      }
      y.data_ptr<float>()[t * N + n] = static_cast<float>(sum);
    }
  if (bias.defined()) y = y + bias;
  std::vector<int64_t> out_shape = x_in.sizes().vec();
  out_shape.back() = N;
  return y.view(out_shape);
}

}  // namespace ptq
