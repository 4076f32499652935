#include "quant/act_quant.h"

#include <cfloat>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/error.h"
#include "core/grid_math.h"

namespace ptq {

namespace {

struct GranularityName {
  ActGranularity g;
  const char* name;
};
constexpr GranularityName kGranularities[] = {
    {ActGranularity::PerTensor, "per_tensor"}, {ActGranularity::PerChannel, "per_channel"},
    {ActGranularity::PerToken, "per_token"}};

// Range -> (scale, zero) of one unit (core/grid_math.h, which the integer runners share).
using Grid = grid_math::ActGrid;
Grid grid_ref(float mn, float mx, const ActQuantSpec& s) { return grid_math::act_grid(mn, mx, s.sym, s.clip, s.qmax()); }

// Tensor twin of grid_ref over units (any shape): scale, inv, zero tensors of the same shape.
void grid(const at::Tensor& mn_in, const at::Tensor& mx_in, const ActQuantSpec& s, at::Tensor& scale,
          at::Tensor& inv, at::Tensor& zero) {
  const at::Tensor mn = at::clamp_max(mn_in, 0.0), mx = at::clamp_min(mx_in, 0.0);
  at::Tensor num = s.sym ? at::maximum(-mn, mx).to(at::kDouble) * s.clip
                         : (mx.to(at::kDouble) - mn.to(at::kDouble)) * s.clip;
  scale = (num / at::full_like(num, double(s.qmax()))).to(at::kFloat);
  scale.masked_fill_(~(scale >= FLT_MIN), 1.0);
  inv = at::ones_like(scale) / scale;
  zero = s.sym ? at::zeros_like(scale) : at::round(-(mn.to(at::kDouble) * s.clip).to(at::kFloat) / scale);
}

void check_spec(const ActQuantSpec& s) {
  if (s.bits < 2 || s.bits > 8) fail_input("activation quantizer: {} bits requested; expected 2 to 8", s.bits);
  if (!(s.clip > 0 && s.clip <= 1)) fail_input("activation quantizer: clip ratio {} is not in (0, 1]", s.clip);
}

}  // namespace

const char* act_granularity_name(ActGranularity g) {
  for (const auto& e : kGranularities)
    if (e.g == g) return e.name;
  return "?";
}

std::optional<ActGranularity> act_granularity_from_name(const std::string& name) {
  for (const auto& e : kGranularities)
    if (name == e.name) return e.g;
  return std::nullopt;
}

std::string ActQuantSpec::describe() const {
  std::string s = fmt::format("a{} {} {}", bits, act_granularity_name(granularity), sym ? "sym" : "asym");
  if (clip != 1.0) s += fmt::format(" clip {:.3g}", clip);
  return s;
}

nlohmann::json ActQuantSpec::to_json() const {
  return {{"bits", bits}, {"granularity", act_granularity_name(granularity)}, {"sym", sym}, {"clip", clip}};
}

ActQuantSpec act_spec_from_json(const nlohmann::json& j, const std::string& where) {
  ActQuantSpec s;
  try {
    s.bits = j.at("bits").get<int>();
    const std::string g = j.at("granularity").get<std::string>();
    const auto gran = act_granularity_from_name(g);
    if (!gran) fail_input("{}: activation granularity \"{}\" is not per_tensor, per_channel or per_token", where, g);
    s.granularity = *gran;
    s.sym = j.value("sym", true);
    s.clip = j.value("clip", 1.0);
  } catch (const nlohmann::json::exception& e) {
    fail_input("{}: malformed activation scheme ({})", where, e.what());
  }
  if (s.bits < 2 || s.bits > 8) fail_input("{}: activation bits {} not in 2..8", where, s.bits);
  if (!(s.clip > 0 && s.clip <= 1)) fail_input("{}: activation clip {} not in (0, 1]", where, s.clip);
  return s;
}

ActQuantParams static_act_params(const ActQuantSpec& spec, const at::Tensor& ch_min, const at::Tensor& ch_max) {
  check_spec(spec);
  if (!spec.is_static()) fail_input("static_act_params: {} is dynamic", spec.describe());
  at::Tensor mn = ch_min.to(at::kFloat), mx = ch_max.to(at::kFloat);
  if (spec.granularity == ActGranularity::PerTensor) {
    mn = mn.min().reshape({1});
    mx = mx.max().reshape({1});
  }
  ActQuantParams p;
  at::Tensor inv;
  grid(mn, mx, spec, p.scale, inv, p.zero);
  return p;
}

QuantizedActivation quantize_activation(const at::Tensor& x_in, const ActQuantSpec& spec,
                                        const ActQuantParams* params) {
  check_spec(spec);
  const at::Tensor x = x_in.to(at::kFloat);
  QuantizedActivation qa;
  at::Tensor inv, zero;
  if (spec.is_static()) {
    if (params == nullptr || !params->scale.defined())
      fail_input("activation quantizer {}: static scales missing", spec.describe());
    qa.scale = params->scale;
    inv = at::ones_like(qa.scale) / qa.scale;
    zero = params->zero;
  } else {
    at::Tensor mn = std::get<0>(x.min(-1, /*keepdim=*/true)), mx = std::get<0>(x.max(-1, /*keepdim=*/true));
    grid(mn, mx, spec, qa.scale, inv, zero);
  }
  at::Tensor q = at::round(x * inv);
  if (!spec.sym) q = q + zero;
  q.clamp_(spec.qmin(), spec.qmax());
  qa.codes = spec.sym ? q : q - zero;
  return qa;
}

at::Tensor dequantize_activation(const QuantizedActivation& qa) { return qa.codes * qa.scale; }

QuantizedActivation quantize_activation_ref(const at::Tensor& x_in, const ActQuantSpec& spec,
                                            const ActQuantParams* params) {
  check_spec(spec);
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t T = x.size(0), K = x.size(1);
  const float* px = x.data_ptr<float>();
  QuantizedActivation qa;
  qa.codes = at::empty({T, K}, at::kFloat);
  float* pc = qa.codes.data_ptr<float>();
  std::vector<Grid> grids;
  if (spec.is_static()) {
    const at::Tensor sc = params->scale.contiguous(), ze = params->zero.contiguous();
    for (int64_t i = 0; i < sc.numel(); ++i) {
      const float s = sc.data_ptr<float>()[i];
      grids.push_back({s, 1.0f / s, ze.data_ptr<float>()[i]});
    }
    qa.scale = params->scale;
  } else {
    qa.scale = at::empty({T, 1}, at::kFloat);
    for (int64_t t = 0; t < T; ++t) {
      float mn = px[t * K], mx = px[t * K];
      for (int64_t k = 1; k < K; ++k) {
        mn = std::min(mn, px[t * K + k]);
        mx = std::max(mx, px[t * K + k]);
      }
      grids.push_back(grid_ref(mn, mx, spec));
      qa.scale.data_ptr<float>()[t] = grids.back().scale;
    }
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const Grid& g = spec.granularity == ActGranularity::PerToken     ? grids[t]
                      : spec.granularity == ActGranularity::PerChannel ? grids[k]
                                                                       : grids[0];
      pc[t * K + k] = grid_math::act_code(px[t * K + k], g, spec.qmin(), spec.qmax());
    }
  return qa;
}

}  // namespace ptq
