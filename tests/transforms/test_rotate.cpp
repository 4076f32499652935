// Rotation (QuaRot-style): random_hadamard is orthogonal and seeded; folding the norms, rotating the residual
// stream of every layer plus embedding and head, and an online Hadamard before down_proj leave the FP logits
// unchanged to fp32 round-off on both bundled models (and a synthetic qwen2 with q/k/v biases and tied
// embeddings); the rotation spreads outlier channels; models where it is not exact are refused.
#include <catch2/catch.hpp>

#include <cmath>
#include <iomanip>

#include <ATen/ATen.h>

#include "core/file.h"
#include "model/hadamard.h"
#include "model/model.h"
#include "model/synthetic.h"
#include "model/tokenizer.h"
#include "tests/test_paths.h"
#include "transforms/fold.h"
#include "transforms/rotate.h"

using namespace ptq;

namespace {

// max |QᵀQ - I| for the fp32 matrix, evaluated in double. Each fp32 entry is the double value times (1 + δ),
// |δ| <= u = 2^-24, so (QᵀQ - I)_ij = Σ_k q_ki q_kj (δ_ki + δ_kj) + O(u²) <= 2u Σ_k |q_ki||q_kj| <= 2u (columns
// have unit norm, Cauchy–Schwarz). The double construction (Gram–Schmidt twice on m <= 43 columns) adds
// ~1e-15. Measured: 0 for n = 64, 256 (±1/8, ±1/16 are exact), 2.9e-8 .. 7.9e-8 otherwise.
constexpr double kOrthoBound = 2.0 * 0x1.0p-24 + 1e-12;

// Tolerance on max |Δlogit| relative to max |logit|, the same budget as test_fold.cpp's kRelTol and for the
// same reason: the rotated weights carry one extra fp32 rounding each (formed in double), the forward rounds
// the rotated activations instead of the original ones, and the online mid·H adds a rounded product per
// down_proj input; each perturbs a dot product by a few u Σ|x_j W_ij|, which layers pass on with gains of
// order 1-10 and cancellation factors of 10-100: ~1e-5 in the worst case, 1e-4 leaves margin. Measured
// (fully rotated): stories260K 1.8e-6, sotu-llama-8m 1.0e-6 (1.1e-6 with o/down biases), qwen2 4.3e-7; folding
// the norms alone 2.6e-7 .. 1.1e-6. A missing piece (embedding not rotated) moves logits by O(1) relative.
constexpr double kRelTol = 1e-4;

// random_hadamard(12, 0)[0][0] and [5][7] (12 = 4·3: a 3×3 Gaussian-QR factor ⊗ a signed 4×4 Hadamard).
constexpr double kPinned00 = 0.385236979, kPinned57 = 0.1032658;

struct Fixture {
  std::unique_ptr<Model> model;
  std::vector<LayerWeights> layers;
  at::Tensor ids;
  at::Tensor embed, lm_head, final_gamma;
};

Fixture open_model(const std::string& dir, at::Tensor ids) {
  Fixture f;
  f.model = std::make_unique<Model>(dir);
  f.ids = std::move(ids);
  const ModelConfig& c = f.model->config();
  for (int64_t i = 0; i < c.n_layers; ++i) f.layers.push_back(f.model->load_layer(i));
  const ArchTraits& t = c.traits();
  const WeightSource& ws = f.model->weights();
  f.embed = ws.load(std::string(t.embed) + ".weight");
  const std::string head = std::string(t.lm_head) + ".weight";
  f.lm_head = ws.contains(head) ? ws.load(head) : f.embed;
  f.final_gamma = ws.load(std::string(t.final_norm) + ".weight");
  return f;
}

Fixture open_bundled(const std::string& dir, int64_t tokens) {
  auto ids = load_tokenizer(test::repo_path(dir))->encode(read_text_file(test::repo_path("data/sotu-test.txt")));
  ids.resize(std::min<size_t>(ids.size(), tokens));
  return open_model(test::repo_path(dir),
                    at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong).unsqueeze(0));
}

// Forward through `layers`, hidden states returned after the last layer.
at::Tensor hidden_with(const Fixture& f, const std::vector<LayerWeights>& layers, const at::Tensor& h0,
                       const LinearInputHook* hook = nullptr) {
  const ModelConfig& c = f.model->config();
  const ForwardContext ctx = make_forward_context(c, 0, f.ids.size(1));
  at::Tensor h = h0;
  for (int64_t i = 0; i < c.n_layers; ++i) h = decoder_layer_forward(c, layers[i], i, h, ctx, nullptr, hook);
  return h;
}

