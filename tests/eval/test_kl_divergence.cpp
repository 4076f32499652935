// KL divergence against a reference model (eval/kl_divergence.h, evaluate_perplexity's kl_reference): a scalar
// re-computation of the definition, the exact zero of a model against itself, and KL >= 0 on a quantized model.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include "calibration/stats.h"
#include "core/file.h"
#include "eval/kl_divergence.h"
#include "eval/kl_sensitivity.h"
#include "eval/perplexity.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "pipeline/allocate.h"
#include "pipeline/recipe.h"
#include "runtime/open_model.h"
#include "tests/test_model.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

// Σ_rows Σ_v p_ref (log p_ref − log p) from the definition, with std::exp / std::log in long double.
double kl_scalar(const at::Tensor& ref_logits, const at::Tensor& logits) {
  const at::Tensor a = ref_logits.reshape({-1, ref_logits.size(-1)}).to(at::kDouble).contiguous();
  const at::Tensor b = logits.reshape({-1, logits.size(-1)}).to(at::kDouble).contiguous();
  const int64_t rows = a.size(0), vocab = a.size(1);
  const double* pa = a.data_ptr<double>();
  const double* pb = b.data_ptr<double>();
  long double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const double* x = pa + r * vocab;
    const double* y = pb + r * vocab;
    long double za = 0, zb = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      za += std::exp(static_cast<long double>(x[v]));
      zb += std::exp(static_cast<long double>(y[v]));
    }
    for (int64_t v = 0; v < vocab; ++v) {
      const long double p = std::exp(static_cast<long double>(x[v])) / za;
      const long double q = std::exp(static_cast<long double>(y[v])) / zb;
      total += p * std::log(p / q);
    }
  }
  return static_cast<double>(total);
}

std::vector<int32_t> stories_ids() {
  return load_tokenizer(test::repo_path("data/models/stories260K"))
      ->encode(read_text_file(test::repo_path("data/tinystories-valid.txt")));
}

}  // namespace

TEST_CASE("KL divergence of a hand-made case equals the definition", "[kl]") {
  // Two rows over a vocabulary of 3. Row 0 by hand: p = softmax(0, 1, 2) = (0.0900306, 0.2447285, 0.6652410),
  // q = softmax(2, 1, 0) = reversed p, KL = Σ p log(p/q) = 0.0900306·(−2) + 0 + 0.6652410·2 = 1.1504208.
  const at::Tensor ref = at::tensor({0.0, 1.0, 2.0, 5.0, -3.0, 0.5}, at::kDouble).reshape({2, 3});
  const at::Tensor q = at::tensor({2.0, 1.0, 0.0, 4.0, -1.0, 0.0}, at::kDouble).reshape({2, 3});
  // Both are fp64 computations of the same sums over 3 terms: 1e-12 covers their different operation order.
  CHECK(kl_divergence_sum(ref.narrow(0, 0, 1), q.narrow(0, 0, 1)) == Approx(1.1504208).margin(1e-7));  // 7 digits above
  CHECK(kl_divergence_sum(ref, q) == Approx(kl_scalar(ref, q)).epsilon(1e-12));
  // fp32 input is converted, not computed in fp32: the same value as from the fp64 copy of the fp32 values.
  const at::Tensor ref32 = ref.to(at::kFloat), q32 = q.to(at::kFloat);
  CHECK(kl_divergence_sum(ref32, q32) == Approx(kl_scalar(ref32, q32)).epsilon(1e-12));
  // Not symmetric, and zero only for equal distributions (logits equal up to a per-row constant).
  CHECK(kl_divergence_sum(q, ref) != Approx(kl_divergence_sum(ref, q)));
  CHECK(kl_divergence_sum(ref, ref + 7.0) == Approx(0).margin(1e-12));  // a shift changes no probability
  CHECK_THROWS_WITH(kl_divergence_sum(ref, q.narrow(1, 0, 2)), Catch::Contains("share the vocabulary"));
  at::Tensor bad = q.clone();
  bad[1][1] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(kl_divergence_sum(ref, bad), Catch::Contains("not finite"));
}

TEST_CASE("KL divergence over a vocabulary of thousands in row chunks equals the definition", "[kl]") {
  // 700 rows x 5000: more rows than one chunk (2^21 / 5000 = 419), so the chunked loop is covered.
  at::manual_seed(3);
  const at::Tensor ref = at::randn({7, 100, 5000}) * 3.0;
  const at::Tensor q = ref + at::randn({7, 100, 5000}) * 0.1;
  // fp64 vs long double on 3.5M terms: each term's relative error is ~1e-15, the KL (~3.5 per 700 rows) is a sum of
  // mostly positive terms; 1e-9 relative leaves a wide margin.
  CHECK(kl_divergence_sum(ref, q) == Approx(kl_scalar(ref, q)).epsilon(1e-9));
}

