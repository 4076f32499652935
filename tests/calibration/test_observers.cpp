// Observers against a hand-computed case and against plain all-at-once references on random data fed in
// uneven batches; the ObserverSet's points, shared inputs observed once, and rejected inputs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "calibration/observers.h"
#include "model/synthetic.h"
#include "tests/test_paths.h"

using namespace ptq;
using Catch::Matchers::Contains;

namespace {

// All statistics of the observers made for `stats`, keyed by stat, after observing each of `batches`.
std::map<Stat, at::Tensor> observe_all(const StatSet& stats, int64_t channels, const std::vector<at::Tensor>& batches) {
  auto observers = make_observers(stats, channels, "test");
  for (const auto& b : batches)
    for (auto& o : observers) o->observe(b);
  std::map<Stat, at::Tensor> out;
  for (const auto& o : observers)
    for (auto& [s, t] : o->results()) out[s] = t;
  return out;
}

StatSet every_stat() { return default_stats().add(Stat::Hessian); }

// Nearest-rank quantile (rank ceil(q N)) of |x| by sorting every element.
double exact_abs_quantile(const at::Tensor& x, double q) {
  at::Tensor a = std::get<0>(x.abs().flatten().to(at::kDouble).sort());
  const int64_t n = a.numel();
  const int64_t rank = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(q * n)));
  return a[rank - 1].item<double>();
}

}  // namespace

TEST_CASE("observers: hand-computed statistics", "[calibration]") {
  // 2 samples x 2 tokens x 2 channels.
  const at::Tensor x = at::tensor({1.f, -2.f, 3.f, 4.f, -5.f, 0.5f, 2.f, -1.f}).view({2, 2, 2});
  auto r = observe_all(every_stat(), 2, {x});
  CHECK(r[Stat::Tokens].item<int64_t>() == 4);
  CHECK(at::equal(r[Stat::Min], at::tensor({-5.f, -2.f})));
  CHECK(at::equal(r[Stat::Max], at::tensor({3.f, 4.f})));
  CHECK(at::equal(r[Stat::AbsMax], at::tensor({5.f, 4.f})));
  // (1+3+5+2)/4, (2+4+0.5+1)/4; 1+9+25+4, 4+16+0.25+1: all exact in binary floating point.
  CHECK(at::equal(r[Stat::MeanAbs], at::tensor({2.75f, 1.875f})));
  CHECK(at::equal(r[Stat::SumSq], at::tensor({39.f, 21.25f})));
  // Per sample (max+min)/2: sample 0 (2, 1), sample 1 (-1.5, -0.25); mean over samples (0.25, 0.375).
  CHECK(at::equal(r[Stat::MidrangeMean], at::tensor({0.25f, 0.375f})));
  CHECK(r[Stat::TensorAbsMax].item<float>() == 5.f);
  // |x| sorted: 0.5 1 1 2 2 3 4 5; every percentile >= 99 has rank 8 -> 5, capped exactly at the max.
  CHECK(r[Stat::AbsP99].item<float>() == 5.f);
  CHECK(r[Stat::AbsP99_99].item<float>() == 5.f);
  // H = (2/n) sum x x^T with n = 2 sequences: [[39, 5.5], [5.5, 21.25]].
  CHECK(at::equal(r[Stat::Hessian], at::tensor({39.f, 5.5f, 5.5f, 21.25f}).view({2, 2})));

  // The median (rank 4 -> 2.0) lies in the bin [2, 2 (1 + 2^-7)); the estimate is its midpoint.
  AbsHistogramObserver h(2, "hist");
  h.observe(x);
  CHECK(h.quantile(0.5) == 2.0 * (1.0 + std::ldexp(1.0, -8)));
  CHECK(h.absmax() == 5.f);
  CHECK(h.count() == 8);
}