// The rotated model as the pipeline will write it.
struct Rotated {
  std::vector<LayerWeights> layers;
  at::Tensor embed, lm_head;  // final norm γ = 1
};

Rotated rotate_model(const Fixture& f, const at::Tensor& Q, uint64_t down_seed) {
  const ModelConfig& c = f.model->config();
  Rotated r{f.layers, rotate_embedding(f.embed, Q), rotate_head(f.lm_head, f.final_gamma, Q)};
  for (LayerWeights& w : r.layers) {
    fold_norm_into_consumers(c, w);
    rotate_layer(c, w, Q);
    add_down_rotation(c, w, random_hadamard(w[LinearId::Down].weight.size(1), down_seed));
  }
  return r;
}

// Embedding lookup, layers, RMSNorm with γ = 1, head.
at::Tensor rotated_logits(const Fixture& f, const Rotated& r, at::Tensor* h_last = nullptr) {
  const at::Tensor h = hidden_with(f, r.layers, at::embedding(r.embed, f.ids));
  if (h_last != nullptr) *h_last = h;
  const at::Tensor x = h * at::rsqrt(h.pow(2).mean(-1, true) + f.model->config().norm_eps);
  return at::matmul(x, r.lm_head.t());
}

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

// Outlier-ness of activations x [..., n] as per-token quantization sees it: the mean over tokens of
// max_j |x_j| / mean_j |x_j|. About 4 for Gaussian rows of 256; an outlier channel of S times the typical
// magnitude makes it ~S.
double max_mean_ratio(const at::Tensor& x) {
  const at::Tensor a = x.abs().reshape({-1, x.size(-1)});
  return (a.amax(1) / a.mean(1)).mean().item<double>();
}

void check_preserved(Fixture& f, const std::string& what) {
  const ModelConfig& c = f.model->config();
  const at::Tensor h_ref = hidden_with(f, f.layers, f.model->embed(f.ids, 0));
  const at::Tensor ref = f.model->head(h_ref);
  const at::Tensor Q = random_hadamard(c.hidden, 1);

  // Folding alone, then the full rotation.
  std::vector<LayerWeights> folded = f.layers;
  for (LayerWeights& w : folded) fold_norm_into_consumers(c, w);
  const double d_fold = rel_diff(f.model->head(hidden_with(f, folded, f.model->embed(f.ids, 0))), ref);
  at::Tensor h_rot;
  const Rotated r = rotate_model(f, Q, 2);
  const double d_rot = rel_diff(rotated_logits(f, r, &h_rot), ref);
  INFO(what << ": norms folded: max |dlogit| / max |logit| = " << d_fold << "; fully rotated: " << d_rot);
  CHECK(d_fold < kRelTol);
  CHECK(d_rot < kRelTol);
  // The residual stream really is h·Q.
  const double d_stream = rel_diff(h_rot, at::matmul(h_ref, Q));
  INFO(what << ": last hidden states vs h·Q: " << d_stream);
  CHECK(d_stream < kRelTol);

  // Not a no-op: every linear changed by O(1) relative (a random rotation moves W by about √2 ‖W‖), the
  // norms are ones, down carries its rotation.
  for (int k = 0; k < kNumLinear; ++k) {
    const at::Tensor& w0 = f.layers[1].linear[k].weight;
    const double change = ((r.layers[1].linear[k].weight - w0).norm() / w0.norm()).item<double>();
    INFO(what << " " << linear_module_name(c, LinearId(k)) << " relative change " << change);
    CHECK(change > 0.5);
  }
  CHECK((r.layers[1].attn_norm.weight == 1).all().item<bool>());
  CHECK(r.layers[1].down_rotation.defined());
  // The originals were not written into.
  CHECK(rel_diff(f.model->head(hidden_with(f, f.layers, f.model->embed(f.ids, 0))), ref) == 0.0);

  // Negative control: an unrotated embedding feeds the rotated layers the wrong basis.
  Rotated broken = r;
  broken.embed = f.embed;
  const double d_broken = rel_diff(rotated_logits(f, broken, nullptr), ref);
  INFO(what << ": embedding left unrotated: " << d_broken);
  CHECK(d_broken > 1e-2);
}

}  // namespace