TEST_CASE("a model's KL against itself is exactly 0 and its reference perplexity is its own", "[kl]") {
  Model model(test::repo_path("data/models/stories260K"));
  Model same(test::repo_path("data/models/stories260K"));  // a second instance: the same deterministic forward
  PerplexityOptions o;
  o.seqlen = 128;
  o.max_windows = 6;
  o.batch = 4;
  const PerplexityResult r = evaluate_perplexity(model, stories_ids(), o, "ppl", &same);
  CHECK(r.has_reference);
  CHECK(r.mean_kl == 0.0);  // exact: every term is p · (log p − log p)
  CHECK(r.reference_ppl == r.ppl);
  CHECK(r.ppl == evaluate_perplexity(model, stories_ids(), o).ppl);  // the reference changes nothing of the ppl
}

TEST_CASE("KL of a quantized model against FP is positive and equals the definition on its logits", "[kl]") {
  // w4g32 (hidden 64: group 128 would leave every module FP).
  const std::string q_dir = test::quantize_rtn("data/models/stories260K", test::make_temp_dir("kl-rtn") + "/q", 4, 32, true);
  Model fp(test::repo_path("data/models/stories260K"));
  std::unique_ptr<Model> q = open_model(q_dir);
  PerplexityOptions o;
  o.seqlen = 64;
  o.max_windows = 3;
  o.batch = 2;  // two batches: the sums run over batches
  const std::vector<int32_t> ids = stories_ids();
  const PerplexityResult r = evaluate_perplexity(*q, ids, o, "ppl", &fp);
  CHECK(r.mean_kl > 0);
  CHECK(r.reference_ppl == Approx(evaluate_perplexity(fp, ids, o).ppl).epsilon(1e-12));  // same forward, same sums
  // Independent: both models' full logits on the same 3 windows, the scalar definition over the 63 scored positions.
  at::Tensor x = at::empty({3, 64}, at::kLong);
  for (int64_t i = 0; i < 3 * 64; ++i) x.data_ptr<int64_t>()[i] = ids[i];
  at::NoGradGuard ng;
  const double expect = kl_scalar(fp.forward(x).narrow(1, 0, 63), q->forward(x).narrow(1, 0, 63)) / (3 * 63);
  // The same fp32 logits (the batch split into 2+1 windows instead of 3 changes only BLAS blocking, ~1e-6
  // relative in a logit) and fp64 sums: 1e-4 relative covers a KL that is a difference of nearby log-probabilities.
  CHECK(r.mean_kl == Approx(expect).epsilon(1e-4));
}

TEST_CASE("KL refuses a reference with another vocabulary, naming both models", "[kl]") {
  Model model(test::repo_path("data/models/stories260K"));
  Model other(test::repo_path("data/models/sotu-llama-8m"));
  PerplexityOptions o;
  o.seqlen = 32;
  o.max_windows = 1;
  CHECK_THROWS_WITH(evaluate_perplexity(model, stories_ids(), o, "ppl", &other),
                    Catch::Contains("sotu-llama-8m") && Catch::Contains("stories260K") &&
                        Catch::Contains("8000") && Catch::Contains("512"));
}

TEST_CASE("kl sensitivity: a unit's KL equals a full forward of the model with that unit alone quantized", "[kl][allocate]") {
  const std::string dir = test::repo_path("data/models/sotu-llama-8m");
  Model model(dir);
  const Recipe recipe = load_recipe(test::repo_path("configs/w4a16-rtn.yaml"));
  AllocationOptions o;
  o.metric = "kl";
  add_candidates({"w2g128", "w8g128"}, false, o, "--candidates");
  SensitivityTable t = plan_sensitivity_table(model, recipe, merged_allocation_options(o, recipe));
  REQUIRE(t.units.size() == 42);
  const std::vector<int32_t> ids = load_tokenizer(dir)->encode(read_text_file(test::repo_path("data/sotu-test.txt")));
  std::vector<std::vector<int32_t>> windows;
  for (int w = 0; w < 4; ++w) windows.emplace_back(ids.begin() + w * 32, ids.begin() + (w + 1) * 32);
  measure_kl_sensitivities(model, recipe, windows, t, 3);  // batches of 3 + 1
  CHECK(t.flavor == "4 windows x 32 tokens");
  for (const SensitivityUnit& u : t.units) {
    CAPTURE(u.name, u.error[0], u.error[1]);
    REQUIRE(u.error.size() == 2);
    CHECK(u.error[1] >= 0);
    CHECK(u.error[1] < u.error[0]);  // 8 bits move the distribution less than 2 bits, on every module
  }
  // Independent: the whole model run from the embedding (no cached hidden states) with that module's RTN weight, against
  // the FP model run whole, on the same 4 windows at once.
  const SensitivityUnit& u = t.units[17];
  const SensitivityModule& m = u.modules[0];
  Model fp(dir);
  std::vector<LayerWeights> layers;
  for (int64_t i = 0; i < fp.config().n_layers; ++i) layers.push_back(fp.layer(i));
  Linear& lin = layers[m.layer][static_cast<LinearId>(m.linear)];
  lin.weight = rtn_candidate_weight(lin.weight, "w2g128", recipe, m.module, at::Tensor());
  at::Tensor x = at::empty({4, 32}, at::kLong);
  for (int64_t i = 0; i < 4 * 32; ++i) x.data_ptr<int64_t>()[i] = ids[i];
  at::NoGradGuard ng;
  const double expect =
      kl_divergence_sum(fp.forward(x).narrow(1, 0, 31), test::logits_with(fp, layers, x).narrow(1, 0, 31)) / (4 * 31);
  // The same fp32 layers in other batch splits (BLAS blocking: ~1e-6 relative in a logit); the KL (~1e-2) is a
  // difference of log-probabilities, so 1e-3 relative.
  CHECK(u.error[0] == Approx(expect).epsilon(1e-3));
}

