// Folding: every transform of the ALGORITHMS.md table (scales, OutlierTune shifts, channel splits) leaves
// the FP model's logits unchanged to fp32 round-off, on the bundled models (real weights, GQA) and synthetic
// qwen2 (q/k/v biases) and OPT (LayerNorm β, biases everywhere, ReLU MLP) models; the invalid folds are
// refused with the reason.
#include <catch2/catch.hpp>

#include <cmath>

#include <ATen/ATen.h>

#include "core/file.h"
#include "model/model.h"
#include "model/synthetic.h"
#include "model/tokenizer.h"
#include "tests/test_model.h"
#include "tests/test_paths.h"
#include "transforms/fold.h"

using namespace ptq;
using ptq::test::logits_with;

namespace {

// Tolerance on max |Δlogit| relative to max |logit|. A fold replaces each product x_j·W_ij by
// fl(x_j/s_j)·fl(W_ij·s_j): two extra roundings, relative error <= 2u (u = 2^-24 = 6e-8) per product, so a
// dot product moves by <= 2u Σ|x_j W_ij| (the accumulation itself rounds the same way before and after).
// Layers (norms, softmax) pass such perturbations on with gains of order 1-10, and Σ|x W| exceeds |Σ x W| by
// a cancellation factor of 10-100 in trained models: a few layers give ~1e-5 relative in the worst case, and
// 1e-4 leaves margin. Measured: 3e-7 .. 2e-6. A wrong fold moves logits by > 1e-2
// relative (the negative controls below), so the test does discriminate.
constexpr double kRelTol = 1e-4;

struct Fixture {
  std::unique_ptr<Model> model;
  std::vector<LayerWeights> layers;
  at::Tensor ids;
};


Fixture open_bundled(const std::string& dir, int64_t tokens) {
  Fixture f;
  f.model = std::make_unique<Model>(test::repo_path(dir));
  auto ids = load_tokenizer(test::repo_path(dir))->encode(read_text_file(test::repo_path("data/sotu-test.txt")));
  ids.resize(std::min<size_t>(ids.size(), tokens));
  f.ids = at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong).unsqueeze(0);
  for (int64_t i = 0; i < f.model->config().n_layers; ++i) f.layers.push_back(f.model->load_layer(i));
  return f;
}

Fixture open_synthetic(Arch arch, const std::string& tag) {
  SyntheticSpec spec;
  spec.arch = arch;
  spec.seed = 7;
  const std::string dir = test::make_temp_dir(tag);
  write_synthetic_model(spec, dir);
  Fixture f;
  f.model = std::make_unique<Model>(dir);
  at::manual_seed(1);
  f.ids = at::randint(0, spec.vocab, {2, 48}, at::kLong);
  for (int64_t i = 0; i < f.model->config().n_layers; ++i) f.layers.push_back(f.model->load_layer(i));
  return f;
}

// Random positive factors over a wide range: exp(N(0, 1.5)) spans about e^±4.5 = 1/90 .. 90.
at::Tensor random_scale(int64_t n, uint64_t seed) {
  at::manual_seed(seed);
  return at::exp(1.5 * at::randn({n}));
}

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

// Folds s into point p of every layer and checks the logits, then all points at once.
void check_all_points(Fixture& f, const std::string& what) {
  const ModelConfig& c = f.model->config();
  const at::Tensor ref = logits_with(*f.model, f.layers, f.ids);
  std::vector<LayerWeights> all = f.layers;
  for (FoldPoint p : {FoldPoint::AttnNorm, FoldPoint::MlpNorm, FoldPoint::VToO, FoldPoint::UpToDown}) {
    std::vector<LayerWeights> folded = f.layers;
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const at::Tensor s = random_scale(fold_point_width(c, folded[i], p), 100 * i + int(p));
      fold_input_scale(c, folded[i], p, s);
      fold_input_scale(c, all[i], p, s);
    }
    const double d = rel_diff(logits_with(*f.model, folded, f.ids), ref);
    INFO(what << " " << fold_point_name(p) << ": max |dlogit| / max |logit| = " << d);
    CHECK(d < kRelTol);
  }
  const double d_all = rel_diff(logits_with(*f.model, all, f.ids), ref);
  INFO(what << " all points composed: " << d_all);
  CHECK(d_all < kRelTol);
  // The originals were not written into (folds return new tensors).
  CHECK(rel_diff(logits_with(*f.model, f.layers, f.ids), ref) == 0.0);

  // Negative control: dividing γ without multiplying the consumers is caught.
  std::vector<LayerWeights> broken = f.layers;
  broken[0].attn_norm.weight = broken[0].attn_norm.weight / random_scale(c.hidden, 5);
  CHECK(rel_diff(logits_with(*f.model, broken, f.ids), ref) > 1e-2);
}

}  // namespace