TEST_CASE("random_hadamard is orthogonal, seeded and Hadamard for powers of two", "[rotate]") {
  for (int64_t n : {64, 172, 256, 768, 12, 1, 2, 7, 96}) {
    const at::Tensor q = random_hadamard(n, 5);
    REQUIRE(q.sizes() == at::IntArrayRef({n, n}));
    REQUIRE(q.scalar_type() == at::kFloat);
    const at::Tensor qd = q.to(at::kDouble);
    const double err = (at::mm(qd.t(), qd) - at::eye(n, at::kDouble)).abs().max().item<double>();
    const double err_rows = (at::mm(qd, qd.t()) - at::eye(n, at::kDouble)).abs().max().item<double>();
    INFO("n = " << n << ": max |QᵀQ - I| = " << err << ", max |QQᵀ - I| = " << err_rows);
    CHECK(err < kOrthoBound);
    CHECK(err_rows < kOrthoBound);
    // Same seed: bit-identical; another seed: a different matrix.
    CHECK(at::equal(q, random_hadamard(n, 5)));
    if (n > 1) CHECK_FALSE(at::equal(q, random_hadamard(n, 6)));
    if ((n & (n - 1)) == 0) {
      CHECK((q.abs() == static_cast<float>(1.0 / std::sqrt(double(n)))).all().item<bool>());
    } else {
      // A dense mix: no entry is zero and none carries more than a fraction of its column.
      CHECK((q != 0).all().item<bool>());
      CHECK(q.abs().max().item<double>() < 0.9);
    }
  }
  // n = 1 is a random sign; both occur over seeds.
  bool plus = false, minus = false;
  for (uint64_t s = 0; s < 16; ++s) (random_hadamard(1, s).item<float>() > 0 ? plus : minus) = true;
  CHECK((plus && minus));
  // The signs are random, not the plain Sylvester matrix: some row of H·√n starts with -1 (Sylvester's first
  // column is all +1).
  CHECK((random_hadamard(64, 3).select(1, 0) < 0).any().item<bool>());
  // Pinned draw order (mt19937_64 + Box–Muller): changing it would silently change every rotated checkpoint.
  const at::Tensor q12 = random_hadamard(12, 0);
  INFO(std::setprecision(9) << "random_hadamard(12, 0)[0, 0] = " << q12[0][0].item<float>() << ", [5, 7] = "
                            << q12[5][7].item<float>());
  CHECK(q12[0][0].item<float>() == Approx(kPinned00).epsilon(1e-6));
  CHECK(q12[5][7].item<float>() == Approx(kPinned57).epsilon(1e-6));

  CHECK_THROWS_WITH(random_hadamard(0, 1), Catch::Contains(">= 1"));
  CHECK_THROWS_WITH(apply_rotation(at::ones({3, 5}), random_hadamard(4, 1)), Catch::Contains("last dimension"));
  const at::Tensor x = at::randn({2, 3, 12});
  CHECK(at::allclose(apply_rotation(x, q12), at::matmul(x, q12)));
}

TEST_CASE("random_hadamard's factors give its matrix, and the fast transform its product", "[rotate]") {
  for (int64_t n : {5504, 172, 256, 12, 1, 7}) {
    CAPTURE(n);
    const at::Tensor q = random_hadamard(n, 9);
    const kernels::HadamardFactors f = random_hadamard_factors(n, 9);
    REQUIRE(f.n() == n);
    CHECK((f.m % 2 == 1 && (f.p & (f.p - 1)) == 0));
    const at::Tensor x = at::randn({3, n}, at::kFloat) * 2.0;
    // The scalar twin forms the same fp32 entries as random_hadamard and sums in double, as the double product of
    // the matrix does: equal up to the order of the double sums (1e-12 relative), then one rounding to fp32.
    at::Tensor y_ref = at::empty_like(x);
    if (n <= 256) {
      kernels::hadamard_rotate_ref(f, x.data_ptr<float>(), y_ref.data_ptr<float>(), 3);
      const at::Tensor dense = at::matmul(x.to(at::kDouble), q.to(at::kDouble)).to(at::kFloat);
      CHECK(at::allclose(y_ref, dense, /*rtol=*/1e-6, /*atol=*/1e-6));
    }
    // The fast transform in fp32 against the double product: rounding only (the kernel tests bound it per stage;
    // 2e-5 of the row's scale covers log2(p) + m <= 50 fp32 roundings of partial sums up to ‖x‖₁/√n).
    at::Tensor y = x.clone();
    kernels::hadamard_rotate(f, y.data_ptr<float>(), 3);
    const at::Tensor exact = at::matmul(x.to(at::kDouble), q.to(at::kDouble));
    const double err = (y.to(at::kDouble) - exact).abs().max().item<double>();
    const double scale = exact.abs().max().item<double>();
    INFO("max |fast - x·Q| = " << err << " against max |x·Q| = " << scale);
    CHECK(err <= 2e-5 * scale);
  }
}

