// DecoderRunner (lib/runtime/decoder_runner.h) on the CPU reference backend against the LibTorch forward of the
// packed runner with the same f16 KV cache: the orchestration `--device cuda` runs (every op a backend call), checked
// where no GPU is. The CUDA backend's ops are checked against the same references in tests/kernels.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <utility>

#include <ATen/ATen.h>

#include "core/file.h"
#include "eval/perplexity.h"
#include "kernels/backend.h"
#include "kernels/cuda/device.h"
#include "model/hadamard.h"
#include "model/tokenizer.h"
#include "quant/act_linear.h"
#include "pipeline/quantize.h"
#include "pipeline/recipe.h"
#include "runtime/decoder_runner.h"
#include "runtime/open_model.h"
#include "tests/test_model.h"
#include "transforms/rotate.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

const char* kSotu = "data/models/sotu-llama-8m";   // F16, hidden 256, 6 layers, 8 heads / 4 kv heads
const char* kStories = "data/models/stories260K";  // F32, hidden 64, 5 layers

std::unique_ptr<Model> open_packed(const std::string& dir, KvCacheType kv = KvCacheType::F16) {
  RunOptions o;
  o.kv_cache = kv;
  return open_model_for_run(dir, o);
}

std::unique_ptr<Model> open_on_reference_backend(const std::string& dir,
                                                 int64_t max_rows = DecoderRunner::kMaxRows) {
  auto m = open_packed(dir);
  m->set_forward_runner(std::make_shared<DecoderRunner>(*m, kernels::cpu_reference_backend(), max_rows));
  return m;
}

at::Tensor seeded_ids(int64_t vocab, int64_t batch, int64_t tokens, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  return at::randint(3, vocab, {batch, tokens}, g, at::kLong);
}

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

// Both sides run the same linear kernels on the same weights and round keys and values to fp16 the same way; they
// differ in the norms (double vs fp32 sums), RoPE's angles (double vs fp32 tables) and attention (double vs fp32
// matmuls): each a few fp32 ulps of the activations (~1e-7 relative), carried through 5-6 layers and the head. A key
// or value on the other side of an fp16 rounding boundary moves by 2^-11 of itself, so the bound leaves room for a
// few of those. Measured on these models and grids: 1.7e-6 .. 6.3e-5 of the logits' scale (the largest on stories260K,
// hidden 64, where one flipped value weighs most); 2e-4 leaves 3x margin and fails on a wrong position, head or mask,
// which move logits by O(1).
constexpr double kTol = 2e-4;

void check_runner(const std::string& dir, int64_t vocab, int64_t max_rows = DecoderRunner::kMaxRows) {
  auto ref = open_packed(dir), run = open_on_reference_backend(dir, max_rows);
  const at::Tensor ids = seeded_ids(vocab, 2, 37, 3);
  // The LibTorch forward through an f16 cache too (without one it attends over unrounded fp32 keys and values).
  auto ref_cache = ref->new_cache(2, 37);
  const at::Tensor a = run->forward(ids), b = ref->forward(ids, &ref_cache);
  REQUIRE(a.sizes() == b.sizes());
  INFO(dir << ": full forward, max rel logit diff " << rel_diff(a, b));
  CHECK(rel_diff(a, b) < kTol);
  // A prompt, then single tokens through the runner's cache, against the full forward.
  auto cache = run->new_cache(1, 40);
  CHECK(cache.bytes() == cache.device_bytes);
  CHECK(cache.device_bytes == 2 * run->config().n_layers * run->config().n_kv_heads * 40 * run->config().head_dim * 2);
  const at::Tensor one = ids.narrow(0, 0, 1);
  std::vector<at::Tensor> parts = {run->forward_last(one.narrow(1, 0, 30), &cache)};
  CHECK(cache.length == 30);
  for (int64_t t = 30; t < 37; ++t) parts.push_back(run->forward(one.narrow(1, t, 1), &cache));
  const at::Tensor inc = at::cat(parts, 1), want = b.narrow(0, 0, 1).narrow(1, 29, 8);
  INFO("incremental vs full forward: " << rel_diff(inc, want));
  CHECK(rel_diff(inc, want) < kTol);
  CHECK(cache.length == 37);
}