TEST_CASE("fold_input_scale preserves logits of the bundled models", "[fold]") {
  for (const char* dir : {"data/models/stories260K", "data/models/sotu-llama-8m"}) {
    Fixture f = open_bundled(dir, 96);
    check_all_points(f, dir);
  }
}

TEST_CASE("fold_input_scale preserves logits of synthetic qwen2 and OPT models", "[fold]") {
  Fixture qwen = open_synthetic(Arch::Qwen2, "fold-qwen2");
  REQUIRE(qwen.model->config().qkv_bias);
  check_all_points(qwen, "qwen2");
  Fixture opt = open_synthetic(Arch::Opt, "fold-opt");
  REQUIRE(opt.model->config().norm == NormKind::LayerNorm);
  REQUIRE(opt.layers[0][LinearId::Up].bias.defined());
  check_all_points(opt, "opt");
}

TEST_CASE("GQA: v->o repeats s per kv head onto o's columns", "[fold]") {
  // sotu-llama-8m: 8 query heads on 4 kv heads. o's column h·hd + d must get s[(h / 2)·hd + d].
  Fixture f = open_bundled("data/models/sotu-llama-8m", 8);
  const ModelConfig& c = f.model->config();
  REQUIRE(c.n_rep() == 2);
  const at::Tensor s = random_scale(fold_point_width(c, f.layers[0], FoldPoint::VToO), 3);
  LayerWeights w = f.layers[0];
  fold_input_scale(c, w, FoldPoint::VToO, s);
  const at::Tensor ratio = w[LinearId::O].weight / f.layers[0][LinearId::O].weight;
  for (int64_t h = 0; h < c.n_heads; ++h)
    for (int64_t d = 0; d < c.head_dim; d += 7)
      CHECK(ratio.select(1, h * c.head_dim + d).mean().item<double>() ==
            Approx(s[(h / c.n_rep()) * c.head_dim + d].item<double>()).epsilon(1e-5));
}

TEST_CASE("SmoothQuant s from real activation absmax preserves logits", "[fold]") {
  Fixture f = open_bundled("data/models/sotu-llama-8m", 128);
  const ModelConfig& c = f.model->config();
  const at::Tensor ref = logits_with(*f.model, f.layers, f.ids);
  // Per layer, per-channel absmax of the inputs of q (= k, v) and gate (= up).
  std::vector<at::Tensor> amax_attn(c.n_layers), amax_mlp(c.n_layers);
  LinearInputHook hook = [&](int64_t layer, LinearId id, const at::Tensor& x) {
    const at::Tensor a = x.abs().reshape({-1, x.size(-1)}).amax(0);
    if (id == LinearId::Q) amax_attn[layer] = a;
    if (id == LinearId::Gate) amax_mlp[layer] = a;
  };
  f.model->forward(f.ids, nullptr, &hook);
  std::vector<LayerWeights> smoothed = f.layers;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    auto smooth = [&](FoldPoint p, const at::Tensor& amax, std::vector<LinearId> ids) {
      std::vector<at::Tensor> ws;
      for (LinearId id : ids) ws.push_back(smoothed[i][id].weight);
      const at::Tensor wmax = at::cat(ws, 0).abs().amax(0).clamp_min(1e-5);
      const at::Tensor s = amax.clamp_min(1e-5).sqrt() / wmax.sqrt();  // α = 0.5
      fold_input_scale(c, smoothed[i], p, s);
    };
    smooth(FoldPoint::AttnNorm, amax_attn[i], {LinearId::Q, LinearId::K, LinearId::V});
    smooth(FoldPoint::MlpNorm, amax_mlp[i], {LinearId::Gate, LinearId::Up});
  }
  const double d = rel_diff(logits_with(*f.model, smoothed, f.ids), ref);
  INFO("SmoothQuant α=0.5 rel diff " << d);
  CHECK(d < kRelTol);
  // And it did migrate: the q input's channel spread (max/median of absmax) shrank.
  std::vector<at::Tensor> after(c.n_layers);
  LinearInputHook hook2 = [&](int64_t layer, LinearId id, const at::Tensor& x) {
    if (id == LinearId::Q) after[layer] = x.abs().reshape({-1, x.size(-1)}).amax(0);
  };
  const ForwardContext ctx = make_forward_context(c, 0, f.ids.size(1));
  at::Tensor h = f.model->embed(f.ids, 0);
  for (int64_t i = 0; i < c.n_layers; ++i) h = decoder_layer_forward(c, smoothed[i], i, h, ctx, nullptr, &hook2);
  auto spread = [](const at::Tensor& a) { return (a.max() / a.median()).item<double>(); };
  CHECK(spread(after[1]) < spread(amax_attn[1]));
}