TEST_CASE("rtn-kl sensitivity: rtn's errors scaled per unit to the KL measured on the median candidate", "[kl][allocate]") {
  const std::string dir = test::repo_path("data/models/sotu-llama-8m");
  Model model(dir);
  const CalibrationStats stats = test::hessian_stats(model);
  const Recipe recipe = load_recipe(test::repo_path("configs/w4a16-rtn.yaml"));
  const std::vector<int32_t> ids = load_tokenizer(dir)->encode(read_text_file(test::repo_path("data/sotu-test.txt")));
  const std::vector<std::vector<int32_t>> windows = {{ids.begin(), ids.begin() + 32}, {ids.begin() + 32, ids.begin() + 64}};
  AllocationOptions o;
  o.metric = "rtn-kl";
  o.target_bpw = 4.0;
  SensitivityTable probes = plan_sensitivity_table(model, recipe, merged_allocation_options(o, recipe));
  measure_kl_sensitivities(model, recipe, windows, probes, 2);
  // The default candidates 2, 3, 4, 5, 6, 8 bits at g128: the lower median of six sizes is the third, 4 bits.
  AllocationOptions on_w4;
  on_w4.metric = "kl";
  add_candidates({"w4g128"}, false, on_w4, "--candidates");
  SensitivityTable kl = plan_sensitivity_table(model, recipe, merged_allocation_options(on_w4, recipe));
  measure_kl_sensitivities(model, recipe, windows, kl, 2);
  REQUIRE(probes.units.size() == kl.units.size());
  for (size_t u = 0; u < probes.units.size(); ++u) {
    CAPTURE(probes.units[u].name);
    CHECK(probes.units[u].error.empty());
    REQUIRE(probes.units[u].probe_grid >= 0);
    CHECK(probes.units[u].grids[probes.units[u].probe_grid] == "w4g128");
    CHECK(probes.units[u].probe_kl == kl.units[u].error[0]);  // the same forward on the same windows: bit for bit
  }

  // Without the measured probes the allocator refuses (they come from the running model, above its layer).
  CHECK_THROWS_WITH(allocate_grids(model, recipe, stats, o), Catch::Contains("rtn-kl"));
  o.given = probes;
  o.save_sensitivity = test::make_temp_dir("rtn-kl") + "/s.json";
  const AllocationReport scaled = allocate_grids(model, recipe, stats, o);
  AllocationOptions plain;
  plain.target_bpw = 4.0;
  const AllocationReport rtn = allocate_grids(model, recipe, stats, plain);
  REQUIRE(scaled.modules.size() == rtn.modules.size());
  for (size_t i = 0; i < rtn.modules.size(); ++i) {
    const ModuleAllocation& a = scaled.modules[i];
    const ModuleAllocation& b = rtn.modules[i];
    const int p = probes.units[i].probe_grid;
    CAPTURE(a.module);
    // The probe's error is its KL, every other candidate's rtn's times the same factor: one product and one quotient
    // of doubles each, 1e-12 relative.
    CHECK(a.error[p] == Approx(probes.units[i].probe_kl).epsilon(1e-12));
    for (size_t k = 0; k < a.error.size(); ++k)
      CHECK(a.error[k] == Approx(b.error[k] * probes.units[i].probe_kl / b.error[p]).epsilon(1e-12));
  }
  CHECK(scaled.sensitivity == "hessian, KL on 2 windows x 32 tokens");
  // Saved with its probes; reused without stats or probes, the same allocation.
  AllocationOptions reuse;
  reuse.metric = "rtn-kl";
  reuse.target_bpw = 4.0;
  reuse.load_sensitivity = o.save_sensitivity;
  const AllocationReport reused = allocate_grids(model, recipe, CalibrationStats(), reuse);
  CHECK(reused.to_json() == scaled.to_json());
  const nlohmann::json saved = nlohmann::json::parse(read_text_file(o.save_sensitivity));
  CHECK(saved["units"][0]["probe"]["grid"] == "w4g128");
  CHECK(saved["units"][0]["probe"]["kl"].get<double>() == probes.units[0].probe_kl);
}