// The first 20000 characters of sotu-test.txt as sotu-llama-8m's tokens, and 3 windows of 128 for their perplexity.
std::vector<int32_t> sotu_ids() {
  return load_tokenizer(test::repo_path(kSotu))
      ->encode(read_text_file(test::repo_path("data/sotu-test.txt")).substr(0, 20000));
}
PerplexityOptions three_windows() {
  PerplexityOptions po;
  po.seqlen = 128;
  po.max_windows = 3;
  return po;
}

// sotu-llama-8m quantized with a bundled recipe (or `r` as given) on a little calibration data, into `out`.
std::string quantize_sotu(Recipe r, const std::string& out, int64_t nsamples) {
  r.calibration.nsamples = nsamples;
  r.calibration.seqlen = 64;
  r.calibration.files = {test::repo_path("data/sotu-test.txt")};
  Model model(test::repo_path(kSotu));
  QuantizeOptions o;
  o.recipe = r;
  o.out_dir = out;
  quantize_model(model, o);
  return out;
}
Recipe bundled(const std::string& name) { return load_recipe(test::repo_path("configs/" + name + ".yaml")); }

}  // namespace

TEST_CASE("decoder runner (CPU reference backend) equals the packed LibTorch forward: FP checkpoints", "[runtime]") {
  check_runner(test::repo_path(kSotu), 8000);  // a batch's two sequences in one pass
  check_runner(test::repo_path(kStories), 512);
  check_runner(test::repo_path(kSotu), 8000, 40);  // one sequence per pass (37 tokens each, at most 40 rows)
  {
    // Five sequences of 8 tokens, at most 16 rows a pass (chunks of 2, 2, 1), then decode steps of all five at once.
    auto ref = open_packed(test::repo_path(kSotu)), run = open_on_reference_backend(test::repo_path(kSotu), 16);
    const at::Tensor ids = seeded_ids(8000, 5, 11, 6);
    auto ref_cache = ref->new_cache(5, 11), cache = run->new_cache(5, 11);
    const at::Tensor want = ref->forward(ids, &ref_cache);
    std::vector<at::Tensor> parts = {run->forward(ids.narrow(1, 0, 8), &cache)};
    for (int64_t t = 8; t < 11; ++t) parts.push_back(run->forward(ids.narrow(1, t, 1), &cache));
    const at::Tensor got = at::cat(parts, 1);
    INFO("chunked batch vs LibTorch forward: " << rel_diff(got, want));
    CHECK(rel_diff(got, want) < kTol);
    CHECK(cache.length == 11);
  }
  auto run = open_on_reference_backend(test::repo_path(kSotu));
  auto packed = open_packed(test::repo_path(kSotu));
  CHECK(run->packed_weight_bytes() == packed->packed_weight_bytes());
  CHECK(std::string(run->forward_runner()->device()) == "cpu-reference");
}

TEST_CASE("decoder runner (CPU reference backend): quantized checkpoints, logits and perplexity", "[runtime]") {
  const std::string dir = test::make_temp_dir("decoder-runner-q");
  const auto ids = sotu_ids();
  const PerplexityOptions po = three_windows();
  for (auto [bits, group, sym] : {std::tuple<int, int64_t, bool>{4, 32, true}, {4, 128, false}, {8, -1, true}}) {
    const std::string out = test::quantize_rtn(kSotu, dir + "/w" + std::to_string(bits) + "g" + std::to_string(group),
                                               bits, group, sym);
    INFO("w" << bits << " g" << group);
    check_runner(out, 8000);
    auto ref = open_packed(out), run = open_on_reference_backend(out);
    const double pa = evaluate_perplexity(*run, ids, po).ppl, pb = evaluate_perplexity(*ref, ids, po).ppl;
    INFO("ppl runner " << pa << " packed " << pb);
    // Mean NLL moves by at most the logit noise above (1e-4 relative): the ppl ratio within 1e-3.
    CHECK(std::abs(pa / pb - 1) < 1e-3);
  }
}