TEST_CASE("q<->k folds only with RoPE-paired factors", "[fold]") {
  Fixture f = open_bundled("data/models/sotu-llama-8m", 64);
  const ModelConfig& c = f.model->config();
  const int64_t n = fold_point_width(c, f.layers[0], FoldPoint::QToK), half = c.head_dim / 2;
  LayerWeights w = f.layers[0];
  const at::Tensor unpaired = random_scale(n, 11);
  CHECK_THROWS_WITH(fold_input_scale(c, w, FoldPoint::QToK, unpaired), Catch::Contains("RoPE"));
  // s_i = s_{i+hd/2}: valid.
  const at::Tensor paired = random_scale(n / 2, 12).view({c.n_kv_heads, 1, half}).repeat({1, 2, 1}).reshape({n});
  const at::Tensor ref = logits_with(*f.model, f.layers, f.ids);
  std::vector<LayerWeights> folded = f.layers;
  for (auto& lw : folded) fold_input_scale(c, lw, FoldPoint::QToK, paired);
  CHECK(rel_diff(logits_with(*f.model, folded, f.ids), ref) < kRelTol);
  // Without RoPE (OPT) any positive s is fine, biases included.
  Fixture opt = open_synthetic(Arch::Opt, "fold-qk-opt");
  const ModelConfig& oc = opt.model->config();
  const at::Tensor oref = logits_with(*opt.model, opt.layers, opt.ids);
  std::vector<LayerWeights> ofold = opt.layers;
  for (auto& lw : ofold) fold_input_scale(oc, lw, FoldPoint::QToK, random_scale(fold_point_width(oc, lw, FoldPoint::QToK), 13));
  CHECK(rel_diff(logits_with(*opt.model, ofold, opt.ids), oref) < kRelTol);
}

TEST_CASE("invalid folds are refused with the reason", "[fold]") {
  Fixture f = open_bundled("data/models/stories260K", 8);
  const ModelConfig& c = f.model->config();
  LayerWeights w = f.layers[0];
  CHECK_THROWS_WITH(fold_input_scale(c, w, FoldPoint::GateToDown, at::ones({c.ffn})), Catch::Contains("SiLU"));
  CHECK_THROWS_WITH(add_input_shift(c, w, FoldPoint::UpToDown, at::zeros({c.ffn})), Catch::Contains("token-dependent"));
  CHECK_THROWS_WITH(fold_input_scale(c, w, FoldPoint::AttnNorm, at::ones({c.hidden + 1})),
                    Catch::Contains("vector of"));
  at::Tensor bad = at::ones({c.hidden});
  bad[3] = 0;
  CHECK_THROWS_WITH(fold_input_scale(c, w, FoldPoint::AttnNorm, bad), Catch::Contains("<= 0"));
  bad[3] = NAN;
  CHECK_THROWS_WITH(fold_input_scale(c, w, FoldPoint::AttnNorm, bad), Catch::Contains("NaN"));
  // Post-norm OPT: the norm output also feeds the residual.
  SyntheticSpec spec;
  spec.arch = Arch::Opt;
  spec.opt_pre_norm = false;
  const std::string dir = test::make_temp_dir("fold-postnorm");
  write_synthetic_model(spec, dir);
  Model post(dir);
  LayerWeights pw = post.load_layer(0);
  CHECK_THROWS_WITH(fold_input_scale(post.config(), pw, FoldPoint::MlpNorm, at::ones({spec.hidden})),
                    Catch::Contains("post-norm"));
}

TEST_CASE("add_input_shift (OutlierTune symmetrization) preserves logits", "[fold]") {
  auto check = [](Fixture& f, const std::string& what) {
    const ModelConfig& c = f.model->config();
    const at::Tensor ref = logits_with(*f.model, f.layers, f.ids);
    std::vector<LayerWeights> shifted = f.layers;
    at::manual_seed(21);
    for (auto& lw : shifted)
      for (FoldPoint p : {FoldPoint::AttnNorm, FoldPoint::MlpNorm, FoldPoint::VToO}) {
        // Shifts of the size of the activations (norm outputs are O(1), v outputs O(0.1-1)).
        add_input_shift(c, lw, p, at::randn({fold_point_width(c, lw, p)}));
      }
    // RMSNorm models now carry a norm bias, and bias-free consumers got one.
    CHECK(shifted[0].attn_norm.bias.defined());
    CHECK(shifted[0][LinearId::O].bias.defined());
    const double d = rel_diff(logits_with(*f.model, shifted, f.ids), ref);
    INFO(what << " shift rel diff " << d);
    // A shift adds W z to the bias and subtracts it again through W (x - z): the cancellation error is
    // relative to |W z| + |W x| rather than to |W x|, hence the same bound as the scales (z ~ |x|).
    CHECK(d < kRelTol);
  };
  Fixture llama = open_bundled("data/models/sotu-llama-8m", 96);
  check(llama, "sotu-llama-8m");
  Fixture opt = open_synthetic(Arch::Opt, "shift-opt");
  check(opt, "opt");
  Fixture qwen = open_synthetic(Arch::Qwen2, "shift-qwen2");
  check(qwen, "qwen2");
}