TEST_CASE("observers: streamed in uneven batches equal one pass over all activations", "[calibration]") {
  at::manual_seed(7);
  const int64_t S = 9, T = 13, C = 37;  // 37 channels: split into blocks of >= 16 over the threads
  // Non-zero means and a few outlier channels, as real activations have.
  at::Tensor x = at::randn({S, T, C}) + at::linspace(-2, 2, C);
  x.select(2, 3).mul_(40);
  x.select(2, 8).mul_(-15);
  // Uneven split: 4 + 1 + 4 samples, the middle batch passed as a 2-D single sequence.
  const std::vector<at::Tensor> batches = {x.narrow(0, 0, 4), x[4], x.narrow(0, 5, 4)};
  auto streamed = observe_all(every_stat(), C, batches);
  auto once = observe_all(every_stat(), C, {x});

  // Every channel accumulates over the tokens in order whatever the batching: bit-identical results.
  for (const auto& [stat, t] : once)
    if (stat != Stat::Hessian) {
      INFO(stat_name(stat));
      CHECK(at::equal(streamed[stat], t));
    }
  // ... and whatever the thread count (threads split the channels, never a channel's tokens).
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  auto serial = observe_all(every_stat(), C, batches);
  at::set_num_threads(threads);
  for (const auto& [stat, t] : once)
    if (stat != Stat::Hessian) CHECK(at::equal(serial[stat], t));

  const at::Tensor xd = x.to(at::kDouble).view({-1, C});
  CHECK(streamed[Stat::Tokens].item<int64_t>() == S * T);
  // Min/max/absmax and the histogram involve no arithmetic: exact.
  CHECK(at::equal(streamed[Stat::Min], std::get<0>(x.view({-1, C}).min(0))));
  CHECK(at::equal(streamed[Stat::Max], std::get<0>(x.view({-1, C}).max(0))));
  CHECK(at::equal(streamed[Stat::AbsMax], std::get<0>(x.view({-1, C}).abs().max(0))));
  CHECK(streamed[Stat::TensorAbsMax].item<float>() == x.abs().max().item<float>());
  for (Stat s : {Stat::AbsP99, Stat::AbsP99_9, Stat::AbsP99_99}) {
    // Bin-midpoint estimate: within 2^-8 relative of the exact order statistic (see AbsHistogramObserver),
    // plus one float rounding of the stored value (2^-24).
    const double exact = exact_abs_quantile(x, stat_traits(s).quantile);
    CHECK(std::abs(streamed[s].item<float>() - exact) <= (std::ldexp(1.0, -8) + std::ldexp(1.0, -24)) * exact);
  }
  // Double sums in another order (the reference's pairwise reduction) differ by ~1e-15 relative; the stored
  // fp32 value is rounded once (2^-24 ~ 6e-8 relative). 1e-6 relative covers both with margin; absolute 1e-6
  // covers means near 0.
  auto close = [](const at::Tensor& got, const at::Tensor& want) {
    return at::allclose(got.to(at::kDouble), want, /*rtol=*/1e-6, /*atol=*/1e-6);
  };
  CHECK(close(streamed[Stat::MeanAbs], xd.abs().mean(0)));
  CHECK(close(streamed[Stat::SumSq], xd.square().sum(0)));
  const at::Tensor x3 = x.to(at::kDouble);
  CHECK(close(streamed[Stat::MidrangeMean], ((std::get<0>(x3.max(1)) + std::get<0>(x3.min(1))) / 2).mean(0)));
  // Hessian: fp32 accumulation with a rescale per batch; each entry sees O(batches + log tokens) roundings
  // of 6e-8 relative to the largest terms, so 1e-5 of max |H| is a loose but meaningful bound.
  const at::Tensor h_ref = xd.t().mm(xd) * (2.0 / S);
  const double hmax = h_ref.abs().max().item<double>();
  CHECK((streamed[Stat::Hessian].to(at::kDouble) - h_ref).abs().max().item<double>() <= 1e-5 * hmax);
}

TEST_CASE("observers: corner cases", "[calibration]") {
  SECTION("all-zero input") {
    auto r = observe_all(default_stats(), 4, {at::zeros({2, 3, 4})});
    CHECK(r[Stat::TensorAbsMax].item<float>() == 0.f);
    CHECK(r[Stat::AbsP99_9].item<float>() == 0.f);
    CHECK(at::equal(r[Stat::MidrangeMean], at::zeros({4})));
  }
  SECTION("huge values") {
    const float big = 3e38f;
    auto r = observe_all(default_stats(), 2, {at::tensor({big, -big, 1.f, 2.f}).view({1, 2, 2})});
    CHECK(r[Stat::AbsMax][0].item<float>() == big);
    CHECK(r[Stat::TensorAbsMax].item<float>() == big);
    // Rank 4 of 4 is big: its bin's midpoint, within the histogram's 2^-8 relative bound.
    CHECK(std::abs(r[Stat::AbsP99].item<float>() - double(big)) <= std::ldexp(1.0, -8) * big);
    // 2 x (3e38)^2 is finite in the double accumulator but not in the stored fp32: inf, never NaN.
    CHECK(std::isinf(r[Stat::SumSq][0].item<float>()));
  }
  SECTION("wrong channel count") {
    ChannelAbsMaxObserver o(4, "model.layers.0.mlp.down_proj");
    REQUIRE_THROWS_WITH(o.observe(at::zeros({2, 3, 5})), Contains("model.layers.0.mlp.down_proj") && Contains("[2, 3, 5]"));
  }
  SECTION("nothing observed") {
    ChannelMinMaxObserver o(4, "pt");
    REQUIRE_THROWS_WITH(o.results(), Contains("no input was observed"));
  }
}