TEST_CASE("rotation preserves logits of the bundled models", "[rotate]") {
  for (const char* dir : {"data/models/stories260K", "data/models/sotu-llama-8m"}) {
    Fixture f = open_bundled(dir, 96);
    check_preserved(f, dir);
  }
}

TEST_CASE("rotation preserves logits with biases and tied embeddings", "[rotate]") {
  // qwen2: q/k/v biases (untouched: they are on the output side of input-side modules), tied embeddings (E·Q
  // and lm_head·diag(γ)·Q become two tensors).
  SyntheticSpec spec;
  spec.arch = Arch::Qwen2;
  spec.tie_embeddings = true;
  spec.ffn = 96;  // 32·3: a non-power-of-two down rotation
  spec.seed = 3;
  const std::string dir = test::make_temp_dir("rotate-qwen2");
  write_synthetic_model(spec, dir);
  at::manual_seed(1);
  Fixture qwen = open_model(dir, at::randint(0, spec.vocab, {2, 48}, at::kLong));
  REQUIRE(qwen.model->config().qkv_bias);
  REQUIRE(qwen.model->config().tie_embeddings);
  check_preserved(qwen, "qwen2");

  // o and down biases (no supported family has them, but a fold may add them): rotated as Qᵀb.
  Fixture f = open_bundled("data/models/sotu-llama-8m", 64);
  at::manual_seed(2);
  for (LayerWeights& w : f.layers) {
    w[LinearId::O].bias = 0.1 * at::randn({f.model->config().hidden});
    w[LinearId::Down].bias = 0.1 * at::randn({f.model->config().hidden});
  }
  check_preserved(f, "sotu-llama-8m with o/down biases");
}

TEST_CASE("rotation spreads outlier channels", "[rotate]") {
  // Synthetic: Gaussian activations with 4 channels 50x larger, as LLM linear inputs have.
  at::manual_seed(9);
  at::Tensor x = at::randn({128, 256});
  x.index_fill_(1, at::tensor({3, 77, 150, 201}, at::kLong), 0);
  x.index_add_(1, at::tensor({3, 77, 150, 201}, at::kLong), 50 * at::randn({128, 4}));
  const double before = max_mean_ratio(x), after = max_mean_ratio(apply_rotation(x, random_hadamard(256, 1)));
  const double gauss = max_mean_ratio(at::randn({128, 256}));
  INFO("synthetic: max/mean " << before << " -> " << after << " (Gaussian rows: " << gauss << ")");
  CHECK(before > 10 * gauss);
  CHECK(after < 1.5 * gauss);

  // Real activations of sotu-llama-8m: q_proj's input (norms folded, so only the residual stream's own
  // outliers remain) and down_proj's input (SiLU(gate)·up has heavy channels), before and after rotation.
  Fixture f = open_bundled("data/models/sotu-llama-8m", 128);
  const ModelConfig& c = f.model->config();
  std::vector<LayerWeights> folded = f.layers;
  for (LayerWeights& w : folded) fold_norm_into_consumers(c, w);
  const Rotated r = rotate_model(f, random_hadamard(c.hidden, 1), 2);
  auto ratios = [&](const std::vector<LayerWeights>& layers, const at::Tensor& h0) {
    std::vector<double> q(c.n_layers), down(c.n_layers);
    LinearInputHook hook = [&](int64_t layer, LinearId id, const at::Tensor& in) {
      if (id == LinearId::Q) q[layer] = max_mean_ratio(in);
      if (id == LinearId::Down) down[layer] = max_mean_ratio(in);
    };
    hidden_with(f, layers, h0, &hook);
    return std::make_pair(q, down);
  };
  const auto [q0, d0] = ratios(folded, f.model->embed(f.ids, 0));
  const auto [q1, d1] = ratios(r.layers, at::embedding(r.embed, f.ids));
  double q_before = 0, q_after = 0, d_before = 0, d_after = 0;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    INFO("layer " << i << ": q input max/mean " << q0[i] << " -> " << q1[i] << ", down input " << d0[i] << " -> "
                  << d1[i]);
    CHECK(q1[i] < q0[i]);
    CHECK(d1[i] < d0[i]);
    q_before += q0[i], q_after += q1[i], d_before += d0[i], d_after += d1[i];
  }
  INFO("mean over layers: q input " << q_before / c.n_layers << " -> " << q_after / c.n_layers << ", down input "
                                    << d_before / c.n_layers << " -> " << d_after / c.n_layers);
  CHECK(d_after < 0.5 * d_before);
}