TEST_CASE("RMSNorm with a bias computes x̂·γ + β", "[fold]") {
  Fixture f = open_bundled("data/models/stories260K", 16);
  const ModelConfig& c = f.model->config();
  LayerWeights w = f.layers[0];
  at::manual_seed(4);
  w.attn_norm.bias = at::randn({c.hidden});
  at::Tensor x_seen;
  LinearInputHook hook = [&](int64_t, LinearId id, const at::Tensor& x) {
    if (id == LinearId::Q) x_seen = x;
  };
  const at::Tensor h = at::randn({1, 16, c.hidden});
  decoder_layer_forward(c, w, 0, h, make_forward_context(c, 0, 16), nullptr, &hook);
  const at::Tensor expect = h / at::sqrt(h.pow(2).mean(-1, true) + c.norm_eps) * w.attn_norm.weight + w.attn_norm.bias;
  CHECK((x_seen - expect).abs().max().item<double>() < 1e-5);
}

TEST_CASE("split_input_channels (dimensional reconstruction) and pad_input_channels preserve logits", "[fold]") {
  auto check = [](Fixture& f, const std::string& what) {
    const ModelConfig& c = f.model->config();
    const at::Tensor ref = logits_with(*f.model, f.layers, f.ids);
    std::vector<LayerWeights> split = f.layers;
    for (size_t i = 0; i < split.size(); ++i) {
      LayerWeights& lw = split[i];
      // k = 2, 3, 5 (1/3 and 1/5 are not exact in binary: the shares round).
      split_input_channels(c, lw, FoldPoint::AttnNorm, {3, 0, int64_t(i) + 7}, {2, 3, 5});
      split_input_channels(c, lw, FoldPoint::MlpNorm, {c.hidden - 1, 5}, {3, 2});
      split_input_channels(c, lw, FoldPoint::UpToDown, {1, c.ffn - 2}, {5, 2});
      // A split channel can be split again, and the other folds compose with splits.
      split_input_channels(c, lw, FoldPoint::AttnNorm, {c.hidden + 1}, {2});
      fold_input_scale(c, lw, FoldPoint::AttnNorm, random_scale(fold_point_width(c, lw, FoldPoint::AttnNorm), 40 + i));
      fold_input_scale(c, lw, FoldPoint::UpToDown, random_scale(fold_point_width(c, lw, FoldPoint::UpToDown), 50 + i));
      at::manual_seed(60 + i);
      add_input_shift(c, lw, FoldPoint::MlpNorm, at::randn({fold_point_width(c, lw, FoldPoint::MlpNorm)}));
      // Zero padding to a tile after the splits (MergeQuant): zero inputs, zero columns.
      pad_input_channels(c, lw, FoldPoint::AttnNorm, 24);
      pad_input_channels(c, lw, FoldPoint::UpToDown, 3);
    }
    CHECK(split[0][LinearId::Q].weight.size(1) == c.hidden + 1 + 2 + 4 + 1 + 24);
    CHECK(split[0].attn_norm.index.size(0) == c.hidden + 8 + 24);
    CHECK(split[0][LinearId::Down].weight.size(1) == c.ffn + 4 + 1 + 3);
    CHECK(split[0][LinearId::Q].weight.narrow(1, c.hidden + 8, 24).abs().max().item<float>() == 0.0f);
    const double d = rel_diff(logits_with(*f.model, split, f.ids), ref);
    INFO(what << " split rel diff " << d);
    CHECK(d < kRelTol);
  };
  Fixture llama = open_bundled("data/models/sotu-llama-8m", 96);
  check(llama, "sotu-llama-8m");
  Fixture opt = open_synthetic(Arch::Opt, "split-opt");
  check(opt, "opt");
  Fixture qwen = open_synthetic(Arch::Qwen2, "split-qwen2");
  check(qwen, "qwen2");

  LayerWeights w = llama.layers[0];
  const ModelConfig& c = llama.model->config();
  CHECK_THROWS_WITH(split_input_channels(c, w, FoldPoint::VToO, {0}, {2}), Catch::Contains("per head"));
  CHECK_THROWS_WITH(split_input_channels(c, w, FoldPoint::AttnNorm, {4, 4}, {2, 2}), Catch::Contains("twice"));
  CHECK_THROWS_WITH(split_input_channels(c, w, FoldPoint::AttnNorm, {4}, {1}), Catch::Contains("k >= 2"));
}