TEST_CASE("decoder runner (CPU reference backend): activation-quantized checkpoints on the integer path",
          "[runtime][activation]") {
  const std::string dir = test::make_temp_dir("decoder-runner-act");
  const auto ids = sotu_ids();
  const PerplexityOptions po = three_windows();
  std::vector<std::pair<std::string, Recipe>> recipes;  // every activation recipe in configs/, and variants
  for (const char* name : {"w8a8-rtn-static", "w8a8-smoothquant", "w4a8-rtn-static", "w4a8-fptq", "w4a4-rtn-static",
                           "w4a4-rtn-dynamic", "w8a8-outliertune", "w6a6-outliertune", "w4a4-mergequant"})
    recipes.emplace_back(name, bundled(name));
  Recipe quarot = bundled("w4a4-rtn-dynamic");  // QuaRot-style: rotated residual stream, online Hadamard before down
  quarot.rotation.enabled = true;
  recipes.emplace_back("w4a4-rtn-dynamic-hadamard", quarot);
  Recipe step_split = bundled("w4a4-mergequant");  // the paper's split rule, a lower threshold: splits at the norms
  step_split.migration.split_on = "step";
  step_split.migration.tau = 2;
  recipes.emplace_back("w4a4-mergequant-step", step_split);
  bool norm_split = false, ffn_split = false;  // MergeQuant's splits: a norm's index, a wider MLP (up rows, down columns)
  for (const auto& [recipe, r] : recipes) {
    const std::string out = quantize_sotu(r, dir + "/" + recipe, 4);
    auto ref = open_packed(out), run = open_on_reference_backend(out);
    if (recipe.find("outliertune") != std::string::npos)  // its shift is folded into the norms' bias
      REQUIRE(ref->layer(0).attn_norm.bias.defined());
    if (recipe.find("mergequant") != std::string::npos) {
      bool split = false;
      for (int64_t i = 0; i < ref->config().n_layers; ++i) {
        const bool at_norm = ref->layer(i).attn_norm.index.defined() || ref->layer(i).mlp_norm.index.defined();
        const bool in_mlp = ref->layer(i)[LinearId::Down].in_features() != ref->config().ffn;
        norm_split = norm_split || at_norm;
        ffn_split = ffn_split || in_mlp;
        split = split || at_norm || in_mlp;
      }
      REQUIRE(split);
    }
    if (recipe == "w4a4-rtn-dynamic-hadamard") REQUIRE(ref->layer(0).down_hadamard != nullptr);
    // Module by module, the backend's integer path equals ActQuantLinear::forward (the CPU runner's) bit for bit on
    // the same input: the same codes, the same exact group sums, the same epilogue.
    auto fresh = open_packed(out);
    at::manual_seed(7);
    for (int64_t layer : {int64_t(0), fresh->config().n_layers - 1}) {
      const LayerWeights& w = fresh->layer(layer);
      for (int j = 0; j < kNumLinear; ++j) {
        const auto* act = dynamic_cast<const ActQuantLinear*>(w.linear[j].kernel.get());
        REQUIRE(act != nullptr);  // the modules really are activation-quantized
        REQUIRE(act->device_unsupported().empty());
        const at::Tensor xm = at::randn({5, act->in_features()}) * 3;
        const at::Tensor want = act->forward(xm);
        auto backend = kernels::cpu_reference_backend();
        const ActQuantLinear::DeviceView v = act->device_view();
        const auto uploaded = backend->upload(v.view);
        at::Tensor got = at::empty({5, act->out_features()});
        backend->act_linear(*uploaded, xm.data_ptr<float>(), 5, got.data_ptr<float>());
        INFO(recipe << " layer " << layer << " module " << j);
        CHECK(got.equal(want));
      }
    }
    const at::Tensor x = seeded_ids(8000, 2, 37, 4);
    auto ref_cache = ref->new_cache(2, 37);
    const at::Tensor a = run->forward(x), b = ref->forward(x, &ref_cache);
    const double pa = evaluate_perplexity(*run, ids, po).ppl, pb = evaluate_perplexity(*ref, ids, po).ppl;
    INFO(recipe << ": max rel logit diff " << rel_diff(a, b) << ", ppl runner " << pa << " packed " << pb);
    // End to end the inputs of each module differ by the float noise of kTol's comment (the runner's norms sum in
    // double, the CPU forward's in fp32), and a code whose input lies that close to a rounding boundary flips: its
    // module's output moves by one activation step (1/127 of the range for 8-bit codes, 1/7 for 4-bit) times a weight
    // row, and every later position reads the changed keys and values. Measured: logits within 4e-7 (W8A8; MergeQuant
    // with its splits; the online Hadamard: 1.0e-6) to 6.2e-3 (FPTQ W4A8) of their scale (OutlierTune, its shift in
    // the norms' bias: 1.0e-3), a bound about 5x that; a wrong position, head, mask or split index moves logits by
    // O(1). Perplexity over three 128-token windows ratios 0.9942 (W4A4 static RTN; MergeQuant 0.9961: flips in 4-bit
    // static codes, none in MergeQuant's first window; from a flip on, that window's later tokens differ) to 1.0019
    // (the online Hadamard), within 1e-2.
    CHECK(rel_diff(a, b) < 3e-2);
    CHECK(std::abs(pa / pb - 1) < 1e-2);
  }
  CHECK(norm_split);  // both kinds of split ran through the runner
  CHECK(ffn_split);
}