TEST_CASE("rotation refuses what it cannot preserve", "[rotate]") {
  Fixture f = open_bundled("data/models/stories260K", 8);
  const ModelConfig& c = f.model->config();
  const at::Tensor Q = random_hadamard(c.hidden, 1);
  // Norms not folded.
  LayerWeights w = f.layers[0];
  CHECK_THROWS_WITH(rotate_layer(c, w, Q), Catch::Contains("fold_norm_into_consumers first"));
  // Norms carrying a shift or a split: those transforms come after rotation.
  LayerWeights shifted = f.layers[0];
  add_input_shift(c, shifted, FoldPoint::AttnNorm, at::ones({c.hidden}));
  CHECK_THROWS_WITH(fold_norm_into_consumers(c, shifted), Catch::Contains("bias"));
  LayerWeights split = f.layers[0];
  split_input_channels(c, split, FoldPoint::MlpNorm, {3}, {2});
  CHECK_THROWS_WITH(fold_norm_into_consumers(c, split), Catch::Contains("index"));
  // Not orthogonal, wrong size, NaN.
  fold_norm_into_consumers(c, w);
  CHECK_THROWS_WITH(rotate_layer(c, w, 2 * Q), Catch::Contains("not orthogonal"));
  at::manual_seed(3);
  CHECK_THROWS_WITH(rotate_layer(c, w, at::randn({c.hidden, c.hidden})), Catch::Contains("not orthogonal"));
  CHECK_THROWS_WITH(rotate_layer(c, w, random_hadamard(c.hidden + 4, 1)), Catch::Contains("must be ["));
  at::Tensor nan_q = Q.clone();
  nan_q[0][0] = NAN;
  CHECK_THROWS_WITH(rotate_layer(c, w, nan_q), Catch::Contains("NaN"));
  CHECK_THROWS_WITH(add_down_rotation(c, w, random_hadamard(c.hidden, 1)), Catch::Contains("must be ["));
  CHECK_THROWS_WITH(rotate_head(f.lm_head, at::ones({c.hidden + 1}), Q), Catch::Contains("vector of"));
  CHECK_THROWS_WITH(fold_final_norm_into_head(f.lm_head, at::ones({3})), Catch::Contains("vector of"));
  // A failed call leaves the weights untouched (checks come before any write).
  CHECK(at::equal(w[LinearId::Q].weight, (f.layers[0][LinearId::Q].weight * f.layers[0].attn_norm.weight)));

  // LayerNorm (OPT): the mean subtraction does not commute with a rotation.
  SyntheticSpec spec;
  spec.arch = Arch::Opt;
  const std::string dir = test::make_temp_dir("rotate-opt");
  write_synthetic_model(spec, dir);
  Model opt(dir);
  LayerWeights ow = opt.load_layer(0);
  CHECK_THROWS_WITH(check_rotation_supported(opt.config()), Catch::Contains("mean subtraction"));
  CHECK_THROWS_WITH(fold_norm_into_consumers(opt.config(), ow), Catch::Contains("mean subtraction"));
  CHECK_THROWS_WITH(rotate_layer(opt.config(), ow, random_hadamard(spec.hidden, 1)),
                    Catch::Contains("mean subtraction"));
  // Post-norm RMSNorm (no such family, but the config allows it): the norm output is the residual stream.
  ModelConfig post = c;
  post.pre_norm = false;
  CHECK_THROWS_WITH(check_rotation_supported(post), Catch::Contains("post-norm"));
  // The online down rotation is valid everywhere, OPT's ReLU MLP included.
  const at::Tensor ids = at::randint(0, spec.vocab, {1, 16}, at::kLong);
  const at::Tensor ref = opt.forward(ids);
  std::vector<LayerWeights> rot;
  for (int64_t i = 0; i < opt.config().n_layers; ++i) {
    rot.push_back(opt.load_layer(i));
    add_down_rotation(opt.config(), rot.back(), random_hadamard(spec.ffn, 4));
  }
  const ForwardContext ctx = make_forward_context(opt.config(), 0, 16);
  at::Tensor h = opt.embed(ids, 0);
  for (int64_t i = 0; i < opt.config().n_layers; ++i)
    h = decoder_layer_forward(opt.config(), rot[i], i, h, ctx, nullptr, nullptr);
  const double d_opt = rel_diff(opt.head(h), ref);
  INFO("opt with online down rotation: " << d_opt);
  CHECK(d_opt < kRelTol);
}