TEST_CASE("observer set: four points, shared inputs observed once", "[calibration]") {
  const std::string dir = test::make_temp_dir("obsset");
  SyntheticSpec spec;
  write_synthetic_model(spec, dir);
  Model model(dir);
  const ModelConfig& cfg = model.config();
  const LayerWeights w = model.load_layer(1);
  at::manual_seed(3);
  const int64_t B = 3, T = 5;
  const at::Tensor h = at::randn({B, T, cfg.hidden});
  const ForwardContext ctx = make_forward_context(cfg, 0, T);

  ObserverSet obs(cfg, 1, StatSet{Stat::AbsMax, Stat::Hessian});
  int calls = 0;
  const LinearInputHook counting = [&](int64_t layer, LinearId id, const at::Tensor& x) {
    ++calls;
    obs.hook()(layer, id, x);
  };
  decoder_layer_forward(cfg, w, 1, h, ctx, nullptr, &counting);
  CHECK(calls == 7);
  CalibrationStats stats;
  obs.collect(stats);

  REQUIRE(stats.points().size() == 4);
  CHECK(stats.points()[0].name == "model.layers.1.self_attn.q_proj");
  CHECK(stats.points()[1].name == "model.layers.1.self_attn.o_proj");
  CHECK(stats.points()[2].name == "model.layers.1.mlp.gate_proj");
  CHECK(stats.points()[3].name == "model.layers.1.mlp.down_proj");
  // Every point saw each token once: q/k/v's input was not counted three times, gate/up's not twice.
  for (const auto& p : stats.points()) CHECK(stats.get(1, p.first, Stat::Tokens).item<int64_t>() == B * T);
  CHECK(stats.get(1, LinearId::K, Stat::AbsMax).data_ptr() == stats.get(1, LinearId::Q, Stat::AbsMax).data_ptr());
  CHECK(stats.get(1, LinearId::Up, Stat::AbsMax).data_ptr() == stats.get(1, LinearId::Gate, Stat::AbsMax).data_ptr());
  // Only the requested statistics (plus tokens) are kept.
  CHECK_FALSE(stats.has(1, LinearId::Q, Stat::Min));
  CHECK(stats.get(1, LinearId::Down, Stat::Hessian).sizes().vec() == std::vector<int64_t>{cfg.ffn, cfg.ffn});

  // The q/k/v input is RMSNorm(h) * gamma; recomputed here, compared exactly per channel up to the few
  // float ulps that a different operation order costs (1e-6 relative ~ 8 ulps).
  const at::Tensor x = h / at::sqrt(h.square().mean(-1, true) + cfg.norm_eps) * w.attn_norm.weight;
  CHECK(at::allclose(stats.get(1, LinearId::V, Stat::AbsMax), std::get<0>(x.abs().view({-1, cfg.hidden}).max(0)), 1e-6,
                     0));

  REQUIRE_THROWS_WITH(obs.hook()(0, LinearId::Q, h), Contains("layer 1") && Contains("layer 0"));
  at::Tensor bad = at::randn({1, 2, cfg.hidden});
  bad[0][1][5] = std::nanf("");
  REQUIRE_THROWS_WITH(obs.observe(LinearId::Q, bad), Contains("model.layers.1.self_attn.q_proj input"));
}

TEST_CASE("observation points of an ungated MLP (OPT)", "[calibration]") {
  SyntheticSpec spec;
  spec.arch = Arch::Opt;
  const ModelConfig cfg = parse_model_config(synthetic_config_json(spec), "synthetic opt");
  const auto points = layer_input_points(cfg, 0);
  REQUIRE(points.size() == 4);
  CHECK(points[0].name == "model.decoder.layers.0.self_attn.q_proj");
  CHECK(points[1].name == "model.decoder.layers.0.self_attn.out_proj");
  CHECK(points[2].name == "model.decoder.layers.0.fc1");
  CHECK((points[2].consumers == std::vector<LinearId>{LinearId::Up}));
  CHECK(points[3].name == "model.decoder.layers.0.fc2");
  CHECK(points[3].in_features == cfg.ffn);
}
