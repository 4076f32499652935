// ptq outlierize: the written model computes the same logits as the original on real text, and the linear
// inputs now carry outlier channels of magnitude S times the original.
#include <catch2/catch.hpp>

#include <filesystem>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "core/file.h"
#include "model/model.h"
#include "model/synthetic.h"
#include "model/tokenizer.h"
#include "tests/test_paths.h"
#include "transforms/outlierize.h"

using namespace ptq;

namespace {

// Per layer, per-channel absmax of the q_proj input.
std::vector<at::Tensor> q_input_absmax(Model& m, const at::Tensor& ids) {
  std::vector<at::Tensor> amax(m.config().n_layers);
  LinearInputHook hook = [&](int64_t layer, LinearId id, const at::Tensor& x) {
    if (id == LinearId::Q) amax[layer] = x.abs().reshape({-1, x.size(-1)}).amax(0);
  };
  m.forward(ids, nullptr, &hook);
  return amax;
}

}  // namespace

TEST_CASE("outlierize preserves logits and plants outlier channels of magnitude S", "[outlierize]") {
  const std::string src = test::repo_path("data/models/sotu-llama-8m");  // F16 weights, GQA
  const std::string out = test::make_temp_dir("outlierize") + "/model";
  OutlierizeOptions opt;
  opt.channels = 4;
  opt.scale = 50;
  opt.seed = 3;
  const OutlierizeResult r = outlierize_model(src, out, opt);

  Model orig(src), outl(out);
  REQUIRE(r.channels.size() == size_t(orig.config().n_layers));
  CHECK(outl.config().torch_dtype == "float32");
  CHECK(file_exists(out + "/tokenizer.model"));
  auto tok = load_tokenizer(out);
  auto v = tok->encode(read_text_file(test::repo_path("data/sotu-test.txt")));
  v.resize(std::min<size_t>(v.size(), 256));
  const at::Tensor ids = at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).unsqueeze(0);

  const at::Tensor ref = orig.forward(ids), got = outl.forward(ids);
  const double rel = (got - ref).abs().max().item<double>() / ref.abs().max().item<double>();
  INFO("outlierized vs original: max |dlogit| / max |logit| = " << rel);
  // S = 50 is not a power of two, so γ·S and W/S are each rounded once (<= u = 6e-8 relative): the same
  // two-roundings-per-product argument as the folding tests (tests/transforms/test_fold.cpp, kRelTol).
  CHECK(rel < 1e-4);

  const std::vector<at::Tensor> a0 = q_input_absmax(orig, ids), a1 = q_input_absmax(outl, ids);
  for (size_t l = 0; l < a0.size(); ++l) {
    // The norm's x̂ is unchanged, so the planted channels are exactly S times larger and the others equal.
    at::Tensor ratio = a1[l] / a0[l];
    at::Tensor is_outlier = at::zeros_like(ratio, at::kBool);
    for (int64_t c : r.channels[l]) is_outlier[c] = true;
    CHECK(at::allclose(ratio.masked_select(is_outlier), at::full({4}, 50.0), 1e-4));
    CHECK(at::allclose(ratio.masked_select(~is_outlier), at::ones({a0[l].size(0) - 4}), 1e-4));
    // "Outlier": the planted channels stand far above the typical channel.
    CHECK(a1[l].masked_select(is_outlier).min().item<double>() > 5 * a1[l].median().item<double>());
  }

  // Deterministic in the seed; existing output refused without --force.
  const int64_t hidden = orig.config().hidden;
  CHECK(outlier_channels(hidden, 4, 3, 2) == r.channels[2]);
  CHECK(outlier_channels(hidden, 4, 4, 2) != r.channels[2]);
  CHECK(r.channels[1] != r.channels[2]);
  CHECK_THROWS_WITH(outlierize_model(src, out, opt), Catch::Contains("already exists"));
  opt.force = true;
  CHECK_NOTHROW(outlierize_model(src, out, opt));
  CHECK_THROWS_WITH(outlierize_model(src, src, opt), Catch::Contains("is the input"));
}

TEST_CASE("outlierize on a LayerNorm model scales β too", "[outlierize]") {
  SyntheticSpec spec;
  spec.arch = Arch::Opt;
  spec.dtype = DType::F16;
  const std::string dir = test::make_temp_dir("outlierize-opt");
  write_synthetic_model(spec, dir + "/src");
  OutlierizeOptions opt;
  opt.scale = 30;
  outlierize_model(dir + "/src", dir + "/out", opt);
  Model a(dir + "/src"), b(dir + "/out");
  at::manual_seed(0);
  const at::Tensor ids = at::randint(0, spec.vocab, {2, 40}, at::kLong);
  const at::Tensor ref = a.forward(ids);
  CHECK((b.forward(ids) - ref).abs().max().item<double>() / ref.abs().max().item<double>() < 1e-4);
  spec.opt_pre_norm = false;
  write_synthetic_model(spec, dir + "/post");
  CHECK_THROWS_WITH(outlierize_model(dir + "/post", dir + "/post-out", opt), Catch::Contains("post-norm"));
  CHECK_FALSE(std::filesystem::exists(dir + "/post-out"));
}