TEST_CASE("decoder runner: a dense online rotation before down_proj (composed in memory by a transform)", "[runtime]") {
  // Every layer gets W_down ← W_down · R and the online rotation R (add_down_rotation), as a QuaRot-style recipe does
  // in memory before it stores R's seed: the rotated model computes the same function (R orthogonal), the runner
  // runs R as a linear op with weights Rᵀ. Fp32 weights (the reference opening), so R is not rounded on either side.
  RunOptions o;
  o.reference = true;
  o.kv_cache = KvCacheType::F16;
  const std::string dir = test::repo_path(kSotu);
  auto plain = open_model_for_run(dir, o), ref = open_model_for_run(dir, o), run = open_model_for_run(dir, o);
  int rotated = 0;
  auto rotate = [&rotated, cfg = plain->config()](int64_t i, LayerWeights& w) {
    add_down_rotation(cfg, w, random_hadamard(w[LinearId::Down].in_features(), 40 + uint64_t(i)));
    ++rotated;
  };
  ref->set_layer_finisher(rotate);
  run->set_layer_finisher(rotate);
  run->set_forward_runner(std::make_shared<DecoderRunner>(*run, kernels::cpu_reference_backend()));
  REQUIRE(rotated == run->config().n_layers);
  const at::Tensor ids = seeded_ids(8000, 2, 37, 5);
  auto ref_cache = ref->new_cache(2, 37), plain_cache = plain->new_cache(2, 37);
  const at::Tensor a = run->forward(ids), b = ref->forward(ids, &ref_cache), c = plain->forward(ids, &plain_cache);
  REQUIRE(ref->layer(0).down_rotation.defined());
  INFO("runner vs rotated forward " << rel_diff(a, b) << ", rotated vs plain forward " << rel_diff(b, c));
  // The float noise of kTol's comment (measured 1.6e-5); a missing or transposed R moves logits by O(1).
  CHECK(rel_diff(a, b) < kTol);
  // The invariant: the rotation leaves the function unchanged up to fp32 rounding of the products (measured 4.8e-6),
  // within the same bound.
  CHECK(rel_diff(b, c) < kTol);
}

namespace {

// A backend that runs the CPU reference's ops but keeps going past an activation input it cannot code, as the CUDA
// backend's kernels must (codes 0, the record set): the runner's deferred refusal, checked on the host.
class DeferringBackend final : public kernels::Backend {
 public:
  std::unique_ptr<kernels::Backend> in = kernels::cpu_reference_backend();
  bool nonfinite = false;
  const char* name() const override { return "deferring"; }
  std::shared_ptr<void> alloc(size_t bytes) override { return in->alloc(bytes); }
  void to_device(void* d, const void* s, size_t b) override { in->to_device(d, s, b); }
  void to_host(void* d, const void* s, size_t b) override { in->to_host(d, s, b); }
  void synchronize() override { in->synchronize(); }
  std::unique_ptr<Weights> upload(const kernels::PackedWeights& w) override { return in->upload(w); }
  std::unique_ptr<Weights> upload(const ActLinearWeights& w) override { return in->upload(w); }
  std::unique_ptr<Weights> upload(const kernels::HadamardFactors& f) override { return in->upload(f); }
  void linear(const Weights& w, const float* x, int64_t m, float* y, const float* bias) override {
    in->linear(w, x, m, y, bias);
  }
  void act_linear(const Weights& w, const float* x, int64_t m, float* y) override {
    try {
      in->act_linear(w, x, m, y);
    } catch (const std::invalid_argument&) {  // act_codes_ref's refusal
      nonfinite = true;
    }
  }
  bool take_nonfinite_act_input() override { return std::exchange(nonfinite, false); }
  void rms_norm(const float* x, int64_t m, int64_t d, const float* g, const float* b, float eps,
                const kernels::NormSplit& s, float* y) override {
    in->rms_norm(x, m, d, g, b, eps, s, y);
  }
  void hadamard(const Weights& f, float* x, int64_t rows) override { in->hadamard(f, x, rows); }
  void rope(float* x, int64_t m, int64_t heads, int64_t hd, const int64_t* pos, double theta) override {
    in->rope(x, m, heads, hd, pos, theta);
  }
  void kv_append(const kernels::AttentionDims& a, const float* k, const float* v, int64_t m, int64_t past, uint16_t* kc,
                 uint16_t* vc) override {
    in->kv_append(a, k, v, m, past, kc, vc);
  }
  void attention(const kernels::AttentionDims& a, const float* q, int64_t m, int64_t past, const uint16_t* kc,
                 const uint16_t* vc, float* out) override {
    in->attention(a, q, m, past, kc, vc, out);
  }
  void swiglu(const float* g, const float* u, int64_t n, float* out) override { in->swiglu(g, u, n, out); }
  void add(float* y, const float* x, int64_t n) override { in->add(y, x, n); }
};

}  // namespace

TEST_CASE("decoder runner refuses an activation input the CPU path refuses, after the forward", "[runtime]") {
  const std::string out = quantize_sotu(bundled("w8a8-rtn-static"), test::make_temp_dir("decoder-runner-nan") + "/q", 2);
  const at::Tensor ids = seeded_ids(8000, 1, 6, 8);
  auto cpu = open_packed(out), dev = open_packed(out);
  for (Model* m : {cpu.get(), dev.get()})  // layer 1's attention norm damaged: q/k/v_proj's inputs hold a NaN column
    m->layer(1).attn_norm.weight.narrow(0, 3, 1).fill_(std::numeric_limits<float>::quiet_NaN());
  REQUIRE_THROWS_WITH(cpu->forward(ids), Catch::Contains("NaN or Inf"));
  dev->set_forward_runner(std::make_shared<DecoderRunner>(*dev, std::make_unique<DeferringBackend>()));
  REQUIRE_THROWS_WITH(dev->forward(ids), Catch::Contains("deferring") && Catch::Contains("held NaN or Inf"));
  // The record is cleared: a clean model through the same kind of backend runs.
  auto clean = open_packed(out);
  clean->set_forward_runner(std::make_shared<DecoderRunner>(*clean, std::make_unique<DeferringBackend>()));
  CHECK(at::isfinite(clean->forward(ids)).all().item<bool>());
}

TEST_CASE("decoder runner refuses what it does not run, naming it", "[runtime]") {
  auto int8 = open_packed(test::repo_path(kSotu), KvCacheType::Int8);
  REQUIRE_THROWS_WITH(DecoderRunner(*int8, kernels::cpu_reference_backend()),
                      Catch::Contains("f16 KV cache") && Catch::Contains("--kv-cache int8"));
  auto run = open_on_reference_backend(test::repo_path(kSotu));
  const LinearInputHook hook = [](int64_t, LinearId, const at::Tensor&) {};
  REQUIRE_THROWS_WITH(run->forward(seeded_ids(8000, 1, 4, 1), nullptr, &hook), Catch::Contains("calibration hooks"));
  auto plain = open_packed(test::repo_path(kSotu));
  KVCache cpu_cache = plain->new_cache(1, 8);
  REQUIRE_THROWS_WITH(run->forward(seeded_ids(8000, 1, 4, 1), &cpu_cache), Catch::Contains("not made by"));
  auto c = run->new_cache(1, 4);
  REQUIRE_THROWS_WITH(run->forward(seeded_ids(8000, 1, 5, 1), &c), Catch::Contains("do not fit"));
  // Activation codes beyond a signed byte (asymmetric 8-bit) have no byte path: refused by module, with the reason.
  Recipe r = bundled("w8a8-rtn-static");
  r.activations.sym = false;
  auto asym = open_packed(quantize_sotu(r, test::make_temp_dir("decoder-runner-refuse") + "/a8asym", 2));
  REQUIRE_THROWS_WITH(DecoderRunner(*asym, kernels::cpu_reference_backend()),
                      Catch::Contains("layer 0") && Catch::Contains("asymmetric 8-bit activation codes"));
}

TEST_CASE("the CUDA backend says why it cannot start where there is no device", "[runtime]") {
  if (kernels::cuda::device_count() > 0) {
    SUCCEED("a CUDA device is present");
    return;
  }
  REQUIRE_THROWS_AS(kernels::cuda_backend(), kernels::cuda::Error);
  REQUIRE_THROWS_WITH(kernels::cuda_backend(), Catch::Contains("no CUDA device"));
}
